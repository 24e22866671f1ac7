/**
 * API tokens: what a token is, how the token file stores it (its hash only), and how a presented token
 * is checked. The file's reading and re-reading are api-security.ts's; this file does no I/O.
 *
 * A token is `rs_<id>_<secret>`: `id` 12 hex digits (6 random bytes), public, names the token in the file
 * and in messages; `secret` 43 base64url characters (32 random bytes). The file keeps, per token, its id,
 * role, an optional name, a random 16-byte salt and SHA-256(salt || secret).
 *
 * Why SHA-256 and not scrypt: the secret is 256 random bits, not a password, so no dictionary or brute
 * force can find it from its hash; a deliberately slow KDF (scrypt's point is ~50 ms a guess) would cost
 * that on every request, or force a cache of accepted tokens in memory. The per-token salt makes two
 * entries' hashes unrelated even for the same secret, and precomputed tables useless. A check hashes the
 * presented secret with its entry's salt and compares with `timingSafeEqual` (an unknown id is compared
 * with a dummy entry, so both paths do the same work).
 *
 * File format (JSON, written by `ringstore auth add-token`, mode 0600):
 *   {"format": "ringstore-tokens", "version": 1,
 *    "tokens": [{"id", "role": "read"|"write"|"admin", "name", "salt": base64, "sha256": base64,
 *                "createdAt": ISO time}, ...],
 *    "crc32": crc32 of JSON.stringify(tokens)}
 */
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { crc32 } from "node:zlib";

export type Role = "read" | "write" | "admin";
export const ROLES: readonly Role[] = ["read", "write", "admin"];

/** What each role may do includes what the one before it may. */
export function roleAllows(have: Role, need: Role): boolean {
  return ROLES.indexOf(have) >= ROLES.indexOf(need);
}

export interface TokenEntry {
  readonly id: string;
  readonly role: Role;
  readonly name: string;
  /** Base64 of 16 random bytes. */
  readonly salt: string;
  /** Base64 of SHA-256(salt || secret). */
  readonly sha256: string;
  readonly createdAt: string;
}

const FORMAT = "ringstore-tokens";
/** A bound on the file: tokens are checked by id, but the file is read whole. */
export const MAX_TOKENS = 10_000;
export const MAX_TOKEN_FILE_BYTES = 4 * 1024 * 1024;
const ID = /^[0-9a-f]{12}$/;
const TOKEN = /^rs_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$/;
const NAME = /^[\x20-\x7e]{0,100}$/;

/** A token file that cannot be used (damaged, another format, a bad entry). */
export class TokenFileError extends Error {
  readonly code = "ERR_TOKEN_FILE";
  constructor(message: string) {
    super(message);
    this.name = "TokenFileError";
  }
}

function hashSecret(salt: Buffer, secret: string): Buffer {
  return createHash("sha256").update(salt).update(secret, "utf8").digest();
}

/** A new token (printed once) and the entry the file keeps for it. */
export function newToken(
  role: Role,
  name: string,
  createdAtMs: number,
): { readonly token: string; readonly entry: TokenEntry } {
  if (!NAME.test(name)) throw new TokenFileError("a token's name is at most 100 printable ASCII characters");
  const id = randomBytes(6).toString("hex");
  const secret = randomBytes(32).toString("base64url");
  const salt = randomBytes(16);
  return {
    token: `rs_${id}_${secret}`,
    entry: {
      id,
      role,
      name,
      salt: salt.toString("base64"),
      sha256: hashSecret(salt, secret).toString("base64"),
      createdAt: new Date(createdAtMs).toISOString(),
    },
  };
}

function checksum(tokens: readonly TokenEntry[]): number {
  return crc32(JSON.stringify(tokens));
}

export function encodeTokenFile(tokens: readonly TokenEntry[]): string {
  const list = tokens.map(({ id, role, name, salt, sha256, createdAt }) => ({
    id,
    role,
    name,
    salt,
    sha256,
    createdAt,
  }));
  return `${JSON.stringify({ format: FORMAT, version: 1, tokens: list, crc32: checksum(list) }, null, 2)}\n`;
}

function entryOf(x: unknown, i: number, file: string): TokenEntry {
  const e = x as Partial<TokenEntry> | null;
  const bad = (what: string) => new TokenFileError(`${file}: token ${i + 1}: ${what}`);
  if (e === null || typeof e !== "object") throw bad("not an object");
  if (typeof e.id !== "string" || !ID.test(e.id)) throw bad("its id is not 12 hex digits");
  if (!ROLES.includes(e.role as Role)) throw bad(`its role must be read, write or admin`);
  if (typeof e.name !== "string" || !NAME.test(e.name)) throw bad("bad name");
  if (typeof e.salt !== "string" || Buffer.from(e.salt, "base64").length !== 16) throw bad("bad salt");
  if (typeof e.sha256 !== "string" || Buffer.from(e.sha256, "base64").length !== 32) throw bad("bad hash");
  if (typeof e.createdAt !== "string") throw bad("bad createdAt");
  return {
    id: e.id,
    role: e.role as Role,
    name: e.name,
    salt: e.salt,
    sha256: e.sha256,
    createdAt: e.createdAt,
  };
}

/** The entries of a token file's text (`file` names it in errors). */
export function decodeTokenFile(text: string, file: string): TokenEntry[] {
  let j: { format?: unknown; version?: unknown; tokens?: unknown; crc32?: unknown };
  try {
    j = JSON.parse(text);
  } catch {
    throw new TokenFileError(`${file} is not valid JSON: the token file is damaged`);
  }
  if (j === null || typeof j !== "object" || j.format !== FORMAT)
    throw new TokenFileError(
      `${file} is not a ringstore token file (make one with ringstore auth add-token)`,
    );
  if (j.version !== 1)
    throw new TokenFileError(`${file}: token file version ${String(j.version)} is unknown`);
  if (!Array.isArray(j.tokens)) throw new TokenFileError(`${file}: "tokens" is not a list`);
  if (j.tokens.length > MAX_TOKENS) throw new TokenFileError(`${file}: more than ${MAX_TOKENS} tokens`);
  if (j.crc32 !== checksum(j.tokens as TokenEntry[]))
    throw new TokenFileError(
      `${file}: checksum mismatch: the token file is damaged or was edited by hand (use ringstore auth)`,
    );
  const out = j.tokens.map((x, i) => entryOf(x, i, file));
  const ids = new Set<string>();
  for (const e of out) {
    if (ids.has(e.id)) throw new TokenFileError(`${file}: token id ${e.id} appears twice`);
    ids.add(e.id);
  }
  return out;
}

/** What a presented token is: its id and role, or not a valid token. */
export type TokenCheck =
  | { readonly kind: "valid"; readonly id: string; readonly role: Role }
  | { readonly kind: "invalid" };

interface Compiled {
  readonly id: string;
  readonly role: Role;
  readonly salt: Buffer;
  readonly hash: Buffer;
}

/** Compared against when the id is unknown, so that both paths cost the same. */
const DUMMY: Compiled = { id: "", role: "read", salt: Buffer.alloc(16), hash: Buffer.alloc(32) };

/** The tokens of one file, checked by id in constant time. */
export class TokenSet {
  private readonly byId: ReadonlyMap<string, Compiled>;

  constructor(entries: readonly TokenEntry[]) {
    this.byId = new Map(
      entries.map((e) => [
        e.id,
        {
          id: e.id,
          role: e.role,
          salt: Buffer.from(e.salt, "base64"),
          hash: Buffer.from(e.sha256, "base64"),
        },
      ]),
    );
  }

  get size(): number {
    return this.byId.size;
  }

  check(token: string): TokenCheck {
    const m = TOKEN.exec(token);
    const c = m === null ? undefined : this.byId.get(m[1]!);
    const against = c ?? DUMMY;
    const equal = timingSafeEqual(hashSecret(against.salt, m?.[2] ?? token), against.hash);
    return c !== undefined && equal ? { kind: "valid", id: c.id, role: c.role } : { kind: "invalid" };
  }
}

/**
 * The causal context as handed to clients (the `X-Context` header): opaque, compact, URL-safe and
 * integrity-checked.
 *
 * Token = base64url( version u8 (1) | entries varint | (actorLen varint | actor UTF-8 | counter varint)*
 *                    | mac (12 bytes) )
 * mac = the first 12 bytes of HMAC-SHA256(clusterSecret, u32 key length | key bytes | everything before
 *       the mac). The key's length is part of the input: without it, bytes could be moved from the end of
 *       a key to the front of the body, and a token read from key "AB" would pass for key "A".
 * Only the canonical base64url spelling of the bytes is accepted (no padding, no stray low bits).
 *
 * The MAC binds the context to its key: a context read from key A and sent with a write to key B is
 * refused, since dots are per key and it could otherwise supersede B's siblings it never saw. A client
 * cannot forge a context that covers versions it did not read. Tokens are validated in full before any
 * state changes; a bad token is an `InvalidContextError` (HTTP 400 `bad_context`).
 */
import { openToken, sealToken, tokenMac } from "../core/signed-token.js";
import { readVarint, varintLength, writeVarint } from "../storage/bytes.js";
import type { Actor, VersionVector } from "./dvv.js";

const TOKEN_VERSION = 1;
/** Tokens longer than this are refused before decoding (a vector of ~100 actors fits easily). */
export const MAX_CONTEXT_TOKEN_CHARS = 8192;

export class InvalidContextError extends Error {
  readonly code = "bad_context";
  constructor(message: string) {
    super(message);
    this.name = "InvalidContextError";
  }
}

function mac(secret: Uint8Array, key: Uint8Array, body: Uint8Array): Buffer {
  const len = Buffer.allocUnsafe(4);
  len.writeUInt32BE(key.length, 0);
  return tokenMac(secret, len, key, body);
}

export function encodeContext(vv: VersionVector, key: Uint8Array, secret: Uint8Array): string {
  const actors = [...vv.keys()].sort();
  const enc = actors.map((a) => Buffer.from(a, "utf8"));
  let len = 1 + varintLength(actors.length);
  actors.forEach((a, i) => {
    len += varintLength(enc[i]!.length) + enc[i]!.length + varintLength(vv.get(a)!);
  });
  const body = Buffer.allocUnsafe(len);
  body[0] = TOKEN_VERSION;
  let p = writeVarint(body, 1, actors.length);
  actors.forEach((a, i) => {
    p = writeVarint(body, p, enc[i]!.length);
    enc[i]!.copy(body, p);
    p += enc[i]!.length;
    p = writeVarint(body, p, vv.get(a)!);
  });
  return sealToken(body, mac(secret, key, body));
}

export function decodeContext(token: string, key: Uint8Array, secret: Uint8Array): VersionVector {
  const body = openToken(token, (b) => mac(secret, key, b), {
    noun: "context",
    maxChars: MAX_CONTEXT_TOKEN_CHARS,
    minBodyBytes: 2,
    forged: "context failed its integrity check (tampered, or from another key or cluster)",
    fail: (m) => new InvalidContextError(m),
  });
  if (body[0] !== TOKEN_VERSION) throw new InvalidContextError(`unsupported context version ${body[0]}`);
  try {
    const next = [0];
    let p = 1;
    const v = (): number => {
      const x = readVarint(body, p, body.length, next);
      p = next[0]!;
      return x;
    };
    const n = v();
    const out = new Map<Actor, number>();
    for (let i = 0; i < n; i++) {
      const len = v();
      if (p + len > body.length) throw new RangeError("actor runs past the end");
      const actor = body.toString("utf8", p, p + len);
      p += len;
      const counter = v();
      if (counter < 1) throw new RangeError("zero counter");
      out.set(actor, counter);
    }
    if (p !== body.length) throw new RangeError("trailing bytes");
    return out;
  } catch (err) {
    throw new InvalidContextError(`malformed context: ${(err as Error).message}`);
  }
}

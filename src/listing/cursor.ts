/**
 * The key listing's cursor (`GET /kv/?cursor=C`): where a listing stands, handed to the client as an
 * opaque, URL-safe token that any node of the cluster accepts and no one else can forge.
 *
 * A position is, per partition of the ring, whether its keys are still to list (`todo`), being listed by
 * the current phase (`phase`), or listed (`done`), and, for the phase, the last key looked at (`after`):
 * every key of the phase's partitions up to it has been listed. Keys come phase by phase (pager.ts), and
 * within a phase in key order.
 *
 * Token = base64url( version u8 (1) | Q varint | runs varint | (state u8 | length varint)*
 *                    | hasAfter u8 | [afterLen varint | after bytes] | mac (12 bytes) )
 * The partition states go as runs (a phase is usually whole runs of partitions): a cluster of three nodes
 * needs one run. mac = the first 12 bytes of HMAC-SHA256(clusterSecret, "ringstore key listing cursor"
 * NUL | everything before the mac): bound to the cluster (a token of another cluster, or a context token,
 * fails it) and to its bytes (an edited position fails it). A bad token is an `InvalidCursorError`.
 */
import { assert } from "../core/assert.js";
import { openToken, sealToken, tokenMac } from "../core/signed-token.js";
import { readVarint, varintLength, writeVarint } from "../storage/bytes.js";

const VERSION = 1;
const DOMAIN = Buffer.from("ringstore key listing cursor\0", "utf8");
/** Longest token accepted (runs and a key of up to 64 KiB fit). */
export const MAX_CURSOR_CHARS = 100_000;

export const TODO = 0;
export const PHASE = 1;
export const DONE = 2;
export type PartitionState = typeof TODO | typeof PHASE | typeof DONE;

/** Where a listing stands (see the top of the file). */
export interface ListingPosition {
  /** Q. */
  readonly partitions: number;
  /** One state per partition: TODO, PHASE or DONE. */
  readonly states: Uint8Array;
  /** The last key looked at in the current phase; undefined while the phase has not started. */
  readonly after: Uint8Array | undefined;
}

export class InvalidCursorError extends Error {
  readonly code = "bad_cursor";
  constructor(message: string) {
    super(message);
    this.name = "InvalidCursorError";
  }
}

/** The position of a listing that has not started: every partition to do. */
export function startPosition(partitions: number): ListingPosition {
  assert(Number.isInteger(partitions) && partitions >= 1, () => `a listing over ${partitions} partitions`);
  return { partitions, states: new Uint8Array(partitions), after: undefined };
}

const mac = (secret: Uint8Array, body: Uint8Array): Buffer => tokenMac(secret, DOMAIN, body);

/** The runs of equal states, as [state, length] pairs. */
function runs(states: Uint8Array): [number, number][] {
  const out: [number, number][] = [];
  for (const s of states) {
    const last = out[out.length - 1];
    if (last !== undefined && last[0] === s) last[1]++;
    else out.push([s, 1]);
  }
  return out;
}

export function encodeCursor(pos: ListingPosition, secret: Uint8Array): string {
  assert(pos.states.length === pos.partitions, "a position has one state per partition");
  assert(pos.after === undefined || pos.states.includes(PHASE), "a position names a key only within a phase");
  const r = runs(pos.states);
  let len = 1 + varintLength(pos.partitions) + varintLength(r.length) + 1;
  for (const [, n] of r) len += 1 + varintLength(n);
  if (pos.after !== undefined) len += varintLength(pos.after.length) + pos.after.length;
  const body = Buffer.allocUnsafe(len);
  body[0] = VERSION;
  let p = writeVarint(body, 1, pos.partitions);
  p = writeVarint(body, p, r.length);
  for (const [s, n] of r) {
    body[p++] = s;
    p = writeVarint(body, p, n);
  }
  body[p++] = pos.after === undefined ? 0 : 1;
  if (pos.after !== undefined) {
    p = writeVarint(body, p, pos.after.length);
    body.set(pos.after, p);
    p += pos.after.length;
  }
  assert(p === len, () => `cursor length ${p}, expected ${len}`);
  return sealToken(body, mac(secret, body));
}

/** The position a token names; `partitions` is this cluster's Q (another is refused). */
export function decodeCursor(token: string, secret: Uint8Array, partitions: number): ListingPosition {
  const body = openToken(token, (b) => mac(secret, b), {
    noun: "cursor",
    maxChars: MAX_CURSOR_CHARS,
    minBodyBytes: 4,
    forged:
      "the cursor failed its integrity check (edited, or from another cluster): start the listing again",
    fail: (m) => new InvalidCursorError(m),
  });
  if (body[0] !== VERSION) throw new InvalidCursorError(`unsupported cursor version ${body[0]}`);
  try {
    const next = [0];
    let p = 1;
    const v = (): number => {
      const x = readVarint(body, p, body.length, next);
      p = next[0]!;
      return x;
    };
    const q = v();
    if (q !== partitions)
      throw new InvalidCursorError(
        `the cursor is for a ring of ${q} partitions, this cluster has ${partitions}`,
      );
    const states = new Uint8Array(q);
    const count = v();
    let at = 0;
    for (let i = 0; i < count; i++) {
      if (p >= body.length) throw new RangeError("truncated runs");
      const s = body[p++]!;
      if (s !== TODO && s !== PHASE && s !== DONE) throw new RangeError(`unknown partition state ${s}`);
      const n = v();
      if (n < 1 || at + n > q) throw new RangeError("runs do not add up to the partitions");
      states.fill(s, at, at + n);
      at += n;
    }
    if (at !== q) throw new RangeError("runs do not add up to the partitions");
    if (p >= body.length) throw new RangeError("truncated");
    const has = body[p++];
    let after: Uint8Array | undefined;
    if (has === 1) {
      const n = v();
      if (n < 1 || p + n !== body.length) throw new RangeError("bad key length");
      after = Buffer.from(body.subarray(p, p + n));
      p += n;
      if (!states.includes(PHASE)) throw new RangeError("a key outside any phase");
    } else if (has !== 0) throw new RangeError(`bad key flag ${has}`);
    if (p !== body.length) throw new RangeError("trailing bytes");
    return { partitions: q, states, after };
  } catch (err) {
    if (err instanceof InvalidCursorError) throw err;
    throw new InvalidCursorError(`malformed cursor: ${(err as Error).message}`);
  }
}

/**
 * The stored form of one key: its sibling set, as bytes in the storage engine.
 *
 * Layout (version 1):
 *   magic       u8      0xD7
 *   version     u8      1
 *   actorCount  varint, then each actor: len varint | UTF-8 bytes   (an actor table, so that dots and
 *                                                                   contexts refer to actors by index)
 *   siblings    varint, then each sibling:
 *     dot        actorIndex varint | counter varint
 *     context    entries varint, then each: actorIndex varint | counter varint
 *     flags      u8      bit 0: deleted (tombstone)
 *     writtenAt  varint  milliseconds since the epoch, by the coordinator's clock (for tombstone expiry;
 *                        never used to order versions)
 *     type       len varint | UTF-8 content type
 *     value      len varint | bytes
 *   crc32       u32 LE  of everything before it
 *
 * The storage engine checksums its blocks too; this checksum also covers the object in flight between
 * nodes and through any other engine. A decode failure is a typed error, never a partial object.
 */
import { crc32 } from "node:zlib";
import { readVarint, varintLength, writeVarint } from "../storage/bytes.js";
import { type Actor, type Sibling, sortSiblings, type VersionVector } from "./dvv.js";

export interface StoredValue {
  readonly data: Uint8Array;
  readonly contentType: string;
  readonly deleted: boolean;
  /** Coordinator's wall clock at the write, for tombstone expiry only. */
  readonly writtenAtMs: number;
}

export type StoredSibling = Sibling<StoredValue>;

const MAGIC = 0xd7;
const VERSION = 1;

export class ObjectDecodeError extends Error {
  readonly code = "ERR_BAD_OBJECT";
  constructor(message: string, options?: { cause?: unknown }) {
    super(`stored object cannot be decoded: ${message}`, options);
    this.name = "ObjectDecodeError";
  }
}

export function encodeSiblings(set: readonly StoredSibling[]): Buffer {
  const actors: Actor[] = [];
  const index = new Map<Actor, number>();
  const idx = (a: Actor): number => {
    let i = index.get(a);
    if (i === undefined) {
      i = actors.length;
      actors.push(a);
      index.set(a, i);
    }
    return i;
  };
  for (const s of set) {
    idx(s.dot.actor);
    for (const a of [...s.context.keys()].sort()) idx(a);
  }
  const actorBytes = actors.map((a) => Buffer.from(a, "utf8"));
  const typeBytes = set.map((s) => Buffer.from(s.value.contentType, "utf8"));
  let len = 2 + varintLength(actors.length);
  for (const b of actorBytes) len += varintLength(b.length) + b.length;
  len += varintLength(set.length);
  set.forEach((s, i) => {
    len += varintLength(index.get(s.dot.actor)!) + varintLength(s.dot.counter) + varintLength(s.context.size);
    for (const [a, n] of s.context) len += varintLength(index.get(a)!) + varintLength(n);
    const t = typeBytes[i]!;
    len += 1 + varintLength(s.value.writtenAtMs) + varintLength(t.length) + t.length;
    len += varintLength(s.value.data.length) + s.value.data.length;
  });
  len += 4;
  const out = Buffer.allocUnsafe(len);
  out[0] = MAGIC;
  out[1] = VERSION;
  let p = writeVarint(out, 2, actors.length);
  for (const b of actorBytes) {
    p = writeVarint(out, p, b.length);
    b.copy(out, p);
    p += b.length;
  }
  p = writeVarint(out, p, set.length);
  set.forEach((s, i) => {
    p = writeVarint(out, p, index.get(s.dot.actor)!);
    p = writeVarint(out, p, s.dot.counter);
    p = writeVarint(out, p, s.context.size);
    for (const a of [...s.context.keys()].sort()) {
      p = writeVarint(out, p, index.get(a)!);
      p = writeVarint(out, p, s.context.get(a)!);
    }
    out[p++] = s.value.deleted ? 1 : 0;
    p = writeVarint(out, p, s.value.writtenAtMs);
    const t = typeBytes[i]!;
    p = writeVarint(out, p, t.length);
    t.copy(out, p);
    p += t.length;
    p = writeVarint(out, p, s.value.data.length);
    out.set(s.value.data, p);
    p += s.value.data.length;
  });
  out.writeUInt32LE(crc32(out.subarray(0, p)), p);
  return out;
}

export function decodeSiblings(buf: Uint8Array): StoredSibling[] {
  return parse(buf, true);
}

/**
 * If every sibling of the stored set `buf` is a tombstone: the newest of their `writtenAtMs` (the
 * tombstone's age is measured from it); undefined if any is a live value. Checked like `decodeSiblings`,
 * without copying the values (a tombstone sweep reads every set a node holds).
 */
export function tombstoneWrittenAt(buf: Uint8Array): number | undefined {
  const set = parse(buf, false);
  let newest: number | undefined;
  for (const s of set) {
    if (!s.value.deleted) return undefined;
    newest = Math.max(newest ?? 0, s.value.writtenAtMs);
  }
  return newest;
}

const NO_DATA = Buffer.alloc(0);

/** Decodes a stored set; `keepData` false leaves every value's data empty (nothing copied). */
function parse(buf: Uint8Array, keepData: boolean): StoredSibling[] {
  const b = Buffer.isBuffer(buf) ? buf : Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (b.length < 6) throw new ObjectDecodeError("too short");
  if (b[0] !== MAGIC) throw new ObjectDecodeError("bad magic");
  if (b[1] !== VERSION) throw new ObjectDecodeError(`unsupported version ${b[1]}`);
  const end = b.length - 4;
  if (b.readUInt32LE(end) !== crc32(b.subarray(0, end))) throw new ObjectDecodeError("checksum mismatch");
  try {
    const next = [0];
    let p = 2;
    const v = (): number => {
      const x = readVarint(b, p, end, next);
      p = next[0]!;
      return x;
    };
    const bytes = (): Buffer => {
      const n = v();
      if (p + n > end) throw new RangeError("field runs past the end");
      const out = b.subarray(p, p + n);
      p += n;
      return out;
    };
    const actorCount = v();
    if (actorCount > end) throw new RangeError("actor count too large");
    const actors: Actor[] = [];
    for (let i = 0; i < actorCount; i++) actors.push(bytes().toString("utf8"));
    const actor = (): Actor => {
      const i = v();
      const a = actors[i];
      if (a === undefined) throw new RangeError(`actor index ${i} out of range`);
      return a;
    };
    const count = v();
    if (count > end) throw new RangeError("sibling count too large");
    const set: StoredSibling[] = [];
    for (let i = 0; i < count; i++) {
      const dot = { actor: actor(), counter: v() };
      const n = v();
      if (n > actorCount) throw new RangeError("context larger than the actor table");
      const context = new Map<Actor, number>();
      for (let j = 0; j < n; j++) context.set(actor(), v());
      if (p >= end) throw new RangeError("truncated sibling");
      const flags = b[p++]!;
      if (flags > 1) throw new RangeError(`unknown flags ${flags}`);
      const writtenAtMs = v();
      const contentType = bytes().toString("utf8");
      const raw = bytes();
      const data = keepData ? Buffer.from(raw) : NO_DATA;
      set.push({
        dot,
        context: context as VersionVector,
        value: { data, contentType, deleted: flags === 1, writtenAtMs },
      });
    }
    if (p !== end) throw new RangeError("trailing bytes");
    return sortSiblings(set);
  } catch (err) {
    throw new ObjectDecodeError((err as Error).message, { cause: err });
  }
}

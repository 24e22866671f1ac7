/**
 * The pure parts of gossip by digest and delta (membership.ts uses them): the directory hash, heartbeat
 * vectors, the ring's hash and ring deltas. Formats (transport/messages.ts, GossipDigest, RingDelta):
 *
 * - Directory hash: two 32-bit FNV-1a-style hashes (different offset bases) over, per member in id
 *   order, its id's UTF-16 code units, then a separator, its incarnation (as two 32-bit halves) and its
 *   status rank; combined into 53 bits (h1 * 2^21 + the top 21 bits of h2) so it travels as a safe
 *   integer. Equal hashes and counts mean equal directories but for a collision (about 2^-53 a pair).
 * - Heartbeat vector: one u32 little-endian per member, in id order (heartbeats are at most
 *   MAX_HEARTBEAT).
 * - Ring hash: 32-bit FNV-1a over the version, the partition count, every owner and every member.
 * - Ring delta: the partitions whose owner differs between the base ring and the new one.
 */
import { assert } from "../core/assert.js";
import type { MemberView, RingDelta, RingRef, RingView } from "../transport/messages.js";

export const STATUS_RANK: Record<MemberView["status"], number> = { joining: 0, up: 1, leaving: 2, left: 3 };
export const STATUSES: readonly MemberView["status"][] = ["joining", "up", "leaving", "left"];

const FNV_PRIME = 0x01000193;

/** Mixes a string's code units into a 32-bit FNV-1a state. */
function mixString(h: number, s: string): number {
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), FNV_PRIME);
  return h;
}

/** Mixes a whole number (below 2^53) into a 32-bit FNV-1a state, as two 32-bit halves. */
function mixNumber(h: number, x: number): number {
  h = Math.imul(h ^ (x >>> 0), FNV_PRIME);
  return Math.imul(h ^ Math.floor(x / 0x1_0000_0000), FNV_PRIME);
}

/** Hashes a directory (members in id order): see the file's opening comment. */
export function directoryHash(members: readonly MemberView[]): number {
  let h1 = 0x811c9dc5 | 0;
  let h2 = 0x050c5d1f | 0;
  for (const m of members) {
    h1 = mixNumber(mixString(h1, m.id) ^ 0xff, m.incarnation) ^ STATUS_RANK[m.status];
    h2 = mixNumber(mixString(h2, m.id) ^ 0xfe, m.incarnation) ^ (STATUS_RANK[m.status] << 3);
  }
  return (h1 >>> 0) * 0x20_0000 + ((h2 >>> 0) >>> 11);
}

/** Reads u32 little-endian value `i` of `bytes`. */
export function u32At(bytes: Uint8Array, i: number): number {
  return (
    (bytes[4 * i]! | (bytes[4 * i + 1]! << 8) | (bytes[4 * i + 2]! << 16) | (bytes[4 * i + 3]! << 24)) >>> 0
  );
}

export function ringHash(r: RingView): number {
  let h = 0x811c9dc5 | 0;
  h = mixNumber(h, r.version);
  h = mixNumber(h, r.partitions);
  for (const o of r.owners) h = Math.imul(mixString(h, o) ^ 0xff, FNV_PRIME);
  for (const m of r.members) h = Math.imul(mixString(h, m) ^ 0xfe, FNV_PRIME);
  return h >>> 0;
}

export const NO_RING: RingRef = { version: 0, hash: 0 };

/**
 * `next` as a change from `base` (which `base` names by `baseRef`), or undefined when the change is
 * not smaller than the whole ring (more than half the partitions moved).
 */
export function ringDelta(base: RingView, baseRef: RingRef, next: RingView): RingDelta | undefined {
  if (base.partitions !== next.partitions) return undefined;
  const moved: number[] = [];
  const owners: string[] = [];
  for (let p = 0; p < next.partitions; p++)
    if (base.owners[p] !== next.owners[p]) {
      moved.push(p);
      owners.push(next.owners[p]!);
      if (2 * moved.length > next.partitions) return undefined;
    }
  const bytes = new Uint8Array(4 * moved.length);
  const view = new DataView(bytes.buffer);
  for (const [i, p] of moved.entries()) view.setUint32(4 * i, p, true);
  return {
    version: next.version,
    partitions: next.partitions,
    members: next.members,
    base: baseRef,
    moved: bytes,
    owners,
  };
}

/** The ring a delta makes of its base (the caller checked that `base` is the delta's base). */
export function applyRingDelta(base: RingView, d: RingDelta): RingView {
  assert(
    base.partitions === d.partitions,
    () => `a ring delta of ${d.partitions} partitions over a ring of ${base.partitions}`,
  );
  const owners = [...base.owners];
  for (let i = 0; i < d.owners.length; i++) owners[u32At(d.moved, i)] = d.owners[i]!;
  return { version: d.version, partitions: d.partitions, owners, members: [...d.members] };
}

/**
 * The payload of a WAL record: the operations of the writes of one group commit, in call order (one
 * `write(ops)` call is never split across records, so each stays atomic; a record is replayed whole or not
 * at all).
 *
 *   count   u32 LE
 *   then `count` operations:
 *     kind      u8       1 = put, 0 = delete
 *     keyLen    varint
 *     valueLen  varint   (put only)
 *     key       keyLen bytes
 *     value     valueLen bytes (put only)
 *
 * The record header carries the sequence number of the first operation; operation i has sequence + i.
 */
import { readVarint, varintLength, writeVarint } from "../bytes.js";
import type { WriteOp } from "../engine.js";
import { LOG_RECORD_HEADER_BYTES, RECORD_TYPE_BATCH, sealHeader, sealPayload } from "./log-format.js";

export const KIND_DELETE = 0;
export const KIND_PUT = 1;

export interface DecodedOp {
  readonly kind: number;
  readonly key: Buffer;
  readonly value: Buffer;
}

/** Bytes before the first operation of a batch record: the record header, then the count. */
export const BATCH_BODY_OFFSET = LOG_RECORD_HEADER_BYTES + 4;

export function batchPayloadLength(ops: readonly WriteOp[]): number {
  let n = 4;
  for (const op of ops) {
    n += 1 + varintLength(op.key.length) + op.key.length;
    if (op.kind === "put") n += varintLength(op.value.length) + op.value.length;
  }
  return n;
}

/**
 * Encodes `ops` (already validated) at `pos` of `buf` in the payload's operation format, without the
 * count; returns the end. The writer loop puts a record header and the count in front of a group's
 * operations (sealGroupRecord).
 */
export function encodeBatchOps(ops: readonly WriteOp[], buf: Buffer, pos: number): number {
  for (let i = 0; i < ops.length; i++) {
    const op = ops[i]!;
    const klen = op.key.length;
    if (op.kind === "put") {
      const vlen = op.value.length;
      buf[pos++] = KIND_PUT;
      if (klen < 0x80) buf[pos++] = klen;
      else pos = writeVarint(buf, pos, klen);
      if (vlen < 0x80) buf[pos++] = vlen;
      else pos = writeVarint(buf, pos, vlen);
      // `set` beats a byte loop even for 16 bytes (measured).
      buf.set(op.key, pos);
      pos += klen;
      buf.set(op.value, pos);
      pos += vlen;
    } else {
      buf[pos++] = KIND_DELETE;
      if (klen < 0x80) buf[pos++] = klen;
      else pos = writeVarint(buf, pos, klen);
      buf.set(op.key, pos);
      pos += klen;
    }
  }
  return pos;
}

/**
 * Makes `record` a sealed WAL record: its first BATCH_BODY_OFFSET bytes are room for the record header and
 * the count, followed by `ops` operations (encodeBatchOps) whose first gets sequence `sequence`.
 */
export function sealGroupRecord(record: Buffer, ops: number, sequence: number): void {
  record.fill(0, 0, LOG_RECORD_HEADER_BYTES);
  record.writeUInt32LE(record.length - LOG_RECORD_HEADER_BYTES, 4);
  record.writeUInt32LE(ops, LOG_RECORD_HEADER_BYTES);
  sealPayload(record);
  sealHeader(record, RECORD_TYPE_BATCH, sequence);
}

/** Decodes a batch payload; throws RangeError on malformed bytes (the caller reports corruption). */
export function decodeBatchPayload(payload: Buffer): DecodedOp[] {
  if (payload.length < 4) throw new RangeError("batch shorter than its count");
  const count = payload.readUInt32LE(0);
  const out: DecodedOp[] = [];
  const next = [0];
  let pos = 4;
  const end = payload.length;
  for (let i = 0; i < count; i++) {
    if (pos >= end) throw new RangeError("batch truncated");
    const kind = payload[pos++]!;
    if (kind !== KIND_PUT && kind !== KIND_DELETE) throw new RangeError(`bad operation kind ${kind}`);
    const keyLen = readVarint(payload, pos, end, next);
    pos = next[0]!;
    let valueLen = 0;
    if (kind === KIND_PUT) {
      valueLen = readVarint(payload, pos, end, next);
      pos = next[0]!;
    }
    if (pos + keyLen + valueLen > end) throw new RangeError("batch operation runs past the payload");
    const key = payload.subarray(pos, pos + keyLen);
    pos += keyLen;
    const value = payload.subarray(pos, pos + valueLen);
    pos += valueLen;
    out.push({ kind, key, value });
  }
  if (pos !== end) throw new RangeError("trailing bytes after the batch");
  return out;
}

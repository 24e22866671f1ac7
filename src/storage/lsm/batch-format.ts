/**
 * The payload of a WAL record: one atomic write batch.
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
import { allocRecord, LOG_RECORD_HEADER_BYTES, sealPayload } from "./log-format.js";

export const KIND_DELETE = 0;
export const KIND_PUT = 1;

export interface DecodedOp {
  readonly kind: number;
  readonly key: Buffer;
  readonly value: Buffer;
}

export function batchPayloadLength(ops: readonly WriteOp[]): number {
  let n = 4;
  for (const op of ops) {
    n += 1 + varintLength(op.key.length) + op.key.length;
    if (op.kind === "put") n += varintLength(op.value.length) + op.value.length;
  }
  return n;
}

/**
 * Encodes `ops` into a new WAL record (payload checksum sealed, header not yet: the sequence number is
 * assigned when the record joins a commit group). Returns the record and views of each key and value
 * inside it, so that the memtable can keep those views instead of copying again.
 */
export function encodeBatchRecord(ops: readonly WriteOp[]): { record: Buffer; decoded: DecodedOp[] } {
  const record = allocRecord(batchPayloadLength(ops));
  let pos = LOG_RECORD_HEADER_BYTES;
  record.writeUInt32LE(ops.length, pos);
  pos += 4;
  const decoded: DecodedOp[] = new Array(ops.length);
  const empty = record.subarray(0, 0);
  for (let i = 0; i < ops.length; i++) {
    const op = ops[i]!;
    if (op.kind === "put") {
      record[pos++] = KIND_PUT;
      pos = writeVarint(record, pos, op.key.length);
      pos = writeVarint(record, pos, op.value.length);
      record.set(op.key, pos);
      const key = record.subarray(pos, pos + op.key.length);
      pos += op.key.length;
      record.set(op.value, pos);
      const value = record.subarray(pos, pos + op.value.length);
      pos += op.value.length;
      decoded[i] = { kind: KIND_PUT, key, value };
    } else {
      record[pos++] = KIND_DELETE;
      pos = writeVarint(record, pos, op.key.length);
      record.set(op.key, pos);
      const key = record.subarray(pos, pos + op.key.length);
      pos += op.key.length;
      decoded[i] = { kind: KIND_DELETE, key, value: empty };
    }
  }
  sealPayload(record);
  return { record, decoded };
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

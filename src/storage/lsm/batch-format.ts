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
import {
  allocRecord,
  LOG_RECORD_HEADER_BYTES,
  RECORD_TYPE_BATCH,
  sealHeader,
  sealPayload,
} from "./log-format.js";
import type { Memtable } from "./memtable.js";

export const KIND_DELETE = 0;
export const KIND_PUT = 1;

export interface DecodedOp {
  readonly kind: number;
  readonly key: Buffer;
  readonly value: Buffer;
}

/** Bytes before the first operation in a record from encodeBatchRecord: record header, then count. */
export const BATCH_BODY_OFFSET = LOG_RECORD_HEADER_BYTES + 4;

export function batchPayloadLength(ops: readonly WriteOp[]): number {
  let n = 4;
  for (const op of ops) {
    n += 1 + varintLength(op.key.length) + op.key.length;
    if (op.kind === "put") n += varintLength(op.value.length) + op.value.length;
  }
  return n;
}

/** Copies `src` into `dst` at `pos` (`set` beats a byte loop even for 16 bytes, measured). */
function copyInto(dst: Buffer, pos: number, src: Uint8Array): void {
  dst.set(src, pos);
}

/**
 * Encodes `ops` into a new WAL record whose header, count and checksums are not yet written:
 * `sealBatchRecord` does that once the record's sequence number is known, and `mergeBatchRecords` joins
 * the records of one commit group into one record first (one checksum pass for the group instead of two
 * per write). `payloadLength` is batchPayloadLength(ops), which the caller computed while validating.
 */
export function encodeBatchRecord(ops: readonly WriteOp[], payloadLength: number): Buffer {
  const record = allocRecord(payloadLength);
  record.writeUInt32LE(ops.length, LOG_RECORD_HEADER_BYTES);
  let pos = BATCH_BODY_OFFSET;
  for (let i = 0; i < ops.length; i++) {
    const op = ops[i]!;
    const klen = op.key.length;
    if (op.kind === "put") {
      const vlen = op.value.length;
      record[pos++] = KIND_PUT;
      if (klen < 0x80) record[pos++] = klen;
      else pos = writeVarint(record, pos, klen);
      if (vlen < 0x80) record[pos++] = vlen;
      else pos = writeVarint(record, pos, vlen);
      copyInto(record, pos, op.key);
      pos += klen;
      copyInto(record, pos, op.value);
      pos += vlen;
    } else {
      record[pos++] = KIND_DELETE;
      if (klen < 0x80) record[pos++] = klen;
      else pos = writeVarint(record, pos, klen);
      copyInto(record, pos, op.key);
      pos += klen;
    }
  }
  return record;
}

/** Operations in a record from encodeBatchRecord. */
export function batchRecordCount(record: Buffer): number {
  return record.readUInt32LE(LOG_RECORD_HEADER_BYTES);
}

/**
 * One record holding the operations of `records` in order (each from encodeBatchRecord), `ops` in all,
 * `bytes` the sum of their lengths. Atomicity is kept: a group commit's record holds whole writes, and a
 * record is replayed entirely or not at all.
 */
export function mergeBatchRecords(records: readonly Buffer[], ops: number, bytes: number): Buffer {
  const out = allocRecord(bytes - (records.length - 1) * BATCH_BODY_OFFSET - LOG_RECORD_HEADER_BYTES);
  out.writeUInt32LE(ops, LOG_RECORD_HEADER_BYTES);
  let pos = BATCH_BODY_OFFSET;
  for (const r of records) {
    r.copy(out, pos, BATCH_BODY_OFFSET);
    pos += r.length - BATCH_BODY_OFFSET;
  }
  return out;
}

/** Writes the checksums, the type and the sequence of the batch's first operation. */
export function sealBatchRecord(record: Buffer, sequence: number): void {
  sealPayload(record);
  sealHeader(record, RECORD_TYPE_BATCH, sequence);
}

/** Inserts the operations of `record` (from encodeBatchRecord) into `mem` from `sequence`; returns the next. */
export function insertBatchRecord(record: Buffer, sequence: number, mem: Memtable): number {
  return mem.addBatch(record, BATCH_BODY_OFFSET, record.length, batchRecordCount(record), sequence);
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

/**
 * The record log format, shared by the write-ahead log (WAL) and the manifest.
 *
 * A log file is a file header followed by records, appended and never rewritten.
 *
 * File header (20 bytes):
 *   0  magic        4 bytes  "RSWL" (WAL) or "RSMF" (manifest)
 *   4  version      u16 LE   1
 *   6  reserved     u16      0
 *   8  fileNumber   u64 LE   the number in the file's name
 *  16  headerCrc    u32 LE   crc32 of bytes 0..16
 *
 * Record (24-byte header, then the payload):
 *   0  headerCrc    u32 LE   crc32 of bytes 4..24 of the record header
 *   4  payloadLen   u32 LE
 *   8  type         u8       1 = write batch (WAL), 2 = version edit (manifest)
 *   9  reserved     3 bytes  0
 *  12  sequence     u64 LE   WAL: sequence number of the batch's first operation; manifest: 0
 *  20  payloadCrc   u32 LE   crc32 of the payload
 *  24  payload      payloadLen bytes
 *
 * Two checksums, so that a damaged length can never be taken for a torn tail.
 *
 * Reading distinguishes a torn tail from corruption (the rule the crash tests pin down; do not relax it):
 * - A file of nothing but zeros (any length) is a header that never reached the disk: an empty log.
 * - A torn tail is what a crash in the middle of an append leaves: a record that runs past the end of the
 *   file, or a damaged record in a run of zeros that reaches the end of the file and starts either at
 *   that record (zeros from a record boundary: the unsynced appends after the last sync) or at a
 *   512-byte boundary (sectors of an unsynced append never written). File systems that persist a new
 *   size before the data show exactly these zeros. Such a record was never acknowledged
 *   (acknowledgement waits for the append and, in fsync mode, the sync). Reading stops before it,
 *   without error.
 * - Any other failed check is corruption: the read fails with a CorruptionError naming the file and
 *   the offset of the bad record. Acknowledged data is never silently dropped.
 */
import { crc32 } from "node:zlib";
import { readU64, writeU64 } from "../bytes.js";
import { CorruptionError } from "../errors.js";

export const LOG_FILE_HEADER_BYTES = 20;
export const LOG_RECORD_HEADER_BYTES = 24;
export const LOG_FORMAT_VERSION = 1;
export const WAL_MAGIC = "RSWL";
export const MANIFEST_MAGIC = "RSMF";
export const RECORD_TYPE_BATCH = 1;
export const RECORD_TYPE_EDIT = 2;
/** A record larger than this is refused on write and treated as corruption on read. */
export const LOG_RECORD_MAX_PAYLOAD_BYTES = 512 * 1024 * 1024;
const ZERO_TAIL_ALIGN = 512;

export function encodeLogFileHeader(magic: string, fileNumber: number): Buffer {
  const b = Buffer.alloc(LOG_FILE_HEADER_BYTES);
  b.write(magic, 0, 4, "latin1");
  b.writeUInt16LE(LOG_FORMAT_VERSION, 4);
  writeU64(b, 8, fileNumber);
  b.writeUInt32LE(crc32(b.subarray(0, 16)), 16);
  return b;
}

/**
 * Allocates a record with room for `payloadLen` payload bytes at offset LOG_RECORD_HEADER_BYTES.
 * Fill the payload, then call `sealRecord`.
 */
export function allocRecord(payloadLen: number): Buffer {
  if (payloadLen > LOG_RECORD_MAX_PAYLOAD_BYTES)
    throw new RangeError(`record payload of ${payloadLen} bytes too large`);
  const b = Buffer.allocUnsafe(LOG_RECORD_HEADER_BYTES + payloadLen);
  b.fill(0, 0, LOG_RECORD_HEADER_BYTES);
  b.writeUInt32LE(payloadLen, 4);
  return b;
}

/** Writes the payload checksum (call once the payload is final). */
export function sealPayload(record: Buffer): void {
  record.writeUInt32LE(crc32(record.subarray(LOG_RECORD_HEADER_BYTES)), 20);
}

/** Writes type, sequence and the header checksum (call after sealPayload). */
export function sealHeader(record: Buffer, type: number, sequence: number): void {
  record[8] = type;
  writeU64(record, 12, sequence);
  record.writeUInt32LE(crc32(record.subarray(4, LOG_RECORD_HEADER_BYTES)), 0);
}

export function encodeRecord(type: number, sequence: number, payload: Uint8Array): Buffer {
  const r = allocRecord(payload.length);
  r.set(payload, LOG_RECORD_HEADER_BYTES);
  sealPayload(r);
  sealHeader(r, type, sequence);
  return r;
}

export interface LogRecord {
  readonly type: number;
  readonly sequence: number;
  /** A view into the file's bytes. */
  readonly payload: Buffer;
  readonly offset: number;
}

export interface LogReadResult {
  readonly fileNumber: number;
  readonly records: LogRecord[];
  /** Offset just past the last good record. */
  readonly validEnd: number;
  /** True when bytes after validEnd were a torn tail and were ignored. */
  readonly tornTail: boolean;
}

/** Offset from which the file is all zeros to its end (data.length if its last byte is not zero). */
function zeroTailStart(data: Buffer): number {
  let z = data.length;
  while (z > 0 && data[z - 1] === 0) z--;
  return z;
}

/**
 * Parses a whole log file. `file` names it in errors. Throws CorruptionError on corruption (see the file
 * comment for what counts as a torn tail instead).
 */
export function parseLogFile(file: string, data: Buffer, magic: string): LogReadResult {
  // Only zeros: a file whose header never reached the disk (a preallocated WAL, or a zeroed unsynced tail,
  // whose directory entry another file's directory sync made durable first). It holds no record.
  if (data.length >= LOG_FILE_HEADER_BYTES && zeroTailStart(data) === 0)
    return { fileNumber: -1, records: [], validEnd: 0, tornTail: true };
  if (data.length < LOG_FILE_HEADER_BYTES) {
    // A crash right after creating the file can leave it shorter than its header (or empty).
    if (data.every((b) => b === 0) || data.length === 0 || magicPrefixMatches(data, magic)) {
      return { fileNumber: -1, records: [], validEnd: 0, tornTail: data.length > 0 };
    }
    throw new CorruptionError(file, 0, "file shorter than its header and not a torn header");
  }
  if (data.toString("latin1", 0, 4) !== magic)
    throw new CorruptionError(file, 0, `bad magic (expected ${magic})`);
  if (data.readUInt32LE(16) !== crc32(data.subarray(0, 16)))
    throw new CorruptionError(file, 0, "file header checksum mismatch");
  const version = data.readUInt16LE(4);
  if (version !== LOG_FORMAT_VERSION)
    throw new CorruptionError(file, 4, `unsupported format version ${version}`);
  const fileNumber = readU64(data, 8);

  const records: LogRecord[] = [];
  let pos = LOG_FILE_HEADER_BYTES;
  let zeroStart = -1;
  /** Is the damaged record [recordStart, recordEnd) a torn tail by the rule in the file comment? */
  const isTornAt = (recordStart: number, recordEnd: number): boolean => {
    if (zeroStart < 0) zeroStart = zeroTailStart(data);
    if (zeroStart >= data.length) return false;
    if (zeroStart <= recordStart) return true;
    const aligned = Math.ceil(zeroStart / ZERO_TAIL_ALIGN) * ZERO_TAIL_ALIGN;
    return aligned < data.length && aligned < recordEnd;
  };
  while (pos < data.length) {
    const rem = data.length - pos;
    if (rem < LOG_RECORD_HEADER_BYTES) return { fileNumber, records, validEnd: pos, tornTail: true };
    const headerOk = data.readUInt32LE(pos) === crc32(data.subarray(pos + 4, pos + LOG_RECORD_HEADER_BYTES));
    if (!headerOk) {
      if (isTornAt(pos, pos + LOG_RECORD_HEADER_BYTES))
        return { fileNumber, records, validEnd: pos, tornTail: true };
      throw new CorruptionError(file, pos, "record header checksum mismatch");
    }
    const len = data.readUInt32LE(pos + 4);
    if (len > LOG_RECORD_MAX_PAYLOAD_BYTES)
      throw new CorruptionError(file, pos, `record length ${len} too large`);
    const end = pos + LOG_RECORD_HEADER_BYTES + len;
    if (end > data.length) return { fileNumber, records, validEnd: pos, tornTail: true };
    const payload = data.subarray(pos + LOG_RECORD_HEADER_BYTES, end);
    if (data.readUInt32LE(pos + 20) !== crc32(payload)) {
      if (isTornAt(pos, end)) return { fileNumber, records, validEnd: pos, tornTail: true };
      throw new CorruptionError(file, pos, "record payload checksum mismatch");
    }
    let sequence: number;
    try {
      sequence = readU64(data, pos + 12);
    } catch (err) {
      throw new CorruptionError(file, pos + 12, "sequence number out of range", { cause: err });
    }
    records.push({ type: data[pos + 8]!, sequence, payload, offset: pos });
    pos = end;
  }
  return { fileNumber, records, validEnd: pos, tornTail: false };
}

function magicPrefixMatches(data: Buffer, magic: string): boolean {
  const n = Math.min(4, data.length);
  return data.toString("latin1", 0, n) === magic.slice(0, n);
}

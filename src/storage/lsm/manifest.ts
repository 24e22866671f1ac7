/**
 * The manifest: the durable history of versions, so that the set of live tables changes atomically.
 *
 * Files:
 * - `MANIFEST-<n>`: a log (log-format.ts, magic "RSMF") of version edits. Each record's payload is the
 *   edit as UTF-8 JSON (keys in base64). JSON because edits are rare and small, and a readable manifest
 *   helps an operator; the record checksums guard it like any other format.
 * - `CURRENT`: a log (magic "RSCU") holding one record, the name of the live manifest. It is replaced by
 *   writing `CURRENT.tmp`, syncing it, renaming it over `CURRENT`, and syncing the directory.
 *
 * A flush or compaction becomes real at the instant its edit's record is durable in the manifest: before,
 * its new tables are unreferenced garbage (removed on open); after, the tables it replaced are garbage.
 * Every open writes a fresh manifest holding one snapshot edit, so a torn tail of the old one is never
 * appended to.
 */
import * as path from "node:path";
import { CorruptionError } from "../errors.js";
import type { FileSystem, WritableFile } from "../fs/file-system.js";
import {
  encodeLogFileHeader,
  encodeRecord,
  MANIFEST_MAGIC,
  parseLogFile,
  RECORD_TYPE_EDIT,
} from "./log-format.js";
import { makeRun, type Run, type TableMeta, type VersionEdit } from "./version.js";

export const CURRENT_MAGIC = "RSCU";
export const CURRENT_FILE = "CURRENT";
const RECORD_TYPE_CURRENT = 3;

export function manifestName(n: number): string {
  return `MANIFEST-${String(n).padStart(6, "0")}`;
}

interface JsonTable {
  n: number;
  size: number;
  entries: number;
  tombstones: number;
  smallest: string;
  largest: string;
}
interface JsonRun {
  id: number;
  minSeq: number;
  maxSeq: number;
  files: JsonTable[];
}

export function encodeEdit(edit: VersionEdit): Buffer {
  const json = {
    logNumber: edit.logNumber,
    nextFileNumber: edit.nextFileNumber,
    lastSequence: edit.lastSequence,
    removeRuns: edit.removeRuns,
    addRuns: edit.addRuns?.map(
      (r): JsonRun => ({
        id: r.id,
        minSeq: r.minSeq,
        maxSeq: r.maxSeq,
        files: r.files.map((f) => ({
          n: f.fileNumber,
          size: f.size,
          entries: f.entries,
          tombstones: f.tombstones,
          smallest: f.smallest.toString("base64"),
          largest: f.largest.toString("base64"),
        })),
      }),
    ),
  };
  return Buffer.from(JSON.stringify(json), "utf8");
}

function isCount(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

/** Decodes and validates one edit; a malformed edit is corruption of `file` at `offset`. */
export function decodeEdit(payload: Buffer, file: string, offset: number): VersionEdit {
  const bad = (what: string, cause?: unknown) =>
    new CorruptionError(file, offset, `bad version edit: ${what}`, { cause });
  let j: Record<string, unknown>;
  try {
    j = JSON.parse(payload.toString("utf8")) as Record<string, unknown>;
  } catch (err) {
    throw bad("not JSON", err);
  }
  if (typeof j !== "object" || j === null) throw bad("not an object");
  const opt = (k: string): number | undefined => {
    const v = j[k];
    if (v === undefined) return undefined;
    if (!isCount(v)) throw bad(`${k} is not a count`);
    return v;
  };
  const edit: { -readonly [K in keyof VersionEdit]: VersionEdit[K] } = {};
  const logNumber = opt("logNumber");
  const nextFileNumber = opt("nextFileNumber");
  const lastSequence = opt("lastSequence");
  if (logNumber !== undefined) edit.logNumber = logNumber;
  if (nextFileNumber !== undefined) edit.nextFileNumber = nextFileNumber;
  if (lastSequence !== undefined) edit.lastSequence = lastSequence;
  if (j.removeRuns !== undefined) {
    if (!Array.isArray(j.removeRuns) || !j.removeRuns.every(isCount)) throw bad("removeRuns");
    edit.removeRuns = j.removeRuns;
  }
  if (j.addRuns !== undefined) {
    if (!Array.isArray(j.addRuns)) throw bad("addRuns");
    edit.addRuns = j.addRuns.map((r: JsonRun): Run => {
      if (typeof r !== "object" || r === null || !isCount(r.id) || !isCount(r.minSeq) || !isCount(r.maxSeq))
        throw bad("run");
      if (!Array.isArray(r.files)) throw bad("run files");
      const files = r.files.map((f: JsonTable): TableMeta => {
        if (
          typeof f !== "object" ||
          f === null ||
          !isCount(f.n) ||
          !isCount(f.size) ||
          !isCount(f.entries) ||
          !isCount(f.tombstones) ||
          typeof f.smallest !== "string" ||
          typeof f.largest !== "string"
        )
          throw bad("table");
        return {
          fileNumber: f.n,
          size: f.size,
          entries: f.entries,
          tombstones: f.tombstones,
          smallest: Buffer.from(f.smallest, "base64"),
          largest: Buffer.from(f.largest, "base64"),
        };
      });
      return makeRun(r.id, r.minSeq, r.maxSeq, files);
    });
  }
  return edit;
}

/** Reads CURRENT; returns the manifest file name, or undefined if there is no CURRENT. */
export async function readCurrent(fs: FileSystem, dir: string): Promise<string | undefined> {
  const p = path.join(dir, CURRENT_FILE);
  if (!(await fs.exists(p))) return undefined;
  const parsed = parseLogFile(p, await fs.readFile(p), CURRENT_MAGIC);
  const rec = parsed.records[0];
  if (rec === undefined || parsed.records.length !== 1 || parsed.tornTail)
    throw new CorruptionError(p, parsed.validEnd, "CURRENT does not hold exactly one record");
  const name = rec.payload.toString("utf8");
  if (!/^MANIFEST-\d{6,}$/.test(name))
    throw new CorruptionError(p, rec.offset, `bad manifest name ${JSON.stringify(name)}`);
  return name;
}

/**
 * Reads every edit of a manifest, in order. A manifest named by CURRENT always holds its first record (the
 * snapshot is synced before CURRENT is switched), so a manifest without records is corruption, whatever
 * the torn-tail rule would say.
 */
export async function readManifest(fs: FileSystem, dir: string, name: string): Promise<VersionEdit[]> {
  const p = path.join(dir, name);
  if (!(await fs.exists(p))) throw new CorruptionError(p, 0, "the manifest named by CURRENT is missing");
  const parsed = parseLogFile(p, await fs.readFile(p), MANIFEST_MAGIC);
  if (parsed.records.length === 0)
    throw new CorruptionError(p, parsed.validEnd, "the manifest holds no version edit");
  return parsed.records.map((r) => {
    if (r.type !== RECORD_TYPE_EDIT)
      throw new CorruptionError(p, r.offset, `unexpected record type ${r.type}`);
    return decodeEdit(r.payload, p, r.offset);
  });
}

/** An open manifest, appended to by flushes and compactions (one at a time: the engine serialises). */
export class ManifestWriter {
  bytesWritten = 0;
  private constructor(
    readonly name: string,
    private readonly file: WritableFile,
  ) {}

  /**
   * Creates manifest number `n` holding `snapshot`, makes it durable, and points CURRENT at it.
   * Only after this returns is the new manifest the live one.
   */
  static async create(
    fs: FileSystem,
    dir: string,
    n: number,
    snapshot: VersionEdit,
  ): Promise<ManifestWriter> {
    const name = manifestName(n);
    const file = await fs.create(path.join(dir, name));
    const w = new ManifestWriter(name, file);
    const header = encodeLogFileHeader(MANIFEST_MAGIC, n);
    await file.append(header);
    w.bytesWritten += header.length;
    await w.append(snapshot);
    await fs.syncDir(dir);
    const tmp = path.join(dir, `${CURRENT_FILE}.tmp`);
    if (await fs.exists(tmp)) await fs.unlink(tmp);
    const cur = await fs.create(tmp);
    const curBytes = Buffer.concat([
      encodeLogFileHeader(CURRENT_MAGIC, n),
      encodeRecord(RECORD_TYPE_CURRENT, 0, Buffer.from(name, "utf8")),
    ]);
    await cur.append(curBytes);
    await cur.sync();
    await cur.close();
    await fs.rename(tmp, path.join(dir, CURRENT_FILE));
    await fs.syncDir(dir);
    w.bytesWritten += curBytes.length;
    return w;
  }

  /** Appends an edit and syncs it: when this returns, the edit has happened. */
  async append(edit: VersionEdit): Promise<void> {
    const rec = encodeRecord(RECORD_TYPE_EDIT, 0, encodeEdit(edit));
    await this.file.append(rec);
    await this.file.sync();
    this.bytesWritten += rec.length;
  }

  get size(): number {
    return this.file.size;
  }

  close(): Promise<void> {
    return this.file.close();
  }
}

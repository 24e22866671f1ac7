/**
 * The cluster key file: the key a node's peer connections are authenticated and encrypted with
 * (transport/peer-keys.ts derives what TLS uses), and at most one more key it accepts while a key is
 * being rotated. A node that creates a cluster writes one to `<data>/cluster.key`; other nodes are given
 * one with `--cluster-key-file F` (or RINGSTORE_CLUSTER_KEY_FILE).
 *
 * Format 1, text, so that an operator can read, copy and edit it (`ringstore cluster-key` does the
 * edits):
 *
 *   # comments and blank lines are ignored
 *   ringstore-cluster-key 1                 magic and format version, the first other line
 *   current rck1_<48 base64url characters>  the key this node connects with (and accepts)
 *   accept rck1_<48 base64url characters>   optional: one more key it accepts
 *
 * A key is written `rck1_` + base64url(32 key bytes || CRC-32 of them, big-endian): the prefix names the
 * key format and its version, and the checksum catches a key damaged when copied by hand, naming its
 * line. The file is a secret: it is written 0600 (FileSystem.create), by a temp file, fsync, rename and a
 * directory fsync, so a crash leaves the old file or the new one.
 *
 * Why one file holding up to two keys, rather than a second flag for the next key: the node re-reads the
 * file when it changes (cluster-key-watch.ts), so a rotation is three edits of each node's file and no
 * restart, and the file in use is the whole truth about a node's keys (a flag would need a restart to
 * add or drop a key, and two places to look).
 */
import { crc32 } from "node:zlib";
import type { FileSystem } from "../storage/fs/file-system.js";
import { CLUSTER_KEY_BYTES } from "../transport/peer-keys.js";
import { ConfigError } from "./config.js";
import { writeFileDurably } from "./durable-file.js";

export const KEY_FILE_MAGIC = "ringstore-cluster-key";
export const KEY_FILE_VERSION = 1;
const KEY_PREFIX = "rck1_";
/** A key file is a few lines; anything much larger is not one. */
export const MAX_KEY_FILE_BYTES = 16 * 1024;

export interface ClusterKeyFile {
  /** The key this node connects with. */
  readonly current: Uint8Array;
  /** One more key it accepts (rotation), if any. */
  readonly accept: Uint8Array | undefined;
}

/** A key as its file line writes it: rck1_ + base64url(key || crc32(key)). */
export function encodeKey(key: Uint8Array): string {
  if (key.length !== CLUSTER_KEY_BYTES) throw new RangeError(`a cluster key is ${CLUSTER_KEY_BYTES} bytes`);
  const b = Buffer.alloc(CLUSTER_KEY_BYTES + 4);
  Buffer.from(key).copy(b);
  b.writeUInt32BE(crc32(key), CLUSTER_KEY_BYTES);
  return `${KEY_PREFIX}${b.toString("base64url")}`;
}

/** The key of `text`, or an error message. */
export function decodeKey(text: string): Uint8Array | string {
  if (!text.startsWith(KEY_PREFIX))
    return `a key starts with ${KEY_PREFIX} (got ${JSON.stringify(text.slice(0, 8))}...)`;
  const body = text.slice(KEY_PREFIX.length);
  if (!/^[A-Za-z0-9_-]+$/.test(body)) return "a key is base64url after its prefix";
  const b = Buffer.from(body, "base64url");
  if (b.length !== CLUSTER_KEY_BYTES + 4)
    return `a key holds ${CLUSTER_KEY_BYTES + 4} bytes (key and checksum), this one ${b.length}`;
  const key = b.subarray(0, CLUSTER_KEY_BYTES);
  if (b.readUInt32BE(CLUSTER_KEY_BYTES) !== crc32(key))
    return "the key's checksum does not match: it was damaged or mistyped when copied";
  return Buffer.from(key);
}

export function encodeKeyFile(k: ClusterKeyFile): string {
  return (
    "# ringstore cluster key: peers authenticate and encrypt their traffic with it. Keep it secret.\n" +
    "# `current` is the key this node connects with; `accept` (optional) one more it accepts.\n" +
    `${KEY_FILE_MAGIC} ${KEY_FILE_VERSION}\n` +
    `current ${encodeKey(k.current)}\n` +
    (k.accept === undefined ? "" : `accept ${encodeKey(k.accept)}\n`)
  );
}

/** Parses a key file's text (`file` names it in errors); ConfigError with the line at fault. */
export function decodeKeyFile(text: string, file: string): ClusterKeyFile {
  const bad = (line: number | undefined, why: string) =>
    new ConfigError(
      `${file}${line === undefined ? "" : `, line ${line}`}: ${why} (a ringstore cluster key file: see ringstore cluster-key --help)`,
    );
  let header = false;
  let current: Uint8Array | undefined;
  let accept: Uint8Array | undefined;
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === "" || line.startsWith("#")) continue;
    const words = line.split(/\s+/);
    if (!header) {
      if (words[0] !== KEY_FILE_MAGIC)
        throw bad(
          i + 1,
          `not a cluster key file (it must begin with "${KEY_FILE_MAGIC} ${KEY_FILE_VERSION}")`,
        );
      if (words.length !== 2 || words[1] !== String(KEY_FILE_VERSION))
        throw bad(
          i + 1,
          `format ${words.slice(1).join(" ")} is not ${KEY_FILE_VERSION}, the one this version reads`,
        );
      header = true;
      continue;
    }
    if (words.length !== 2 || (words[0] !== "current" && words[0] !== "accept"))
      throw bad(i + 1, `expected "current KEY" or "accept KEY", got ${JSON.stringify(line.slice(0, 40))}`);
    const key = decodeKey(words[1]!);
    if (typeof key === "string") throw bad(i + 1, key);
    if (words[0] === "current") {
      if (current !== undefined)
        throw bad(i + 1, "a second current key (a file holds one, and at most one accept)");
      current = key;
    } else {
      if (accept !== undefined)
        throw bad(i + 1, "a second accept key (a file holds one current key and at most one accept)");
      accept = key;
    }
  }
  if (!header) throw bad(undefined, "empty: no cluster key in it");
  if (current === undefined) throw bad(undefined, "no current key");
  return { current, accept };
}

/** Reads and parses a key file through `fs` (ConfigError if it is missing, too large or not one). */
export async function readKeyFile(fs: FileSystem, file: string): Promise<ClusterKeyFile> {
  let data: Buffer;
  try {
    data = await fs.readFile(file);
  } catch (err) {
    throw new ConfigError(`cannot read the cluster key file ${file}: ${(err as Error).message}`);
  }
  if (data.length > MAX_KEY_FILE_BYTES)
    throw new ConfigError(`${file} is ${data.length} bytes: not a cluster key file`);
  return decodeKeyFile(data.toString("utf8"), file);
}

/** Replaces (or creates) a key file durably, mode 0600, in directory `dir` (the file's own). */
export function writeKeyFile(fs: FileSystem, file: string, dir: string, k: ClusterKeyFile): Promise<void> {
  return writeFileDurably(fs, dir, file, encodeKeyFile(k));
}

/** A fresh key from the node's entropy. */
export function newClusterKey(entropy: (bytes: number) => Uint8Array): Uint8Array {
  const k = entropy(CLUSTER_KEY_BYTES);
  if (k.length !== CLUSTER_KEY_BYTES) throw new RangeError("the entropy source gave a short key");
  return Buffer.from(k);
}

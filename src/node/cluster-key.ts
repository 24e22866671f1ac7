/**
 * Which cluster key a node starts with (boot.ts asks before it writes anything), and keeping it current
 * while the node runs.
 *
 * - `--cluster-key-file F` (or RINGSTORE_CLUSTER_KEY_FILE) names the file; it wins whenever given.
 * - Else `<data>/cluster.key`, which a node that created its cluster without F wrote there.
 * - Else a node that creates a cluster makes a fresh key (written to `<data>/cluster.key` once every
 *   check of the start passed: `fresh`); any other node is refused at once, with a sentence saying
 *   what to pass: a joiner needs the cluster's key, and a node that joined with F keeps no copy of its
 *   own (so that a rotation edits one file per node, and a stale copy never shadows the file given).
 * Whether the key is the right one shows when the node talks to its peers (join.ts: a join or a restart
 * that every member answering refuses is refused too).
 */
import type { Timers } from "../runtime/runtime.js";
import type { FileSystem } from "../storage/fs/file-system.js";
import { describePeerKeys, type PeerKeys, peerKeys } from "../transport/peer-keys.js";
import { type ClusterKeyFile, decodeKeyFile, MAX_KEY_FILE_BYTES, newClusterKey } from "./cluster-key-file.js";
import { ConfigError } from "./config.js";
import type { DataDir } from "./data-dir.js";
import type { Entropy } from "./identity.js";
import type { StartPlan } from "./start-plan.js";

export interface ClusterKeyChoice {
  /** The file the key comes from (F, or `<data>/cluster.key`), for messages and for watching. */
  readonly path: string;
  readonly keys: ClusterKeyFile;
  /** A new key, made for a new cluster: the start writes it to `<data>/cluster.key`. */
  readonly fresh: boolean;
}

/** The usual sentence on where a cluster's key is found. */
const WHERE =
  "the key file of the cluster: the cluster.key in the data directory of the node that created it, or the file that node was given";

/** The key a node starts with (ConfigError when it has none, or the file given cannot be used). */
export async function chooseClusterKey(
  dir: DataDir,
  given: string | undefined,
  plan: StartPlan,
  nodeId: string,
  entropy: Entropy,
): Promise<ClusterKeyChoice> {
  if (given !== undefined) return { path: given, keys: await readGiven(dir.fs, given), fresh: false };
  const own = await dir.readClusterKey();
  if (own !== undefined) return { path: dir.clusterKeyFile, keys: own, fresh: false };
  switch (plan.kind) {
    case "create":
      return {
        path: dir.clusterKeyFile,
        keys: { current: newClusterKey(entropy), accept: undefined },
        fresh: true,
      };
    case "join":
      throw new ConfigError(
        `no cluster key given: node ${nodeId} joins a cluster, and peers talk only to a node that holds the cluster's key; pass --cluster-key-file F (or set RINGSTORE_CLUSTER_KEY_FILE=F) with ${WHERE}`,
      );
    case "rejoin":
      throw new ConfigError(
        `no cluster key given: node ${nodeId} belongs to cluster ${plan.identity.clusterId}, and only the node that created a cluster keeps its key in its data directory (${dir.clusterKeyFile}); pass --cluster-key-file F (or set RINGSTORE_CLUSTER_KEY_FILE=F) with ${WHERE}`,
      );
  }
}

async function readGiven(fs: FileSystem, file: string): Promise<ClusterKeyFile> {
  if (!(await fs.exists(file)))
    throw new ConfigError(
      `the cluster key file ${file} (--cluster-key-file or RINGSTORE_CLUSTER_KEY_FILE) does not exist; give ${WHERE}`,
    );
  const data = await fs.readFile(file);
  if (data.length > MAX_KEY_FILE_BYTES)
    throw new ConfigError(`${file} is ${data.length} bytes: not a cluster key file`);
  return decodeKeyFile(data.toString("utf8"), file);
}

/** The transport's keys for a key file. */
export function peerKeysOf(k: ClusterKeyFile): PeerKeys {
  return peerKeys(k.current, k.accept);
}

export interface KeyWatchDeps {
  readonly fs: FileSystem;
  readonly timers: Timers;
  readonly file: string;
  /** The keys now in use (read at start). */
  readonly keys: PeerKeys;
  /** The file changed and holds usable keys: use them. */
  readonly onChange: (keys: PeerKeys, line: string) => void;
  /** The file changed but cannot be used (the keys in use stay): say so. */
  readonly onError: (message: string) => void;
  /** Default 2000 ms. */
  readonly intervalMs?: number;
}

/**
 * Re-reads the key file every `intervalMs` (a few hundred bytes) and takes a change that holds usable
 * keys: a rotation needs no restart. A change that cannot be used (damaged, missing) is reported once and
 * the keys in use stay, so a bad edit does not cut the node off. Returns the function that stops it.
 */
export function watchClusterKey(d: KeyWatchDeps): () => void {
  let current = describePeerKeys(d.keys);
  let lastText: string | undefined;
  let lastError: string | undefined;
  let stopped = false;
  let timer: { cancel(): void } | undefined;
  const look = async () => {
    let text: string;
    try {
      text = (await d.fs.readFile(d.file)).toString("utf8");
    } catch (err) {
      report(
        `cannot read the cluster key file ${d.file} (${(err as Error).message}): the keys in use stay (${current})`,
      );
      return;
    }
    if (text === lastText) return;
    lastText = text;
    let keys: PeerKeys;
    try {
      if (text.length > MAX_KEY_FILE_BYTES)
        throw new Error(`${d.file} is too large to be a cluster key file`);
      keys = peerKeysOf(decodeKeyFile(text, d.file));
    } catch (err) {
      report(
        `the changed cluster key file is not used, the keys in use stay (${current}): ${(err as Error).message}`,
      );
      return;
    }
    lastError = undefined;
    const now = describePeerKeys(keys);
    if (now === current) return;
    current = now;
    d.onChange(keys, `${d.file} changed: peers now connect with ${now}`);
  };
  const report = (message: string) => {
    if (message === lastError) return;
    lastError = message;
    d.onError(message);
  };
  const schedule = () => {
    if (stopped) return;
    timer = d.timers.after(d.intervalMs ?? 2000, () => {
      look().then(schedule, (err: unknown) => {
        report(`watching the cluster key file failed: ${(err as Error).message}`);
        schedule();
      });
    });
  };
  // An unchanged file reads as the keys in use (compared by their ids), so it is not taken again.
  schedule();
  return () => {
    stopped = true;
    timer?.cancel();
  };
}

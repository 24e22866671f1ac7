/**
 * A node's data directory, through the FileSystem interface (so crash tests cover every file the node
 * writes):
 *   node.json     the identity (identity.ts)
 *   cluster.key   the cluster key, written by the node that created the cluster unless it was given one
 *                 with --cluster-key-file (cluster-key-file.ts)
 *   members.json  the saved view (saved-view.ts)
 *   running       present while the node runs; left behind by a crash (an unclean stop)
 *   alive         the last time the node was known to be running (alive.ts)
 *   recovering    present while a replaced disk is refilled by anti-entropy (recovery.ts)
 *   LOCK          the directory's lock, held while a node runs on it
 *   storage/      the storage engine's files
 *
 * Small files are replaced durably (durable-file.ts): the new content goes to `FILE.tmp`, is fsynced,
 * renamed over FILE, and the directory is fsynced, so a crash at any instant leaves either the old file or
 * the new one. Files are created 0600 and the directory is 0700: node.json and cluster.key are secrets.
 */
import * as path from "node:path";
import type { Timers } from "../runtime/runtime.js";
import type { FileSystem } from "../storage/fs/file-system.js";
import { type Alive, decodeAlive, encodeAlive } from "./alive.js";
import { type ClusterKeyFile, readKeyFile, writeKeyFile } from "./cluster-key-file.js";
import { writeFileDurably } from "./durable-file.js";
import { decodeIdentity, encodeIdentity, type NodeIdentity } from "./identity.js";
import { decodeRecovering, encodeRecovering } from "./recovery.js";
import { decodeView, encodeView, type SavedView } from "./saved-view.js";
import { decodeWeight, encodeWeight, type SavedWeight } from "./weight-file.js";

const IDENTITY = "node.json";
const WEIGHT = "weight.json";
/** The cluster key of a node that created its cluster without --cluster-key-file. */
export const CLUSTER_KEY_FILE = "cluster.key";
const LOCK_WAIT_MS = 1000;
const LOCK_RETRY_MS = 50;
const VIEW = "members.json";
const RUNNING = "running";
const ALIVE = "alive";
const RECOVERING = "recovering";

export class DataDir {
  constructor(
    readonly fs: FileSystem,
    readonly root: string,
  ) {}

  /** Where the storage engine keeps its files. */
  get storageDir(): string {
    return path.join(this.root, "storage");
  }

  private file(name: string): string {
    return path.join(this.root, name);
  }

  /** The file's text, or undefined when it does not exist. */
  private async read(name: string): Promise<string | undefined> {
    const p = this.file(name);
    if (!(await this.fs.exists(p))) return undefined;
    return (await this.fs.readFile(p)).toString("utf8");
  }

  private writeDurably(name: string, text: string): Promise<void> {
    return writeFileDurably(this.fs, this.root, this.file(name), text);
  }

  /** Where this node keeps the cluster key it created (`<data>/cluster.key`). */
  get clusterKeyFile(): string {
    return this.file(CLUSTER_KEY_FILE);
  }

  /** The key file in the data directory, or undefined when there is none. */
  async readClusterKey(): Promise<ClusterKeyFile | undefined> {
    if (!(await this.fs.exists(this.clusterKeyFile))) return undefined;
    return readKeyFile(this.fs, this.clusterKeyFile);
  }

  /** Writes `<data>/cluster.key` (a new cluster's key), mode 0600, durably. */
  writeClusterKey(k: ClusterKeyFile): Promise<void> {
    return writeKeyFile(this.fs, this.clusterKeyFile, this.root, k);
  }

  async readIdentity(): Promise<NodeIdentity | undefined> {
    const text = await this.read(IDENTITY);
    return text === undefined ? undefined : decodeIdentity(text, this.file(IDENTITY));
  }

  writeIdentity(id: NodeIdentity): Promise<void> {
    return this.writeDurably(IDENTITY, encodeIdentity(id));
  }

  /** A weight set online (weight-file.ts), if any. */
  async readWeight(): Promise<SavedWeight | undefined> {
    const text = await this.read(WEIGHT);
    return text === undefined ? undefined : decodeWeight(text, this.file(WEIGHT));
  }

  writeWeight(w: SavedWeight): Promise<void> {
    return this.writeDurably(WEIGHT, encodeWeight(w));
  }

  /** Drops the weight set online (the node's --weight changed since). */
  async forgetWeight(): Promise<void> {
    const p = this.file(WEIGHT);
    if (await this.fs.exists(p)) await this.fs.unlink(p);
  }

  async readView(): Promise<SavedView | undefined> {
    const text = await this.read(VIEW);
    return text === undefined ? undefined : decodeView(text, this.file(VIEW));
  }

  writeView(v: SavedView): Promise<void> {
    return this.writeDurably(VIEW, encodeView(v));
  }

  /** The node's heartbeat (alive.ts), if it ever wrote one. */
  async readAlive(): Promise<Alive | undefined> {
    const text = await this.read(ALIVE);
    return text === undefined ? undefined : decodeAlive(text, this.file(ALIVE));
  }

  writeAlive(a: Alive): Promise<void> {
    return this.writeDurably(ALIVE, encodeAlive(a));
  }

  /**
   * The directory, node.json (which holds the cluster secret) and cluster.key are their owner's only: a
   * directory made by an older build kept wider modes until now.
   */
  private async restrict(): Promise<void> {
    await this.fs.chmod(this.root, 0o700);
    for (const name of [IDENTITY, CLUSTER_KEY_FILE]) {
      const p = this.file(name);
      if (await this.fs.exists(p)) await this.fs.chmod(p, 0o600);
    }
  }

  /** When this node's replacement disk began to be refilled (recovery.ts), if it still is. */
  async readRecovering(): Promise<number | undefined> {
    const text = await this.read(RECOVERING);
    return text === undefined ? undefined : decodeRecovering(text, this.file(RECOVERING));
  }

  writeRecovering(sinceMs: number): Promise<void> {
    return this.writeDurably(RECOVERING, encodeRecovering(sinceMs));
  }

  /** The node has recovered: the mark goes, durably. */
  async clearRecovering(): Promise<void> {
    const p = this.file(RECOVERING);
    if (!(await this.fs.exists(p))) return;
    await this.fs.unlink(p);
    await this.fs.syncDir(this.root);
  }

  /** Did the last node on this directory stop without a clean stop (its running marker is still here)? */
  uncleanStop(): Promise<boolean> {
    return this.fs.exists(this.file(RUNNING));
  }

  /** A node runs on this directory from now on (the marker survives a crash). */
  markRunning(): Promise<void> {
    return this.writeDurably(RUNNING, "running\n");
  }

  /** The node stopped cleanly: everything it acknowledged is durable here. */
  async markStopped(): Promise<void> {
    const p = this.file(RUNNING);
    if (!(await this.fs.exists(p))) return;
    await this.fs.unlink(p);
    await this.fs.syncDir(this.root);
  }

  /**
   * Creates the directory if needed and takes its lock (ERR_LOCKED if a live process holds it). A
   * process killed a moment ago may still hold it while the kernel tears it down (a few ms): the lock is
   * asked again for up to LOCK_WAIT_MS before the refusal stands.
   */
  async lock(timers: Timers): Promise<() => Promise<void>> {
    await this.fs.mkdirp(this.root);
    for (let waited = 0; ; waited += LOCK_RETRY_MS) {
      try {
        const release = await this.fs.lock(this.root);
        try {
          await this.restrict();
        } catch (err) {
          await release();
          throw err;
        }
        return release;
      } catch (err) {
        if ((err as { code?: unknown }).code !== "ERR_LOCKED" || waited >= LOCK_WAIT_MS) throw err;
        await new Promise<void>((resolve) => timers.after(LOCK_RETRY_MS, resolve));
      }
    }
  }
}

/**
 * A node's data directory, through the FileSystem interface (so crash tests cover every file the node
 * writes):
 *   node.json     the identity (identity.ts)
 *   members.json  the saved view (saved-view.ts)
 *   running       present while the node runs; left behind by a crash (an unclean stop)
 *   alive         the last time the node was known to be running (alive.ts)
 *   LOCK          the directory's lock, held while a node runs on it
 *   storage/      the storage engine's files
 *
 * Small files are replaced durably: the new content goes to `FILE.tmp`, is fsynced, renamed over FILE,
 * and the directory is fsynced, so a crash at any instant leaves either the old file or the new one.
 */
import * as path from "node:path";
import type { Timers } from "../runtime/runtime.js";
import type { FileSystem } from "../storage/fs/file-system.js";
import { type Alive, decodeAlive, encodeAlive } from "./alive.js";
import { decodeIdentity, encodeIdentity, type NodeIdentity } from "./identity.js";
import { decodeView, encodeView, type SavedView } from "./saved-view.js";

const IDENTITY = "node.json";
const LOCK_WAIT_MS = 1000;
const LOCK_RETRY_MS = 50;
const VIEW = "members.json";
const RUNNING = "running";
const ALIVE = "alive";

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

  private async writeDurably(name: string, text: string): Promise<void> {
    const p = this.file(name);
    const tmp = `${p}.tmp`;
    if (await this.fs.exists(tmp)) await this.fs.unlink(tmp);
    const f = await this.fs.create(tmp);
    try {
      await f.append(Buffer.from(text, "utf8"));
      await f.sync();
    } finally {
      await f.close();
    }
    await this.fs.rename(tmp, p);
    await this.fs.syncDir(this.root);
  }

  async readIdentity(): Promise<NodeIdentity | undefined> {
    const text = await this.read(IDENTITY);
    return text === undefined ? undefined : decodeIdentity(text, this.file(IDENTITY));
  }

  writeIdentity(id: NodeIdentity): Promise<void> {
    return this.writeDurably(IDENTITY, encodeIdentity(id));
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
   * The directory and node.json (which holds the cluster secret) are their owner's only: a directory made
   * by an older build kept wider modes until now.
   */
  private async restrict(): Promise<void> {
    await this.fs.chmod(this.root, 0o700);
    const id = this.file(IDENTITY);
    if (await this.fs.exists(id)) await this.fs.chmod(id, 0o600);
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

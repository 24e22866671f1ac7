/**
 * A disk with latency, for the simulator: a FileSystem that delays every `sync()` of a written file by a
 * seeded draw of virtual time before it reaches the wrapped file system (MemoryFileSystem, whose crash
 * keeps only what was synced). Without it an fsync completes in the same virtual instant it starts, so no
 * crash ever falls between a write being sent and its being durable; with it, a crash does, as on a real
 * disk, and the checkers see what the node does with versions that reached other replicas but not its
 * own disk.
 *
 * Latency per sync: mostly 0.1-1 ms, sometimes 1-5 ms, rarely 5-30 ms (a busy device); while `slow` is
 * set (the nemesis's slow-disk fault: a failing or saturated device) 5-50 ms. A sync pending when the
 * node crashes never completes: its timers are halted with the node, and the crashed file system keeps
 * only what earlier syncs made durable.
 *
 * Deterministic: latencies come from the injected Random, time from the injected Timers.
 */
import type { Random, Timers } from "../runtime/runtime.js";
import type { FileSystem, RandomAccessFile, WritableFile } from "../storage/fs/file-system.js";

export function syncLatencyMs(random: Random, slow: boolean): number {
  const u = random.next();
  const x = random.next();
  if (slow) return 5 + 45 * x;
  if (u < 0.9) return 0.1 + 0.9 * x;
  if (u < 0.99) return 1 + 4 * x;
  return 5 + 25 * x;
}

class SlowFile implements WritableFile {
  constructor(
    private readonly inner: WritableFile,
    private readonly delay: () => Promise<void>,
  ) {}
  get path(): string {
    return this.inner.path;
  }
  get size(): number {
    return this.inner.size;
  }
  get zeroBytesWritten(): number {
    return this.inner.zeroBytesWritten;
  }
  append(data: Uint8Array): Promise<void> {
    return this.inner.append(data);
  }
  appendSync(data: Uint8Array): void {
    this.inner.appendSync(data);
  }
  async sync(): Promise<void> {
    await this.delay();
    await this.inner.sync();
  }
  /** Without latency: it cannot wait for virtual time (the simulator's engines sync asynchronously). */
  syncBlocking(): void {
    this.inner.syncBlocking();
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

export class SlowDisk implements FileSystem {
  private readonly delay: () => Promise<void>;
  /** Set by the nemesis: every sync takes 5-50 ms. */
  slow = false;
  private stalledSyncs: (() => void)[] | undefined;

  constructor(
    private readonly inner: FileSystem,
    timers: Timers,
    random: Random,
  ) {
    this.delay = async () => {
      await new Promise<void>((resolve) => {
        timers.after(syncLatencyMs(random, this.slow), resolve);
      });
      if (this.stalledSyncs !== undefined)
        await new Promise<void>((resolve) => this.stalledSyncs?.push(resolve));
    };
  }

  /** A hung device: while stalled, no sync completes (scenario tests); unstalling lets them finish. */
  get stalled(): boolean {
    return this.stalledSyncs !== undefined;
  }

  set stalled(on: boolean) {
    if (on) this.stalledSyncs ??= [];
    else {
      const waiting = this.stalledSyncs ?? [];
      this.stalledSyncs = undefined;
      for (const go of waiting) go();
    }
  }

  mkdirp(dir: string): Promise<void> {
    return this.inner.mkdirp(dir);
  }
  readdir(dir: string): Promise<string[]> {
    return this.inner.readdir(dir);
  }
  exists(path: string): Promise<boolean> {
    return this.inner.exists(path);
  }
  async create(path: string, options?: { readonly preallocateBytes?: number }): Promise<WritableFile> {
    return new SlowFile(await this.inner.create(path, options), this.delay);
  }
  openRead(path: string): Promise<RandomAccessFile> {
    return this.inner.openRead(path);
  }
  readFile(path: string): Promise<Buffer> {
    return this.inner.readFile(path);
  }
  rename(from: string, to: string): Promise<void> {
    return this.inner.rename(from, to);
  }
  unlink(path: string): Promise<void> {
    return this.inner.unlink(path);
  }
  truncate(path: string, length: number): Promise<void> {
    return this.inner.truncate(path, length);
  }
  async syncDir(dir: string): Promise<void> {
    await this.delay();
    await this.inner.syncDir(dir);
  }
  lock(dir: string): Promise<() => Promise<void>> {
    return this.inner.lock(dir);
  }
  chmod(p: string, mode: number): Promise<void> {
    return this.inner.chmod(p, mode);
  }

  lockShared(dir: string): Promise<() => Promise<void>> {
    return this.inner.lockShared(dir);
  }
}

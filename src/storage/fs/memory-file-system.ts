/**
 * An in-memory file system with power-loss simulation: the twin of NodeFileSystem used by tests and
 * the simulator.
 *
 * It enforces the durability model of file-system.ts strictly. `crash()` makes the file system look as
 * it would after a power cut: every directory shows the entries it had at its last `syncDir()`, and every
 * file keeps only the bytes covered by its last `sync()`. Optionally (`unsynced: "torn"`) a random prefix
 * of the unsynced tail survives, or (`"zeroed"`) survives as zeros, as on file systems that persist a
 * file's new size before its data. Handles opened before a crash fail afterwards.
 */
import * as path from "node:path";
import { LockedError } from "../errors.js";
import type { FileSystem, RandomAccessFile, WritableFile } from "./file-system.js";

interface Inode {
  data: Buffer;
  length: number;
  synced: number;
}

export interface CrashOptions {
  /** What happens to bytes appended but not synced. Default "drop". */
  readonly unsynced?: "drop" | "torn" | "zeroed";
  /** Random source in [0, 1) for "torn" and "zeroed" (seeded in tests). */
  readonly random?: () => number;
}

function errnoError(code: string, message: string): NodeJS.ErrnoException {
  const e = new Error(`${code}: ${message}`) as NodeJS.ErrnoException;
  e.code = code;
  return e;
}

export class MemoryFileSystem implements FileSystem {
  private entries = new Map<string, Inode>();
  private durableEntries = new Map<string, Inode>();
  private readonly dirs = new Set<string>(["/", "."]);
  private generation = 0;
  /** Directory -> its lock's holders: "exclusive", or the number of shared holders. */
  private readonly locks = new Map<string, "exclusive" | number>();
  /** Counts of calls, for tests that check the engine syncs what it must. */
  syncs = 0;
  dirSyncs = 0;

  private norm(p: string): string {
    return path.normalize(p);
  }

  private checkGeneration(gen: number, p: string): void {
    if (gen !== this.generation) throw errnoError("EBADF", `${p}: handle opened before a simulated crash`);
  }

  private requireDir(dir: string): void {
    if (!this.dirs.has(this.norm(dir))) throw errnoError("ENOENT", `no such directory ${dir}`);
  }

  async mkdirp(dir: string): Promise<void> {
    let d = this.norm(dir);
    while (!this.dirs.has(d)) {
      this.dirs.add(d);
      d = path.dirname(d);
    }
  }

  async readdir(dir: string): Promise<string[]> {
    const d = this.norm(dir);
    this.requireDir(d);
    const out: string[] = [];
    for (const p of this.entries.keys()) if (path.dirname(p) === d) out.push(path.basename(p));
    return out.sort();
  }

  async exists(p: string): Promise<boolean> {
    const n = this.norm(p);
    return this.entries.has(n) || this.dirs.has(n);
  }

  async create(p: string, options: { readonly preallocateBytes?: number } = {}): Promise<WritableFile> {
    const prealloc = options.preallocateBytes ?? 0;
    const n = this.norm(p);
    this.requireDir(path.dirname(n));
    if (this.entries.has(n)) throw errnoError("EEXIST", `file exists: ${p}`);
    const inode: Inode = { data: Buffer.alloc(256), length: 0, synced: 0 };
    this.entries.set(n, inode);
    const gen = this.generation;
    const check = () => this.checkGeneration(gen, p);
    let closed = false;
    // Appends go at `pos`; with preallocation the file's length runs ahead of it, filled with zeros.
    let pos = 0;
    let zeroBytes = 0;
    const appendSync = (data: Uint8Array): void => {
      check();
      if (closed) throw errnoError("EBADF", `${p} is closed`);
      let need = Math.max(inode.length, pos + data.length);
      if (prealloc > 0 && pos + data.length > inode.length) {
        const grow = Math.max(prealloc, pos + data.length - inode.length);
        need = inode.length + grow;
        zeroBytes += grow;
      }
      if (need > inode.data.length) {
        const grown = Buffer.alloc(Math.max(need, inode.data.length * 2));
        inode.data.copy(grown, 0, 0, inode.length);
        inode.data = grown;
      }
      inode.data.fill(0, inode.length, need);
      inode.data.set(data, pos);
      pos += data.length;
      inode.length = need;
    };
    const syncBlocking = (): void => {
      check();
      this.syncs++;
      // Only appended bytes count as synced: zeros written ahead may or may not survive a crash.
      inode.synced = Math.max(inode.synced, pos);
    };
    return {
      path: p,
      get size() {
        return pos;
      },
      get zeroBytesWritten() {
        return zeroBytes;
      },
      async append(data: Uint8Array): Promise<void> {
        appendSync(data);
      },
      appendSync,
      async sync(): Promise<void> {
        syncBlocking();
      },
      syncBlocking,
      async close(): Promise<void> {
        closed = true;
      },
    };
  }

  async openRead(p: string): Promise<RandomAccessFile> {
    const n = this.norm(p);
    const inode = this.entries.get(n);
    if (!inode) throw errnoError("ENOENT", `no such file ${p}`);
    const gen = this.generation;
    const size = inode.length;
    const readSync = (position: number, length: number): Buffer => {
      this.checkGeneration(gen, p);
      if (position + length > inode.length)
        throw new Error(
          `short read of ${p}: wanted ${length} bytes at ${position}, file has ${inode.length}`,
        );
      return Buffer.from(inode.data.subarray(position, position + length));
    };
    return {
      path: p,
      size,
      read: async (position: number, length: number): Promise<Buffer> => readSync(position, length),
      readSync,
      readIntoSync: (buf: Buffer, offset: number, length: number, position: number): void => {
        this.checkGeneration(gen, p);
        if (position + length > inode.length)
          throw new Error(
            `short read of ${p}: wanted ${length} bytes at ${position}, file has ${inode.length}`,
          );
        inode.data.copy(buf, offset, position, position + length);
      },
      close: async () => {},
    };
  }

  async readFile(p: string): Promise<Buffer> {
    const inode = this.entries.get(this.norm(p));
    if (!inode) throw errnoError("ENOENT", `no such file ${p}`);
    return Buffer.from(inode.data.subarray(0, inode.length));
  }

  async rename(from: string, to: string): Promise<void> {
    const f = this.norm(from);
    const t = this.norm(to);
    const inode = this.entries.get(f);
    if (!inode) throw errnoError("ENOENT", `no such file ${from}`);
    this.requireDir(path.dirname(t));
    this.entries.delete(f);
    this.entries.set(t, inode);
  }

  async unlink(p: string): Promise<void> {
    const n = this.norm(p);
    if (!this.entries.delete(n)) throw errnoError("ENOENT", `no such file ${p}`);
  }

  async truncate(p: string, length: number): Promise<void> {
    const inode = this.entries.get(this.norm(p));
    if (!inode) throw errnoError("ENOENT", `no such file ${p}`);
    if (length < inode.length) inode.length = length;
    inode.synced = inode.length;
  }

  async syncDir(dir: string): Promise<void> {
    const d = this.norm(dir);
    this.requireDir(d);
    this.dirSyncs++;
    for (const p of [...this.durableEntries.keys()]) if (path.dirname(p) === d) this.durableEntries.delete(p);
    for (const [p, inode] of this.entries) if (path.dirname(p) === d) this.durableEntries.set(p, inode);
  }

  async lock(dir: string): Promise<() => Promise<void>> {
    const d = this.norm(dir);
    const held = this.locks.get(d);
    if (held !== undefined) throw new LockedError(dir, { readers: held !== "exclusive" });
    this.locks.set(d, "exclusive");
    return this.releaser(() => this.locks.delete(d));
  }

  /** Modes are not kept; the path must exist. */
  async chmod(p: string, _mode: number): Promise<void> {
    if (!this.dirs.has(this.norm(p)) && !this.entries.has(this.norm(p)))
      throw errnoError("ENOENT", `no such file ${p}`);
  }

  async lockShared(dir: string): Promise<() => Promise<void>> {
    const d = this.norm(dir);
    const held = this.locks.get(d);
    if (held === "exclusive") throw new LockedError(dir, {});
    this.locks.set(d, (held ?? 0) + 1);
    return this.releaser(() => {
      const n = this.locks.get(d);
      if (typeof n !== "number" || n < 1) throw new Error(`lockShared: ${d} has no shared holder to release`);
      if (n === 1) this.locks.delete(d);
      else this.locks.set(d, n - 1);
    });
  }

  /** A release that acts once, and not at all after a crash (which released every lock already). */
  private releaser(release: () => void): () => Promise<void> {
    const gen = this.generation;
    let done = false;
    return async () => {
      if (done || gen !== this.generation) return;
      done = true;
      release();
    };
  }

  /** Simulates a power loss: see the file comment. Open handles become invalid. */
  crash(options: CrashOptions = {}): void {
    const mode = options.unsynced ?? "drop";
    const random = options.random;
    if (mode !== "drop" && !random)
      throw new Error("crash: a random source is needed for torn or zeroed tails");
    this.generation++;
    this.locks.clear();
    const seen = new Set<Inode>();
    const next = new Map<string, Inode>();
    for (const [p, inode] of this.durableEntries) {
      if (!seen.has(inode)) {
        seen.add(inode);
        let keep = inode.synced;
        const unsynced = inode.length - inode.synced;
        if (unsynced > 0 && mode !== "drop") {
          const extra = Math.floor(random!() * (unsynced + 1));
          if (mode === "zeroed") inode.data.fill(0, inode.synced, inode.synced + extra);
          keep += extra;
        }
        inode.length = keep;
        inode.synced = keep;
      }
      next.set(p, inode);
    }
    this.entries = next;
    this.durableEntries = new Map(next);
  }

  /** Test hook: flips bits of one byte of a file in place (durably), to test corruption detection. */
  corruptByte(p: string, offset: number, xor = 0xff): void {
    const inode = this.entries.get(this.norm(p));
    if (!inode) throw errnoError("ENOENT", `no such file ${p}`);
    if (offset < 0 || offset >= inode.length) throw new RangeError(`offset ${offset} outside ${p}`);
    inode.data[offset]! ^= xor;
  }

  /** Test hook: the current length of a file. */
  fileSize(p: string): number {
    const inode = this.entries.get(this.norm(p));
    if (!inode) throw errnoError("ENOENT", `no such file ${p}`);
    return inode.length;
  }
}

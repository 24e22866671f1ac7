/**
 * The real file system, through node:fs. The only file of the storage layer that touches the disk.
 * Callback-style fs calls wrapped in promises: measurably cheaper per call than FileHandle methods.
 *
 * The directory lock is an advisory lock the kernel holds for the open file (see `lock`); Node.js has no
 * API for one, so it comes from the fs-native-extensions addon (prebuilt inside its npm package).
 */
import * as fs from "node:fs";
import { createRequire } from "node:module";
import * as path from "node:path";
import { LockedError, StorageIoError } from "../errors.js";
import type { FileSystem, RandomAccessFile, WritableFile } from "./file-system.js";

function fsWrite(fd: number, data: Uint8Array, offset: number, length: number): Promise<number> {
  return new Promise((resolve, reject) => {
    fs.write(fd, data, offset, length, null, (err, written) => (err ? reject(err) : resolve(written)));
  });
}

function fsDatasync(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fs.fdatasync(fd, (err) => (err ? reject(err) : resolve())));
}

function fsFsync(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fs.fsync(fd, (err) => (err ? reject(err) : resolve())));
}

function fsClose(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fs.close(fd, (err) => (err ? reject(err) : resolve())));
}

function fsOpen(p: string, flags: string | number): Promise<number> {
  return new Promise((resolve, reject) =>
    // Readable by the owner only: a node's files hold its cluster's secret and its users' data.
    fs.open(p, flags, 0o600, (err, fd) => (err ? reject(err) : resolve(fd))),
  );
}

class NodeWritableFile implements WritableFile {
  size = 0;
  zeroBytesWritten = 0;
  private allocated = 0;
  constructor(
    readonly path: string,
    private readonly fd: number,
    private readonly preallocateBytes: number,
  ) {}

  async append(data: Uint8Array): Promise<void> {
    if (this.preallocateBytes > 0) {
      this.appendSync(data);
      return;
    }
    let off = 0;
    while (off < data.length) {
      const n = await fsWrite(this.fd, data, off, data.length - off);
      off += n;
    }
    this.size += data.length;
  }

  appendSync(data: Uint8Array): void {
    if (this.preallocateBytes > 0 && this.size + data.length > this.allocated) {
      const grow = Math.max(this.preallocateBytes, this.size + data.length - this.allocated);
      const zeros = Buffer.alloc(grow);
      let z = 0;
      while (z < grow) z += fs.writeSync(this.fd, zeros, z, grow - z, this.allocated + z);
      this.allocated += grow;
      this.zeroBytesWritten += grow;
    }
    let off = 0;
    while (off < data.length) off += fs.writeSync(this.fd, data, off, data.length - off, this.size + off);
    this.size += data.length;
  }

  sync(): Promise<void> {
    return fsDatasync(this.fd);
  }

  syncBlocking(): void {
    fs.fdatasyncSync(this.fd);
  }

  close(): Promise<void> {
    return fsClose(this.fd);
  }
}

class NodeRandomAccessFile implements RandomAccessFile {
  constructor(
    readonly path: string,
    private readonly fd: number,
    readonly size: number,
  ) {}

  read(position: number, length: number): Promise<Buffer> {
    const buf = Buffer.allocUnsafe(length);
    return new Promise((resolve, reject) => {
      fs.read(this.fd, buf, 0, length, position, (err, n) => {
        if (err) reject(err);
        else if (n !== length)
          reject(new Error(`short read of ${this.path}: wanted ${length} bytes at ${position}, got ${n}`));
        else resolve(buf);
      });
    });
  }

  readSync(position: number, length: number): Buffer {
    const buf = Buffer.allocUnsafe(length);
    this.readIntoSync(buf, 0, length, position);
    return buf;
  }

  readIntoSync(buf: Buffer, offset: number, length: number, position: number): void {
    const n = fs.readSync(this.fd, buf, offset, length, position);
    if (n !== length)
      throw new Error(`short read of ${this.path}: wanted ${length} bytes at ${position}, got ${n}`);
  }

  close(): Promise<void> {
    return fsClose(this.fd);
  }
}

export class NodeFileSystem implements FileSystem {
  /**
   * `locks` replaces the OS's lock calls, for a test that shows what happens on a file system without
   * file locks (none is at hand to mount); everything else always uses the real ones.
   */
  constructor(private readonly locks?: FileLocks) {}

  chmod(p: string, mode: number): Promise<void> {
    return fs.promises.chmod(p, mode);
  }

  async mkdirp(dir: string): Promise<void> {
    await fs.promises.mkdir(dir, { recursive: true, mode: 0o700 });
  }

  readdir(dir: string): Promise<string[]> {
    return fs.promises.readdir(dir);
  }

  async exists(p: string): Promise<boolean> {
    try {
      await fs.promises.stat(p);
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
      throw err;
    }
  }

  async create(p: string, options: { readonly preallocateBytes?: number } = {}): Promise<WritableFile> {
    const fd = await fsOpen(p, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL);
    return new NodeWritableFile(p, fd, options.preallocateBytes ?? 0);
  }

  async openRead(p: string): Promise<RandomAccessFile> {
    const fd = await fsOpen(p, "r");
    try {
      const st = fs.fstatSync(fd);
      return new NodeRandomAccessFile(p, fd, st.size);
    } catch (err) {
      await fsClose(fd);
      throw err;
    }
  }

  readFile(p: string): Promise<Buffer> {
    return fs.promises.readFile(p);
  }

  rename(from: string, to: string): Promise<void> {
    return fs.promises.rename(from, to);
  }

  unlink(p: string): Promise<void> {
    return fs.promises.unlink(p);
  }

  async truncate(p: string, length: number): Promise<void> {
    const fd = await fsOpen(p, "r+");
    try {
      await new Promise<void>((resolve, reject) =>
        fs.ftruncate(fd, length, (e) => (e ? reject(e) : resolve())),
      );
      await fsFsync(fd);
    } finally {
      await fsClose(fd);
    }
  }

  /**
   * An exclusive advisory lock on `dir/LOCK`, held by this open file: on Linux an open-file-description
   * lock (fcntl F_OFD_SETLK), which the kernel drops when the file's last descriptor closes, so when the
   * process exits or is killed (a zombie holds no files). No stale lock survives a crash, a reboot or a
   * reused pid, and whether the lock is free is never decided from a pid. Two opens in one process
   * conflict too (each open is its own description). The holder's pid is written into LOCK for messages;
   * a release empties the file again. LOCK itself is never removed: a holder that unlinked it could let
   * a second process lock a new LOCK while a third still held the old one. A file system that cannot
   * lock is an error, never a reason to run unlocked.
   */
  async lock(dir: string): Promise<() => Promise<void>> {
    const p = path.join(dir, LOCK_FILE);
    const fd = await fsOpen(p, fs.constants.O_RDWR | fs.constants.O_CREAT);
    try {
      const locks = this.fileLocks();
      if (!tryLockFile(locks, fd, p, false)) {
        // A shared lock taken where the exclusive one was refused: only readers hold it (they write no
        // pid, so the pid in LOCK would be a past holder's). Closing the file drops it again.
        if (tryLockFile(locks, fd, p, true)) throw new LockedError(dir, { readers: true });
        throw new LockedError(dir, { pid: holderPid(fd) });
      }
      fs.ftruncateSync(fd, 0);
      fs.writeSync(fd, `${process.pid}\n`, 0);
    } catch (err) {
      await fsClose(fd);
      throw err;
    }
    let released = false;
    return async () => {
      if (released) return;
      released = true;
      try {
        fs.ftruncateSync(fd, 0);
      } finally {
        // Closing the file releases the lock whatever happens to the rest.
        await fsClose(fd);
      }
    };
  }

  /** See FileSystem.lockShared: a shared lock on `dir/LOCK` through a read-only descriptor, if LOCK exists. */
  async lockShared(dir: string): Promise<() => Promise<void>> {
    const p = path.join(dir, LOCK_FILE);
    let fd: number;
    try {
      fd = await fsOpen(p, fs.constants.O_RDONLY);
    } catch (err) {
      // Never locked, so held by no one; a read-only open does not create it.
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return async () => {};
      throw err;
    }
    try {
      if (!tryLockFile(this.fileLocks(), fd, p, true)) throw new LockedError(dir, { pid: holderPid(fd) });
    } catch (err) {
      await fsClose(fd);
      throw err;
    }
    let released = false;
    return async () => {
      if (released) return;
      released = true;
      await fsClose(fd);
    };
  }

  private fileLocks(): FileLocks {
    return this.locks ?? nativeFileLocks();
  }

  async syncDir(dir: string): Promise<void> {
    const fd = await fsOpen(path.resolve(dir), "r");
    try {
      await fsFsync(fd);
    } finally {
      await fsClose(fd);
    }
  }
}

const LOCK_FILE = "LOCK";

/** The advisory-lock calls of fs-native-extensions, on a file descriptor (whole file). */
export interface FileLocks {
  /** True if taken; false if another holder has a conflicting lock; throws on any other failure. */
  tryLock(fd: number, offset: number, length: number, opts: { shared: boolean }): boolean;
}

let native: FileLocks | undefined;

/** Loaded at the first lock, so that a platform without the addon fails there, with a sentence. */
function nativeFileLocks(): FileLocks {
  if (native === undefined) {
    try {
      native = createRequire(import.meta.url)("fs-native-extensions") as FileLocks;
    } catch (err) {
      throw new StorageIoError(
        `cannot load the file-lock addon (fs-native-extensions) on ${process.platform}-${process.arch}: ringstore locks its data directory with it and will not run unlocked`,
        err,
      );
    }
  }
  return native;
}

/** Errors of fcntl/flock that mean the file system (or kernel) has no such lock, not that it is taken. */
const LOCKS_UNSUPPORTED = new Set(["ENOLCK", "EINVAL", "EOPNOTSUPP", "ENOTSUP", "ENOSYS"]);

function tryLockFile(locks: FileLocks, fd: number, p: string, shared: boolean): boolean {
  try {
    return locks.tryLock(fd, 0, 0, { shared });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // POSIX lets a refused lock fail with EACCES as well as EAGAIN (which the addon reports as false).
    if (code === "EACCES") return false;
    if (code !== undefined && LOCKS_UNSUPPORTED.has(code))
      throw new StorageIoError(
        `cannot lock ${p}: its file system does not support file locks (${code}); ringstore will not run on a data directory it cannot lock: put it on a local file system (ext4, xfs, btrfs, tmpfs)`,
        err,
      );
    throw new StorageIoError(`cannot lock ${p}`, err);
  }
}

/** The pid a LOCK file names (for a message), or undefined if it names none. */
function holderPid(fd: number): number | undefined {
  const buf = Buffer.alloc(32);
  let n: number;
  try {
    n = fs.readSync(fd, buf, 0, buf.length, 0);
  } catch (err) {
    // Only a message loses its pid: the lock itself was decided by the kernel.
    void err;
    return undefined;
  }
  const m = /^(\d{1,10})\n?$/.exec(buf.toString("latin1", 0, n));
  const pid = m === null ? Number.NaN : Number(m[1]);
  return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
}

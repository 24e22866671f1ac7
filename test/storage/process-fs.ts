/**
 * One process's access to a shared MemoryFileSystem, for simulated power loss: `kill()` ends it, and a
 * dead process makes no more calls. Without it an engine abandoned at a crash would go on creating and
 * deleting files in the "rebooted" file system, next to the new engine (a zombie a real power cut cannot
 * produce).
 */
import type {
  FileSystem,
  MemoryFileSystem,
  RandomAccessFile,
  WritableFile,
} from "../../src/storage/index.js";

function deadProcess(): NodeJS.ErrnoException {
  const e = new Error("EBADF: the process died in a simulated power loss") as NodeJS.ErrnoException;
  e.code = "EBADF";
  return e;
}

/**
 * One process's access to the shared MemoryFileSystem; `kill()` ends it (see the file comment).
 * `beforeSync` is called with the file's path before each file sync: a test can cut the power there, in
 * the window between an append and its sync.
 */
export class ProcessFs implements FileSystem {
  private dead = false;
  beforeSync: ((path: string) => void) | undefined;
  constructor(private readonly fs: MemoryFileSystem) {}
  kill(): void {
    this.dead = true;
  }
  private async call<T>(f: () => Promise<T>): Promise<T> {
    if (this.dead) throw deadProcess();
    return f();
  }
  mkdirp = (d: string) => this.call(() => this.fs.mkdirp(d));
  readdir = (d: string) => this.call(() => this.fs.readdir(d));
  exists = (p: string) => this.call(() => this.fs.exists(p));
  create = (p: string, options?: { readonly preallocateBytes?: number }): Promise<WritableFile> =>
    this.call(async () => {
      const f = await this.fs.create(p, options);
      const sync = async () => {
        this.beforeSync?.(p);
        return f.sync();
      };
      const syncBlocking = () => {
        if (this.dead) throw deadProcess();
        this.beforeSync?.(p);
        f.syncBlocking();
      };
      return {
        path: f.path,
        get size() {
          return f.size;
        },
        get zeroBytesWritten() {
          return f.zeroBytesWritten;
        },
        append: (data: Uint8Array) => f.append(data),
        appendSync: (data: Uint8Array) => f.appendSync(data),
        sync,
        syncBlocking,
        close: () => f.close(),
      };
    });
  openRead = (p: string): Promise<RandomAccessFile> => this.call(() => this.fs.openRead(p));
  readFile = (p: string) => this.call(() => this.fs.readFile(p));
  rename = (a: string, c: string) => this.call(() => this.fs.rename(a, c));
  unlink = (p: string) => this.call(() => this.fs.unlink(p));
  truncate = (p: string, n: number) => this.call(() => this.fs.truncate(p, n));
  syncDir = (d: string) => this.call(() => this.fs.syncDir(d));
  lock = (d: string) => this.call(() => this.fs.lock(d));
  lockShared = (d: string) => this.call(() => this.fs.lockShared(d));
  chmod = (p: string, m: number) => this.call(() => this.fs.chmod(p, m));
}

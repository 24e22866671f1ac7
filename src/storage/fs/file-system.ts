/**
 * The file-system interface through which the storage engine does all of its I/O.
 *
 * Two implementations: `NodeFileSystem` (the real disk) and `MemoryFileSystem` (in memory, with a
 * `crash()` that keeps only what was made durable, to test crash safety the way LevelDB's
 * fault_injection_test does). The engine never imports node:fs.
 *
 * Durability model (what the engine relies on, and what the memory twin enforces):
 * - Appended bytes survive a power loss only after `sync()` on that file returned.
 * - A created, renamed or removed directory entry survives only after `syncDir()` on its directory.
 * - Files are written once, by appending, and never modified in place.
 */
export interface WritableFile {
  readonly path: string;
  /** Bytes appended so far. */
  readonly size: number;
  /** Zeros written ahead by preallocation (they count as disk writes). */
  readonly zeroBytesWritten: number;
  append(data: Uint8Array): Promise<void>;
  /**
   * Appends synchronously: one write() into the page cache, without a thread-pool round trip. For the
   * WAL's small group writes, where the round trip would cost more than the write (LevelDB writes its log
   * the same way). Blocks the event loop for the duration of the system call.
   */
  appendSync(data: Uint8Array): void;
  /** Makes every appended byte durable (fdatasync, through the thread pool). */
  sync(): Promise<void>;
  /**
   * The same, synchronously, on the calling thread: blocks the event loop for the device's flush but saves
   * the thread-pool hand-off, which can cost more CPU than the sync itself (docs/performance.md, "storage
   * write path"). For the WAL's group commit (see LsmOptions.walSyncOnEventLoop).
   */
  syncBlocking(): void;
  close(): Promise<void>;
}

export interface RandomAccessFile {
  readonly path: string;
  readonly size: number;
  /** Reads exactly `length` bytes at `position`; fails if the file is shorter. */
  read(position: number, length: number): Promise<Buffer>;
  /**
   * The same, synchronously: one pread. From the page cache that is an order of magnitude cheaper than a
   * read through libuv's thread pool (docs/performance.md, "first storage choices"); a read that must
   * wait for the device blocks the event loop.
   */
  readSync(position: number, length: number): Buffer;
  /** The same into `buf` at `offset` (a buffer the caller reuses: no allocation). */
  readIntoSync(buf: Buffer, offset: number, length: number, position: number): void;
  close(): Promise<void>;
}

export interface FileSystem {
  mkdirp(dir: string): Promise<void>;
  /** Names (not paths) of the entries of `dir`. */
  readdir(dir: string): Promise<string[]>;
  exists(path: string): Promise<boolean>;
  /**
   * Creates a new file for appending; fails if it exists. With `preallocateBytes`, zeros are written ahead
   * of the appends in chunks of that size, so that appends overwrite allocated blocks and a sync need not
   * commit a new file size (an fdatasync then costs about half: docs/performance.md, "first storage
   * choices"). Readers of such a file see zeros after the appended bytes. `size` counts appended bytes
   * only; `zeroBytesWritten` the zeros.
   */
  create(path: string, options?: { readonly preallocateBytes?: number }): Promise<WritableFile>;
  openRead(path: string): Promise<RandomAccessFile>;
  readFile(path: string): Promise<Buffer>;
  rename(from: string, to: string): Promise<void>;
  unlink(path: string): Promise<void>;
  /** Truncates an existing file to `length` bytes and makes that durable. */
  truncate(path: string, length: number): Promise<void>;
  /** Makes the directory's entries (creations, renames, removals) durable. */
  syncDir(dir: string): Promise<void>;
  /**
   * Takes the exclusive lock of a data directory, so that two engines never open it at once. Fails with a
   * LockedError (code ERR_LOCKED) while another holder has it, exclusive or shared. A holder's death
   * releases it (the kernel's lock goes with the process; the memory twin's with a crash). The returned
   * function releases it.
   */
  lock(dir: string): Promise<() => Promise<void>>;
  /**
   * A shared hold of the same lock, for a read-only open: it writes nothing, creates no file (a directory
   * that was never locked has nothing to hold, and the hold is empty), and fails with a LockedError while
   * an exclusive holder has the lock. Shared holders do not exclude each other. The returned function
   * releases it.
   */
  lockShared(dir: string): Promise<() => Promise<void>>;
  /**
   * Sets a file's or directory's permission bits (POSIX `mode`, e.g. 0o600): a data directory and the
   * files holding secrets are its owner's only. An in-memory file system keeps no modes.
   */
  chmod(path: string, mode: number): Promise<void>;
}

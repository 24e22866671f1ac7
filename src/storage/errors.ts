/**
 * Typed storage errors. Each has a stable `code` that callers can switch on, and keeps its `cause`.
 *
 * - `CorruptionError` (`ERR_CORRUPTION`): on-disk bytes failed a check (magic, version, checksum,
 *   structure). It names the file and the byte offset. Data that fails a check is never returned.
 * - `StorageClosedError` (`ERR_CLOSED`): the engine was closed.
 * - `InvalidArgumentError` (`ERR_INVALID_ARGUMENT`): a caller passed a bad key, value or option.
 * - `StorageIoError` (`ERR_IO`): the file system failed; the engine stops taking writes after one
 *   (it cannot know what reached the disk), and reports it on every later write.
 * - `LockedError` (`ERR_LOCKED`): another process (or another engine in this one) holds the data
 *   directory's lock. It names the holder's pid when the LOCK file gives it (for the message only).
 * - `NoStoreError` (`ERR_NOT_FOUND`): a read-only open found no store: the directory is missing or holds
 *   none of a store's files (a read-only open never creates one).
 * - `ReadOnlyError` (`ERR_READ_ONLY`): a write, or a flush, to an engine opened read-only.
 */
export type StorageErrorCode =
  | "ERR_CORRUPTION"
  | "ERR_CLOSED"
  | "ERR_INVALID_ARGUMENT"
  | "ERR_IO"
  | "ERR_LOCKED"
  | "ERR_NOT_FOUND"
  | "ERR_READ_ONLY";

export class StorageError extends Error {
  readonly code: StorageErrorCode;
  constructor(code: StorageErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = "StorageError";
  }
}

export class CorruptionError extends StorageError {
  readonly file: string;
  readonly offset: number;
  constructor(file: string, offset: number, what: string, options?: { cause?: unknown }) {
    super("ERR_CORRUPTION", `corruption in ${file} at offset ${offset}: ${what}`, options);
    this.name = "CorruptionError";
    this.file = file;
    this.offset = offset;
  }
}

export class StorageClosedError extends StorageError {
  constructor() {
    super("ERR_CLOSED", "storage engine is closed");
    this.name = "StorageClosedError";
  }
}

export class InvalidArgumentError extends StorageError {
  constructor(message: string) {
    super("ERR_INVALID_ARGUMENT", message);
    this.name = "InvalidArgumentError";
  }
}

export class StorageIoError extends StorageError {
  constructor(message: string, cause: unknown) {
    super("ERR_IO", message, { cause });
    this.name = "StorageIoError";
  }
}

export class LockedError extends StorageError {
  readonly dir: string;
  /** The holder's pid as its LOCK file gives it, if readable: for messages, never to decide. */
  readonly holderPid: number | undefined;
  /** Only readers (read-only opens, which write no pid) hold it. */
  readonly readers: boolean;
  constructor(dir: string, holder: { readonly pid?: number | undefined; readonly readers?: boolean }) {
    const readers = holder.readers === true;
    const who = readers
      ? "a read-only inspection (ringstore storage stats) is reading it; try again once it has finished"
      : `another process${holder.pid === undefined ? "" : ` (pid ${holder.pid})`} holds its lock. Stop that ringstore node (or the command using the directory) first; the lock is released the moment its process exits`;
    super("ERR_LOCKED", `data directory ${dir} is in use: ${who}`);
    this.name = "LockedError";
    this.dir = dir;
    this.holderPid = readers ? undefined : holder.pid;
    this.readers = readers;
  }
}

export class NoStoreError extends StorageError {
  readonly dir: string;
  constructor(dir: string, why: string, options?: { cause?: unknown }) {
    super("ERR_NOT_FOUND", `no store in ${dir}: ${why}`, options);
    this.name = "NoStoreError";
    this.dir = dir;
  }
}

export class ReadOnlyError extends StorageError {
  constructor(what: string) {
    super("ERR_READ_ONLY", `${what}: the storage engine was opened read-only`);
    this.name = "ReadOnlyError";
  }
}

/**
 * Typed storage errors. Each has a stable `code` that callers can switch on, and keeps its `cause`.
 *
 * - `CorruptionError` (`ERR_CORRUPTION`): on-disk bytes failed a check (magic, version, checksum,
 *   structure). It names the file and the byte offset. Data that fails a check is never returned.
 * - `StorageClosedError` (`ERR_CLOSED`): the engine was closed.
 * - `InvalidArgumentError` (`ERR_INVALID_ARGUMENT`): a caller passed a bad key, value or option.
 * - `StorageIoError` (`ERR_IO`): the file system failed; the engine stops taking writes after one
 *   (it cannot know what reached the disk), and reports it on every later write.
 * - `LockedError` (`ERR_LOCKED`): another live process holds the data directory.
 */
export type StorageErrorCode =
  | "ERR_CORRUPTION"
  | "ERR_CLOSED"
  | "ERR_INVALID_ARGUMENT"
  | "ERR_IO"
  | "ERR_LOCKED";

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

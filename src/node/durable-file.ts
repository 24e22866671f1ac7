/**
 * Small files of the data directory (node.json, members.json, the running marker), read, and written
 * so that a crash at any instant leaves either the old file or the new one, whole: the new content goes
 * to `FILE.tmp`, is fsynced, renamed over FILE, and the directory is fsynced (the rename itself durable).
 */
import * as fs from "node:fs";
import * as path from "node:path";

export function writeFileDurably(file: string, text: string): void {
  const tmp = `${file}.tmp`;
  const fd = fs.openSync(tmp, "w");
  try {
    fs.writeFileSync(fd, text); // every byte (a single writeSync may write fewer)
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
  const dir = fs.openSync(path.dirname(file), "r");
  try {
    fs.fsyncSync(dir);
  } finally {
    fs.closeSync(dir);
  }
}

/** The file's text, or undefined when it does not exist (other errors are thrown). */
export function readFileIfExists(file: string): string | undefined {
  try {
    return fs.readFileSync(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
}

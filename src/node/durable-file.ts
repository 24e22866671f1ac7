/**
 * Small files of the data directory (node.json, members.json, the running marker) written so that a
 * crash at any instant leaves either the old file or the new one, whole: the new content goes to
 * `FILE.tmp`, is fsynced, renamed over FILE, and the directory is fsynced (the rename itself durable).
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

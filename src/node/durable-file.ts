/**
 * Replacing a small file durably through the FileSystem interface: the new content goes to `FILE.tmp`
 * (created 0600: FileSystem.create), is fsynced, renamed over FILE, and the directory is fsynced, so a
 * crash at any instant leaves either the old file or the new one.
 */
import type { FileSystem } from "../storage/fs/file-system.js";

export async function writeFileDurably(
  fs: FileSystem,
  dir: string,
  file: string,
  text: string,
): Promise<void> {
  const tmp = `${file}.tmp`;
  if (await fs.exists(tmp)) await fs.unlink(tmp);
  const f = await fs.create(tmp);
  try {
    await f.append(Buffer.from(text, "utf8"));
    await f.sync();
  } finally {
    await f.close();
  }
  await fs.rename(tmp, file);
  await fs.syncDir(dir);
}

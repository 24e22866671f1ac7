/**
 * `ringstore auth add-token|list|remove-token --file F`: the token file a node reads with `--auth-file`
 * (format: api/tokens.ts). A new token is printed once, on stdout; the file keeps only its hash. The
 * file is replaced whole (a temp file of mode 0600, fsynced, renamed over it), so a node that re-reads
 * it never sees half of it, and it ends up 0600 whatever it was. Two runs at once on the same file: the
 * second is refused (its temp file exists) rather than losing the first's token.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import {
  decodeTokenFile,
  encodeTokenFile,
  newToken,
  ROLES,
  type Role,
  type TokenEntry,
} from "../api/tokens.js";

function readEntries(file: string): TokenEntry[] {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw err;
  }
  return decodeTokenFile(text, file);
}

function writeEntries(file: string, entries: readonly TokenEntry[]): void {
  const tmp = `${file}.tmp`;
  let fd: number;
  try {
    fd = fs.openSync(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EEXIST")
      throw new Error(
        `${tmp} exists: another ringstore auth command is writing ${file}, or one was interrupted (then remove ${tmp})`,
      );
    throw err;
  }
  try {
    fs.writeFileSync(fd, encodeTokenFile(entries));
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  try {
    fs.renameSync(tmp, file);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw err;
  }
  const dir = fs.openSync(path.dirname(path.resolve(file)), "r");
  try {
    fs.fsyncSync(dir);
  } finally {
    fs.closeSync(dir);
  }
}

export function addTokenCommand(flags: { role: string; file: string; name?: string }): void {
  if (!ROLES.includes(flags.role as Role))
    throw new Error(`--role must be read, write or admin, got "${flags.role}"`);
  const entries = readEntries(flags.file);
  const { token, entry } = newToken(flags.role as Role, flags.name ?? "", Date.now());
  writeEntries(flags.file, [...entries, entry]);
  process.stdout.write(`${token}\n`);
  process.stderr.write(
    `token ${entry.id} (role ${entry.role}) added to ${flags.file}; it is shown once, and only its hash is kept: ` +
      `give it to clients as RINGSTORE_TOKEN (or --token); nodes using ${flags.file} accept it within 2 s\n`,
  );
}

export function listTokensCommand(flags: { file: string }): void {
  const entries = readEntries(flags.file);
  if (entries.length === 0) {
    process.stdout.write(`no tokens in ${flags.file}\n`);
    return;
  }
  for (const e of entries)
    process.stdout.write(
      `${e.id}  ${e.role.padEnd(5)}  ${e.createdAt}${e.name === "" ? "" : `  ${e.name}`}\n`,
    );
}

export function removeTokenCommand(flags: { id: string; file: string }): void {
  const entries = readEntries(flags.file);
  const kept = entries.filter((e) => e.id !== flags.id);
  if (kept.length === entries.length) throw new Error(`no token ${flags.id} in ${flags.file}`);
  writeEntries(flags.file, kept);
  process.stdout.write(`token ${flags.id} removed; nodes using ${flags.file} refuse it within 2 s\n`);
}

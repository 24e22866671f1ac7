/**
 * The API's secret files: the TLS certificate and key (`--tls-cert`, `--tls-key`) and the token file
 * (`--auth-file`). Read at start (a file that cannot be used stops the start with a sentence), then
 * watched: every `reloadIntervalMs` (2 s) each file's identity (inode, size, mtime, mode) is compared,
 * and a changed file is read again and swapped in whole: a token added or revoked with
 * `ringstore auth` (which replaces the file by a rename) counts within 2 s, and a renewed certificate
 * serves new connections without a restart. A change that cannot be used (damaged, wrong mode, a key
 * that does not match its certificate) is reported through `warn` and the files in use stay in use: a
 * bad edit neither opens the API nor locks every client out.
 *
 * Modes. A file holding a secret (the token file, the TLS key) that others may read, or that anyone but
 * its owner may write, is refused: every user of the machine could read the key, or add a token. One
 * that its group may read is used, with a warning: a key shared with a group (Debian's `ssl-cert` group
 * for /etc/ssl/private, for example) is a deliberate setup. `ringstore auth add-token` writes 0600.
 */
import * as fs from "node:fs";
import * as tls from "node:tls";
import type { TokenSource } from "./access.js";
import { decodeTokenFile, MAX_TOKEN_FILE_BYTES, TokenSet } from "./tokens.js";

/** A secret file that cannot be used: missing, unreadable, too open, or not what it should be. */
export class SecretFileError extends Error {
  readonly code = "ERR_SECRET_FILE";
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "SecretFileError";
  }
}

/**
 * Refuses a secret file's mode if others may read it or anyone but its owner may write it; warns if its
 * group may read it. (Not on Windows, where the mode bits mean nothing.)
 */
export function checkSecretFileMode(file: string, mode: number, warn: (message: string) => void): void {
  if (process.platform === "win32") return;
  const octal = (mode & 0o777).toString(8).padStart(4, "0");
  if ((mode & 0o004) !== 0 || (mode & 0o022) !== 0)
    throw new SecretFileError(
      `${file} holds a secret but its mode is ${octal} (${(mode & 0o004) !== 0 ? "every user may read it" : "others may change it"}): run chmod 600 ${file}`,
    );
  if ((mode & 0o040) !== 0)
    warn(
      `${file} holds a secret and its group may read it (mode ${octal}); chmod 600 ${file} unless that is meant`,
    );
}

interface FileIdentity {
  readonly ino: number;
  readonly size: number;
  readonly mtimeMs: number;
  readonly mode: number;
}

const sameFile = (a: FileIdentity | undefined, b: FileIdentity) =>
  a !== undefined && a.ino === b.ino && a.size === b.size && a.mtimeMs === b.mtimeMs && a.mode === b.mode;

/** A file's content and identity, read through one descriptor (so both describe the same file). */
async function readFileChecked(
  file: string,
  secret: boolean,
  maxBytes: number,
  warn: (message: string) => void,
): Promise<{ readonly data: Buffer; readonly id: FileIdentity }> {
  let h: fs.promises.FileHandle;
  try {
    h = await fs.promises.open(file, "r");
  } catch (err) {
    throw new SecretFileError(`cannot read ${file}: ${(err as Error).message}`, { cause: err });
  }
  try {
    const st = await h.stat();
    if (!st.isFile()) throw new SecretFileError(`${file} is not a regular file`);
    if (secret) checkSecretFileMode(file, st.mode, warn);
    if (st.size > maxBytes) throw new SecretFileError(`${file} is larger than ${maxBytes} bytes`);
    const data = await h.readFile();
    return { data, id: { ino: st.ino, size: st.size, mtimeMs: st.mtimeMs, mode: st.mode } };
  } finally {
    await h.close();
  }
}

async function identityOf(file: string): Promise<FileIdentity | undefined> {
  try {
    const st = await fs.promises.stat(file);
    return { ino: st.ino, size: st.size, mtimeMs: st.mtimeMs, mode: st.mode };
  } catch {
    return undefined; // gone for now (being replaced): looked at again next time
  }
}

/** The certificate and key the API serves with (PEM). */
export interface TlsMaterial {
  readonly cert: Buffer;
  readonly key: Buffer;
}

export interface ApiSecurityFiles {
  readonly tls?: { readonly certFile: string; readonly keyFile: string } | undefined;
  readonly authFile?: string | undefined;
  /** How often the files are looked at for changes. Default 2000 ms. */
  readonly reloadIntervalMs?: number;
  /** Warnings: a group-readable secret file, a change that could not be used (the old files stay). */
  readonly warn: (message: string) => void;
  /** A file was read again and is in use (its path). */
  readonly onReload?: (file: string) => void;
}

/** The API's TLS material and tokens, kept current with their files until close(). */
export interface ApiSecurity {
  /** undefined: plain http. */
  readonly tls: TlsMaterial | undefined;
  /** undefined: no token required. */
  readonly tokens: (TokenSource & { readonly size: number }) | undefined;
  /** Where the tokens come from (for the start message). */
  readonly authFile: string | undefined;
  /** Called with the new certificate and key each time their files change (and are usable). */
  onTlsChange(fn: (m: TlsMaterial) => void): void;
  /** Stops watching the files. */
  close(): void;
}

const MAX_PEM_BYTES = 1024 * 1024;

async function readTls(
  files: { readonly certFile: string; readonly keyFile: string },
  warn: (message: string) => void,
): Promise<{ readonly m: TlsMaterial; readonly ids: FileIdentity[] }> {
  const cert = await readFileChecked(files.certFile, false, MAX_PEM_BYTES, warn);
  const key = await readFileChecked(files.keyFile, true, MAX_PEM_BYTES, warn);
  try {
    // Parses both and checks that the key is the certificate's.
    tls.createSecureContext({ cert: cert.data, key: key.data });
  } catch (err) {
    throw new SecretFileError(
      `${files.certFile} and ${files.keyFile} are not a usable PEM certificate and its private key: ${(err as Error).message}`,
      { cause: err },
    );
  }
  return { m: { cert: cert.data, key: key.data }, ids: [cert.id, key.id] };
}

async function readTokens(
  file: string,
  warn: (message: string) => void,
): Promise<{ readonly set: TokenSet; readonly id: FileIdentity }> {
  const r = await readFileChecked(file, true, MAX_TOKEN_FILE_BYTES, warn);
  return { set: new TokenSet(decodeTokenFile(r.data.toString("utf8"), file)), id: r.id };
}

/** Reads the API's secret files (SecretFileError or TokenFileError if one cannot be used) and watches them. */
export async function loadApiSecurity(o: ApiSecurityFiles): Promise<ApiSecurity> {
  const warn = o.warn;
  let tlsNow = o.tls === undefined ? undefined : await readTls(o.tls, warn);
  let tokensNow = o.authFile === undefined ? undefined : await readTokens(o.authFile, warn);
  const tlsListeners: ((m: TlsMaterial) => void)[] = [];
  // The token set in use, swapped whole on a reload; the API reads it on every request.
  const tokens =
    tokensNow === undefined
      ? undefined
      : {
          check: (t: string) => tokensNow!.set.check(t),
          get size() {
            return tokensNow!.set.size;
          },
        };

  let busy = false;
  const poll = async () => {
    if (busy) return;
    busy = true;
    try {
      if (o.tls !== undefined && tlsNow !== undefined) {
        const ids = await Promise.all([identityOf(o.tls.certFile), identityOf(o.tls.keyFile)]);
        if (changed(tlsNow.ids, ids)) {
          try {
            tlsNow = await readTls(o.tls, warn);
            for (const fn of tlsListeners) fn(tlsNow.m);
            o.onReload?.(o.tls.certFile);
          } catch (err) {
            // Not taken again until the files change again.
            tlsNow = { m: tlsNow.m, ids: ids as FileIdentity[] };
            warn(`the new TLS files are not used, the old ones stay: ${(err as Error).message}`);
          }
        }
      }
      if (o.authFile !== undefined && tokensNow !== undefined) {
        const id = await identityOf(o.authFile);
        if (id !== undefined && !sameFile(tokensNow.id, id)) {
          try {
            tokensNow = await readTokens(o.authFile, warn);
            o.onReload?.(o.authFile);
          } catch (err) {
            tokensNow = { set: tokensNow.set, id };
            warn(
              `the changed token file is not used, the tokens read before stay: ${(err as Error).message}`,
            );
          }
        }
      }
    } finally {
      busy = false;
    }
  };
  const timer =
    tlsNow === undefined && tokensNow === undefined
      ? undefined
      : setInterval(() => {
          poll().catch((err: unknown) =>
            warn(`watching the API's secret files failed: ${(err as Error).message}`),
          );
        }, o.reloadIntervalMs ?? 2000);
  timer?.unref();

  return {
    tls: tlsNow?.m,
    tokens,
    authFile: o.authFile,
    onTlsChange: (fn) => {
      tlsListeners.push(fn);
    },
    close: () => {
      if (timer !== undefined) clearInterval(timer);
    },
  };
}

/** Whether any of the files now differs from what was read (a missing file is not a change yet). */
function changed(before: readonly FileIdentity[], now: readonly (FileIdentity | undefined)[]): boolean {
  return now.every((id) => id !== undefined) && now.some((id, i) => !sameFile(before[i], id!));
}

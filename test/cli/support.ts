/**
 * Running the built `ringstore` command line in tests: to its end with its stdout (as bytes), stderr and
 * exit code, either with pipes (not a terminal) or under a pseudo-terminal made by util-linux's
 * `script` (stdout and stderr then both are the terminal, and come back mixed, with CR LF line ends).
 */
import { spawn, spawnSync } from "node:child_process";
import * as path from "node:path";

export const BIN = path.resolve("dist/cli/main.js");

export interface Ran {
  readonly code: number | null;
  readonly stdout: Buffer;
  readonly stderr: string;
  /** Milliseconds from the start to the exit. */
  readonly ms: number;
}

/** Runs `ringstore ARGS...` with pipes; kills it after `timeoutMs`. */
export function cli(
  args: string[],
  opts: { timeoutMs?: number; env?: Record<string, string> } = {},
): Promise<Ran> {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const child = spawn(process.execPath, [BIN, ...args], {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, ...(opts.env ?? {}) },
    });
    const out: Buffer[] = [];
    let err = "";
    child.stdout.on("data", (d: Buffer) => out.push(d));
    child.stderr.on("data", (d: Buffer) => {
      err += d.toString();
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs ?? 60_000);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: Buffer.concat(out), stderr: err, ms: Date.now() - t0 });
    });
  });
}

/** Whether util-linux's `script` is here to give a command a pseudo-terminal. */
export const HAVE_SCRIPT = spawnSync("script", ["--version"], { encoding: "utf8" }).status === 0;

/** Quotes a word for sh. */
function sh(w: string): string {
  return `'${w.replace(/'/g, "'\\''")}'`;
}

/**
 * Runs `ringstore ARGS...` on a pseudo-terminal (stdout and stderr both a terminal): what a person at a
 * terminal sees, as one text with the terminal's CR LF line ends.
 */
export function cliOnTerminal(
  args: string[],
  opts: { timeoutMs?: number } = {},
): Promise<{ code: number | null; screen: string }> {
  return new Promise((resolve) => {
    const command = [process.execPath, BIN, ...args].map(sh).join(" ");
    const child = spawn("script", ["-qefc", command, "/dev/null"], {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, COLUMNS: "160" },
    });
    let screen = "";
    child.stdout.on("data", (d: Buffer) => {
      screen += d.toString();
    });
    child.stderr.on("data", (d: Buffer) => {
      screen += d.toString();
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs ?? 60_000);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, screen });
    });
  });
}

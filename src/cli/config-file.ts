/**
 * `ringstore start --config F`: a file holding any of `start`'s flags, TOML (`.toml`) or JSON (`.json`;
 * any other name is read as TOML), each key a flag's long name without its dashes:
 *
 *   id = "n1"
 *   api = "127.0.0.1:8001"
 *   peer = "127.0.0.1:9001"
 *   data = "/var/lib/ringstore/n1"
 *   join = ["10.0.0.1:9001", "10.0.0.2:9001"]   # or one string, comma-separated
 *   durability = "interval"
 *   anti-entropy = false                        # on|off flags take true/false too
 *   max-value-bytes = 4194304
 *
 * A flag given on the command line (or through its environment variable) wins over the file. A key that
 * is no flag of `start`, or a value of the wrong kind, is refused with a sentence naming the file and the
 * key; nothing starts.
 */
import { readFileSync } from "node:fs";
import type { Command, Option } from "commander";
import { parse as parseToml } from "smol-toml";

/** The flags a config file may not hold (itself). */
const NOT_IN_FILE = new Set(["config"]);

/** Options whose value is on or off: a file may say true or false. */
const ON_OFF = /<on\|off>/;

export class ConfigFileError extends Error {}

/** Reads and parses the file: a table of keys. */
function readTable(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    throw new ConfigFileError(`cannot read the config file ${file}: ${(err as Error).message}`);
  }
  let parsed: unknown;
  const json = file.toLowerCase().endsWith(".json");
  try {
    parsed = json ? JSON.parse(text) : parseToml(text);
  } catch (err) {
    const first = (err as Error).message.split("\n")[0];
    throw new ConfigFileError(`the config file ${file} is not valid ${json ? "JSON" : "TOML"}: ${first}`);
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed))
    throw new ConfigFileError(`the config file ${file} must hold a table of flags (key = value)`);
  return parsed as Record<string, unknown>;
}

/** A file's value as the string (or boolean) commander would have made of the flag. */
function flagValue(file: string, key: string, o: Option, v: unknown): string | boolean {
  const bad = (what: string) =>
    new ConfigFileError(`${file}: "${key}" ${what}, got ${JSON.stringify(v)} (see ringstore start --help)`);
  if (o.isBoolean()) {
    if (typeof v !== "boolean") throw bad("is a switch: true or false");
    return v;
  }
  if (typeof v === "boolean") {
    if (!ON_OFF.test(o.flags)) throw bad("takes a value, not true or false");
    return v ? "on" : "off";
  }
  if (typeof v === "string") return v;
  if (typeof v === "number" || typeof v === "bigint") return String(v);
  if (Array.isArray(v) && key === "join" && v.every((x) => typeof x === "string")) return v.join(",");
  throw bad(key === "join" ? "is an address or a list of addresses" : "takes a string or a number");
}

/**
 * Fills the options of `cmd` (the `start` command, its flags parsed) from `--config F`, if given, for
 * every flag the command line did not give; returns the options. Refuses unknown keys.
 */
export function applyConfigFile(cmd: Command): Record<string, unknown> {
  const opts = cmd.opts() as Record<string, unknown>;
  const file = opts.config as string | undefined;
  if (file === undefined) return opts;
  const table = readTable(file);
  const byName = new Map(cmd.options.map((o) => [o.long?.replace(/^--/, "") ?? "", o] as const));
  const unknown = Object.keys(table).filter(
    (k) => !byName.has(k) || NOT_IN_FILE.has(k) || k.startsWith("no-"),
  );
  if (unknown.length > 0)
    throw new ConfigFileError(
      `${file}: ${unknown.map((k) => `"${k}"`).join(", ")} ${unknown.length === 1 ? "is" : "are"} not ${unknown.length === 1 ? "a flag" : "flags"} of ringstore start (a key is a flag's long name without its dashes, such as max-value-bytes; see ringstore start --help)`,
    );
  for (const [key, v] of Object.entries(table)) {
    const o = byName.get(key)!;
    const name = o.attributeName();
    const value = flagValue(file, key, o, v);
    const source = cmd.getOptionValueSource(name);
    if (source === "cli" || source === "env") continue;
    cmd.setOptionValueWithSource(name, value, "config");
  }
  return cmd.opts() as Record<string, unknown>;
}

/** The flags `start` needs, from the command line or the config file: a sentence for those missing. */
export function checkRequired(cmd: Command, names: readonly string[]): void {
  const opts = cmd.opts() as Record<string, unknown>;
  const missing = names.filter((n) => {
    const o = cmd.options.find((x) => x.long === `--${n}`)!;
    return opts[o.attributeName()] === undefined;
  });
  if (missing.length > 0)
    throw new ConfigFileError(
      `ringstore start needs ${missing.map((n) => `--${n}`).join(", ")} (on the command line, or in the file of --config)`,
    );
}

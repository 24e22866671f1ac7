/**
 * `weight.json` in the data directory: a weight set online (`cluster weight`), kept across restarts.
 * It records the `--weight` the node ran with when it was set: a restart with that same flag keeps the
 * online weight; a restart with another `--weight` means the operator chose again, and the flag wins
 * (the file is then dropped). data-dir.ts reads and writes it.
 *
 * JSON `{format: "ringstore-weight", version: 1, weight, flag, crc32}`, the crc over the JSON of
 * `{weight, flag}`.
 */
import { crc32 } from "node:zlib";
import { ConfigError } from "./config.js";

export interface SavedWeight {
  /** The weight set online. */
  readonly weight: number;
  /** The `--weight` the node ran with then. */
  readonly flag: number;
}

const FORMAT = "ringstore-weight";

const validWeight = (w: unknown): w is number =>
  Number.isInteger(w) && (w as number) >= 1 && (w as number) <= 1000;

export function encodeWeight(w: SavedWeight): string {
  if (!validWeight(w.weight) || !validWeight(w.flag))
    throw new RangeError(`bad weight ${w.weight}/${w.flag}`);
  const body = { weight: w.weight, flag: w.flag };
  return `${JSON.stringify({ format: FORMAT, version: 1, ...body, crc32: crc32(JSON.stringify(body)) })}\n`;
}

/** The saved weight in weight.json's text (`file` names it in errors); damaged: a ConfigError. */
export function decodeWeight(text: string, file: string): SavedWeight {
  let j: { format?: unknown; version?: unknown; weight?: unknown; flag?: unknown; crc32?: unknown };
  try {
    j = JSON.parse(text);
  } catch {
    throw new ConfigError(
      `${file} is not valid JSON: the saved weight is damaged (remove it to use --weight)`,
    );
  }
  if (j === null || typeof j !== "object" || j.format !== FORMAT || j.version !== 1)
    throw new ConfigError(`${file} is not a ringstore weight file of version 1`);
  if (
    !validWeight(j.weight) ||
    !validWeight(j.flag) ||
    j.crc32 !== crc32(JSON.stringify({ weight: j.weight, flag: j.flag }))
  )
    throw new ConfigError(
      `${file} fails its checksum: the saved weight is damaged (remove it to use --weight)`,
    );
  return { weight: j.weight, flag: j.flag };
}

/** The weight a node starts with: the one set online, unless its `--weight` changed since. */
export function startingWeight(flag: number, saved: SavedWeight | undefined): number {
  return saved !== undefined && saved.flag === flag ? saved.weight : flag;
}

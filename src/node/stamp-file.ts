/**
 * The form of the node's small time-stamp files (`alive`, `recovering`): one line of JSON,
 * `{format, version, <fields>, crc32}`, the crc over the JSON of the fields in the order given. Whole
 * numbers only (ms since the epoch by the node's clock). The caller says what a damaged file means for
 * the node and what to do about it (`damaged`); a newer version is refused with its own sentence.
 */
import { crc32 } from "node:zlib";
import { ConfigError } from "./config.js";

const VERSION = 1;

const checksum = (names: readonly string[], values: Record<string, number>) =>
  crc32(JSON.stringify(Object.fromEntries(names.map((n) => [n, values[n]]))));

export function encodeStamp(
  format: string,
  names: readonly string[],
  values: Record<string, number>,
): string {
  const fields = Object.fromEntries(names.map((n) => [n, Math.floor(values[n]!)]));
  return `${JSON.stringify({ format, version: VERSION, ...fields, crc32: checksum(names, fields) })}\n`;
}

/**
 * The fields of a stamp file's text. `damaged(why)` makes the error for a file that is not one of
 * `format`, lacks a field or fails its checksum; `file` names it in the sentence for a newer version.
 */
export function decodeStamp(
  text: string,
  file: string,
  format: string,
  names: readonly string[],
  damaged: (why: string) => Error,
): Record<string, number> {
  let j: Record<string, unknown>;
  try {
    j = JSON.parse(text);
  } catch {
    throw damaged("not valid JSON");
  }
  if (j === null || typeof j !== "object" || j.format !== format) throw damaged("unknown format");
  if (j.version !== VERSION)
    throw new ConfigError(
      `${file} has format version ${JSON.stringify(j.version)}; this build reads version ${VERSION} (was it written by a newer ringstore?)`,
    );
  const values: Record<string, number> = {};
  for (const n of names) {
    const v = j[n];
    if (typeof v !== "number" || !Number.isSafeInteger(v)) throw damaged(`no ${n}`);
    values[n] = v;
  }
  if (j.crc32 !== checksum(names, values)) throw damaged("checksum mismatch");
  return values;
}

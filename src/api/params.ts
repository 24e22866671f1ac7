/**
 * Parsing and validating what a request names: the key in its path, its query parameters (r, w,
 * timeout, force) and its causal context (`X-Context`). Each parser either returns a valid value or
 * throws an ApiError (400) saying what is wrong, so that a handler checks everything before it changes
 * anything.
 */
import type { IncomingHttpHeaders } from "node:http";
import { parse as parseQueryString } from "node:querystring";
import { decodeContext, InvalidContextError } from "../versioning/context-token.js";
import type { VersionVector } from "../versioning/dvv.js";
import { ApiError } from "./api-error.js";

/** A parsed query string: a parameter given more than once is an array. */
export type Query = Record<string, string | string[] | undefined>;

const HEX = /^[0-9a-fA-F]{2}$/;

/** Percent-decodes the raw path after `/kv/` to bytes. */
export function parseKey(rawUrl: string, maxKeyBytes: number): Buffer {
  const q = rawUrl.indexOf("?");
  const p = q < 0 ? rawUrl : rawUrl.slice(0, q);
  if (!p.startsWith("/kv/")) throw new ApiError(400, "bad_key", "the key is the path segment after /kv/");
  const enc = p.slice(4);
  const out: number[] = [];
  for (let i = 0; i < enc.length; i++) {
    const c = enc.charCodeAt(i);
    if (c === 0x25) {
      const h = enc.slice(i + 1, i + 3);
      if (!HEX.test(h))
        throw new ApiError(400, "bad_key", `malformed percent-encoding at character ${i} of the key`);
      out.push(Number.parseInt(h, 16));
      i += 2;
    } else if (c < 0x80) {
      out.push(c);
    } else {
      for (const b of Buffer.from(enc[i]!, "utf8")) out.push(b);
    }
    if (out.length > maxKeyBytes) break;
  }
  if (out.length === 0) throw new ApiError(400, "bad_key", "the key must not be empty");
  if (out.length > maxKeyBytes)
    throw new ApiError(400, "bad_key", `the key exceeds ${maxKeyBytes} bytes`, { limit: maxKeyBytes });
  return Buffer.from(out);
}

/** The query string of a raw URL (after its `?`), every parameter read. */
export function parseQuery(rawUrl: string): Query {
  const q = rawUrl.indexOf("?");
  // maxKeys 0: every parameter is read (querystring stops at 1,000 by default: a parameter after them
  // would be silently ignored); the request line's length bounds their number.
  return q < 0 ? {} : parseQueryString(rawUrl.slice(q + 1), "&", "=", { maxKeys: 0 });
}

/** A parameter that may be given at most once. */
export function single(q: Query, name: string): string | undefined {
  const v = q[name];
  if (v === undefined) return undefined;
  if (typeof v !== "string")
    throw new ApiError(400, "bad_parameter", `parameter ${name} given more than once`);
  return v;
}

/** `r`/`w`: an integer 1..N, or one, quorum, all. */
export function parseQuorum(v: string | undefined, name: string, dflt: number, n: number): number {
  if (v === undefined) return dflt;
  let x: number;
  if (v === "one") x = 1;
  else if (v === "quorum") x = Math.floor(n / 2) + 1;
  else if (v === "all") x = n;
  else if (/^[0-9]{1,9}$/.test(v)) x = Number(v);
  else
    throw new ApiError(
      400,
      "bad_parameter",
      `${name} must be an integer 1..${n}, one, quorum or all; got "${v}"`,
    );
  if (x < 1 || x > n)
    throw new ApiError(400, "bad_parameter", `${name} must be between 1 and N=${n}; got ${x}`);
  return x;
}

/** `pr`/`pw`: how many replies or acknowledgements must come from primaries: an integer 0..N (default 0), or one, quorum, all. */
export function parsePrimaryQuorum(v: string | undefined, name: string, n: number): number {
  if (v === undefined) return 0;
  if (v === "one" || v === "quorum" || v === "all") return parseQuorum(v, name, 0, n);
  if (!/^[0-9]{1,9}$/.test(v) || Number(v) > n)
    throw new ApiError(
      400,
      "bad_parameter",
      `${name} must be an integer 0..${n}, one, quorum or all; got "${v}"`,
    );
  return Number(v);
}

/** `timeout`: milliseconds, 1..max. */
export function parseTimeout(v: string | undefined, dflt: number, max: number): number {
  if (v === undefined) return dflt;
  if (!/^[0-9]{1,9}$/.test(v) || Number(v) < 1 || Number(v) > max)
    throw new ApiError(
      400,
      "bad_parameter",
      `timeout must be an integer number of milliseconds, 1..${max}; got "${v}"`,
    );
  return Number(v);
}

/** `force`: true, false (absent). */
export function parseForce(q: Query): boolean {
  const force = q.force;
  if (force !== undefined && force !== "true" && force !== "false")
    throw new ApiError(400, "bad_parameter", `force must be true or false, got ${JSON.stringify(force)}`);
  return force === "true";
}

/**
 * The causal context a write names (`X-Context`), checked against its key and the cluster's secret; the
 * empty context when the header is absent.
 */
export function parseContext(
  headers: IncomingHttpHeaders,
  key: Uint8Array,
  secret: Uint8Array,
  maxChars: number,
): VersionVector {
  const h = headers["x-context"];
  if (h === undefined) return new Map();
  // Node joins repeated headers with ", ", which no token contains (base64url).
  if (Array.isArray(h) || h.includes(","))
    throw new ApiError(400, "bad_context", "X-Context given more than once");
  if (h.length > maxChars) throw new ApiError(400, "bad_context", "X-Context is too long");
  try {
    return decodeContext(h, key, secret);
  } catch (err) {
    if (err instanceof InvalidContextError) throw new ApiError(400, "bad_context", err.message);
    throw err;
  }
}

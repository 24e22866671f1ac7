/**
 * The TypeScript client of the HTTP API (exported as `ringstore/client`).
 *
 * `get` returns the value, or the siblings when concurrent writes exist, with the opaque context to pass
 * back on the next write. `update` is the read-merge-write loop most applications want. Errors from the
 * server become `RingstoreError`s carrying the server's code; a node that cannot be reached at all is a
 * `RingstoreError` with status 0 and code `unreachable`.
 *
 * Routing. The client takes one or more seed nodes. With `routing: "none"` (the default) requests go to
 * the seeds in turn, skipping for a while one that refused a connection. With `routing: "partition-aware"`
 * the client fetches `GET /ring` (from any node; again every `ringRefreshMs` and after a connection
 * error), computes the key's partition with the server's own hash (`partitionOf` of `src/ring/ring.ts`)
 * and its preference list (`PreferenceTable`, same code as the server), and sends the request straight to
 * the first replica that is up, falling back to the other replicas and then to any node. This saves the
 * hop a non-replica coordinator makes to forward a write. Any node still serves any key: routing is an
 * optimisation, never needed for correctness.
 *
 * Failover. A request that could not be delivered (connection refused, connect timeout), or that a
 * stopping node turned away (503 with `stopping: true`: it did nothing with it), moves on to the next
 * node. A read also moves on after any network error; a write whose connection broke after it was
 * sent does not (it may have been applied: sending it again would store a second version of it), and
 * fails with `unreachable`. One undici `Pool` per node, with a bounded number of connections.
 *
 * Security. Nodes given as `https://HOST:PORT` are spoken to over TLS, checked against the `ca` option
 * (the CA that signed the nodes' certificates; without it, the system's CAs); every node then, the ring's
 * members too, is spoken to over https (the seeds must agree). With `token`, every request carries
 * `Authorization: Bearer TOKEN`. A TLS handshake that fails (a certificate the CA did not sign, a node
 * that serves plain http) sent nothing: the request goes to another node, and if none succeeds it fails
 * with `tls_error`, saying what to check.
 */
import { Pool } from "undici";
import { PreferenceTable, partitionOf } from "../ring/ring.js";
import { BYTES_CONTENT_TYPE, STRING_CONTENT_TYPE } from "./content-types.js";
import { type Codec, jsonCodec, stringCodec, TypedKeys } from "./typed.js";

export { BYTES_CONTENT_TYPE, JSON_CONTENT_TYPE, STRING_CONTENT_TYPE } from "./content-types.js";
export {
  type Codec,
  jsonCodec,
  stringCodec,
  type TypedGetResult,
  TypedKeys,
  type TypedUpdateOptions,
  type TypedUpdateResult,
} from "./typed.js";

export interface Sibling {
  readonly value: Buffer;
  readonly contentType: string;
  readonly deleted: boolean;
}

export type GetResult =
  | { readonly kind: "value"; readonly value: Buffer; readonly contentType: string; readonly context: string }
  | { readonly kind: "siblings"; readonly siblings: Sibling[]; readonly context: string }
  | { readonly kind: "not_found"; readonly context: string | undefined };

/** Options every call takes. */
export interface CallOptions {
  /**
   * Aborting it cancels the call: the HTTP request in flight is torn down, no other node is tried, and
   * the call rejects with a RingstoreError of code `aborted` (already aborted: nothing is sent). A write
   * aborted after it was sent may have been applied, as with a lost connection.
   */
  readonly signal?: AbortSignal;
}

export interface RequestOptions extends CallOptions {
  readonly r?: number | "one" | "quorum" | "all";
  readonly w?: number | "one" | "quorum" | "all";
  readonly timeoutMs?: number;
}

export type Routing = "none" | "partition-aware";

export interface ListKeysOptions extends CallOptions {
  /** Keys per page (1..10000; the node's default is 1000). */
  readonly limit?: number;
  /** Where to go on: the cursor of the page before (absent: from the start). */
  readonly cursor?: string;
}

/** A page of the key listing. */
export interface KeyPage {
  readonly keys: Buffer[];
  /** Pass it back for the next page; null: the listing is done. */
  readonly cursor: string | null;
}

export interface KeysOptions {
  /** Keys per page requested. */
  readonly pageSize?: number;
  /** Resume a listing from a page's cursor. */
  readonly cursor?: string;
  /** Aborting it cancels the page in flight; the iterator then throws `aborted`. */
  readonly signal?: AbortSignal;
  /** Told of every page as it arrives (its keys and the cursor to resume from). */
  readonly onPage?: (page: KeyPage) => void;
}

export interface ClientOptions {
  /** Connections per node (one pool per node). Default 16. */
  readonly connections?: number;
  /** Default "none": requests go to the seed nodes in turn. */
  readonly routing?: Routing;
  /** How often the ring is fetched again in partition-aware mode. Default 5000 ms. */
  readonly ringRefreshMs?: number;
  /**
   * Longest wait for a response's headers, and between body chunks: past it the node is taken for
   * stuck and the request fails (a read then tries another node). Default 10000 ms; a request whose
   * `timeoutMs` is longer waits that long plus 2 s (the node answers 503 at its own deadline).
   */
  readonly httpTimeoutMs?: number;
  /**
   * How long a node that failed (refused a connection, timed out) is tried only after the others.
   * Default 2000 ms, doubled for each failure in a row (up to 32x); a success clears it.
   */
  readonly avoidAfterFailureMs?: number;
  /**
   * The clock (milliseconds) the client times its avoidance of failed nodes and its ring refreshes by.
   * Default `Date.now`; tests give a fake one to make those timings deterministic.
   */
  readonly clock?: () => number;
  /** Sent as `Authorization: Bearer TOKEN` on every request (a node started with `--auth-file`). */
  readonly token?: string;
  /**
   * The CA certificate(s), PEM, that signed the nodes' certificates, for `https://` nodes (ignored for
   * http). Default: the system's CAs.
   */
  readonly ca?: string | Buffer | readonly (string | Buffer)[];
}

export interface UpdateOptions extends RequestOptions {
  /** Content type of the written value. Default: that of the value read (if one), else octet-stream. */
  readonly contentType?: string;
  /** Read-merge-write cycles tried before giving up. Default 5. */
  readonly maxAttempts?: number;
  /** First backoff between attempts; doubled each time, with jitter (x0.5..x1.5). Default 20 ms. */
  readonly retryDelayMs?: number;
}

/** What the merge function sees: the live values and the read they came from. */
export interface UpdateInput {
  /** The single value, or every live sibling; empty when the key is not found or deleted. */
  readonly values: Buffer[];
  /** Every sibling read, tombstones included (a delete concurrent with a write shows here). */
  readonly siblings: Sibling[];
  /** The context the write will carry. */
  readonly context: string | undefined;
  /** 1 on the first cycle. */
  readonly attempt: number;
}

/**
 * The merge function of `update`: returns the new value, or `undefined` to delete the key. It may run
 * more than once (once per attempt), so it must not have side effects that must happen once.
 */
export type UpdateFn = (
  values: Buffer[],
  input: UpdateInput,
) => string | Uint8Array | undefined | Promise<string | Uint8Array | undefined>;

export interface UpdateResult {
  /** The written version's context, or undefined when nothing had to be written (delete of nothing). */
  readonly context: string | undefined;
  /** What was written; undefined for a delete. */
  readonly value: Buffer | undefined;
  readonly deleted: boolean;
  /** Read-merge-write cycles it took (1 without retries). */
  readonly attempts: number;
}

export class RingstoreError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly body: Record<string, unknown>,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "RingstoreError";
  }
}

const UNRESERVED = /^[A-Za-z0-9._~-]+$/;

export function encodeKey(key: string | Uint8Array): string {
  if (typeof key === "string" && UNRESERVED.test(key)) return key;
  const b = typeof key === "string" ? Buffer.from(key, "utf8") : Buffer.from(key);
  let out = "";
  for (const c of b) {
    const unreserved =
      (c >= 0x30 && c <= 0x39) ||
      (c >= 0x41 && c <= 0x5a) ||
      (c >= 0x61 && c <= 0x7a) ||
      c === 0x2d ||
      c === 0x2e ||
      c === 0x5f ||
      c === 0x7e;
    out += unreserved ? String.fromCharCode(c) : `%${c.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

/** A key as a listing page gives it (percent-encoded) back to bytes. */
export function decodeKey(encoded: string): Buffer {
  const out: number[] = [];
  for (let i = 0; i < encoded.length; i++) {
    const c = encoded.charCodeAt(i);
    if (c === 0x25) {
      out.push(Number.parseInt(encoded.slice(i + 1, i + 3), 16));
      i += 2;
    } else out.push(c);
  }
  return Buffer.from(out);
}

/**
 * The path of a key. An empty key is refused here as a node refuses it (400 bad_key), without sending:
 * `GET /kv/` is the key listing, not a key.
 */
function keyPath(key: string | Uint8Array): string {
  if (key.length === 0)
    throw new RingstoreError(400, "bad_key", "the key must not be empty (nothing was sent)", {
      error: "bad_key",
    });
  return `/kv/${encodeKey(key)}`;
}

function keyBytes(key: string | Uint8Array): Uint8Array {
  return typeof key === "string" ? Buffer.from(key, "utf8") : key;
}

function query(o: RequestOptions): string {
  const p: string[] = [];
  if (o.r !== undefined) p.push(`r=${encodeURIComponent(o.r)}`);
  if (o.w !== undefined) p.push(`w=${encodeURIComponent(o.w)}`);
  if (o.timeoutMs !== undefined) p.push(`timeout=${encodeURIComponent(o.timeoutMs)}`);
  return p.length > 0 ? `?${p.join("&")}` : "";
}

/** The error of a call whose signal was aborted (`what`: a sentence's subject). */
function abortedError(signal: AbortSignal, what: string): RingstoreError {
  const reason = signal.reason instanceof Error ? `: ${signal.reason.message}` : "";
  return new RingstoreError(
    0,
    "aborted",
    `${what} was aborted${reason}`,
    { error: "aborted" },
    { cause: signal.reason },
  );
}

/** Throws `aborted` if the signal is already aborted: nothing is sent. */
function checkSignal(signal: AbortSignal | undefined, what: string): void {
  if (signal?.aborted === true) throw abortedError(signal, what);
}

function badArgument(message: string): RingstoreError {
  return new RingstoreError(0, "bad_argument", message, { error: "bad_argument" });
}

/** A header value the client was given: refused before anything is sent if HTTP cannot carry it. */
function headerValue(name: string, v: string): string {
  if (typeof v !== "string" || !/^[\t\x20-\x7e]*$/.test(v))
    throw badArgument(`${name} must be printable ASCII, got ${JSON.stringify(v)}`);
  return v;
}

/** A value to write: a string (sent as UTF-8) or bytes; anything else is refused before sending. */
function valueBytes(value: unknown): Uint8Array {
  if (typeof value === "string") return Buffer.from(value, "utf8");
  if (value instanceof Uint8Array) return value;
  throw badArgument(`a value must be a string or a Uint8Array, got ${typeof value}`);
}

/** undici's errors about the request as given (not about the network): the caller's mistake. */
const ARGUMENT_ERRORS = new Set([
  "UND_ERR_INVALID_ARG",
  "UND_ERR_INVALID_RETURN_VALUE",
  "UND_ERR_NOT_SUPPORTED",
]);

/** `http://HOST:PORT`, `https://HOST:PORT`, `HOST:PORT` -> `HOST:PORT`, and the scheme if given. */
function parseNode(node: string): { readonly addr: string; readonly scheme: "http" | "https" | undefined } {
  const m = /^(https?):\/\//i.exec(node);
  const a = node.slice(m === null ? 0 : m[0].length).replace(/\/+$/, "");
  if (a === "" || a.includes("/")) throw new RangeError(`bad node address "${node}"`);
  return { addr: a, scheme: m === null ? undefined : (m[1]!.toLowerCase() as "http" | "https") };
}

/** OpenSSL's and Node's TLS error codes (a certificate not trusted, a handshake that failed). */
function isTlsError(code: string | undefined): boolean {
  return (
    code !== undefined &&
    /^(ERR_SSL_|ERR_TLS_|UNABLE_TO_|DEPTH_ZERO_|SELF_SIGNED_|CERT_|HOSTNAME_MISMATCH)/.test(code)
  );
}

/** What to check after a failed handshake, by its code. */
function tlsHint(code: string): string {
  if (/WRONG_VERSION_NUMBER|PACKET_LENGTH_TOO_LONG|RECORD_LAYER/.test(code))
    return "does this node serve https? (a node without --tls-cert serves http://)";
  if (/ALTNAME|HOSTNAME/.test(code)) return "the node's certificate does not name the address used";
  return "pass the CA that signed the nodes' certificates (the client's ca option; ringstore --ca-file F or RINGSTORE_CA_FILE)";
}

/** Errors that mean the request never reached the server: safe to send elsewhere, even a write. */
const NOT_DELIVERED = new Set([
  "ECONNREFUSED",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EADDRNOTAVAIL",
  "ENOTFOUND",
  "EAI_AGAIN",
  "UND_ERR_CONNECT_TIMEOUT",
]);

/**
 * A node's 503 that says it is stopping or still starting (`"stopping": true`, `"starting": true`): it
 * did nothing with the request.
 */
function isStoppingAnswer(body: Buffer): boolean {
  try {
    const j = JSON.parse(body.toString("utf8")) as { stopping?: unknown; starting?: unknown };
    return j.stopping === true || j.starting === true;
  } catch {
    return false;
  }
}

function errorCode(err: unknown): string | undefined {
  let e = err as { code?: unknown; cause?: unknown; errors?: unknown } | undefined;
  for (let depth = 0; e !== undefined && e !== null && depth < 4; depth++) {
    if (typeof e.code === "string") return e.code;
    // AggregateError from happy eyeballs: take the first inner error's code.
    if (Array.isArray(e.errors) && e.errors.length > 0) e = e.errors[0] as typeof e;
    else e = e.cause as typeof e;
  }
  return undefined;
}

/** A network failure (as opposed to an HTTP answer). */
function isNetworkError(err: unknown): boolean {
  if (err instanceof RingstoreError) return false;
  const c = errorCode(err);
  // undici's own errors, and system errors (ECONNRESET, EPIPE, ...); not Node's ERR_* argument errors.
  if (c === undefined || ARGUMENT_ERRORS.has(c)) return false;
  return NOT_DELIVERED.has(c) || isTlsError(c) || c.startsWith("UND_ERR") || /^E[A-Z]+$/.test(c);
}

interface RingMemberInfo {
  readonly id: string;
  readonly api: string;
  readonly state: string;
}

interface RingView {
  readonly version: number;
  readonly partitions: number;
  readonly table: PreferenceTable;
  readonly members: Map<string, RingMemberInfo>;
  /** What the table was built from, to rebuild it only when it changes. */
  readonly shape: string;
}

interface RingAnswer {
  version: number;
  partitions: number;
  n: number;
  owners: string[];
  members: { id: string; api: string; zone: string | null; weight: number; state: string }[];
}

interface Answer {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: Buffer;
}

/** Waits `ms`, or less if `signal` is aborted meanwhile. */
function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise<void>((resolve) => {
    const done = () => {
      clearTimeout(t);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}

export class RingstoreClient {
  private readonly seeds: string[];
  private readonly pools = new Map<string, Pool>();
  private readonly avoidUntil = new Map<string, number>();
  /** Failures in a row per node, for the avoidance's backoff (cleared by a success). */
  private readonly failuresInARow = new Map<string, number>();
  private readonly connections: number;
  private readonly routing: Routing;
  private readonly httpTimeoutMs: number;
  private readonly avoidMs: number;
  private readonly now: () => number;
  private readonly scheme: "http" | "https";
  /** Headers every request carries (the token's). */
  private readonly common: Readonly<Record<string, string>>;
  private readonly ca: string | Buffer | (string | Buffer)[] | undefined;
  private ring: RingView | undefined;
  private ringFetch: Promise<void> | undefined;
  private lastRingFetchAt = 0;
  private readonly refreshTimer: NodeJS.Timeout | undefined;
  private next = 0;
  /** Set by close(): the client is closed from then on. */
  private closing: Promise<void> | undefined;
  /** JSON values (`application/json`): get, put, delete, update (typed.ts). */
  readonly json: TypedKeys<unknown> = new TypedKeys(this, jsonCodec);
  /** Text (`text/plain; charset=utf-8`): get, put, delete, update. */
  readonly string: TypedKeys<string> = new TypedKeys(this, stringCodec);

  /** Values through a codec of one's own (a schema-checked JSON, a binary format). */
  typed<T>(codec: Codec<T>): TypedKeys<T> {
    return new TypedKeys(this, codec);
  }

  /**
   * `nodes`: one API address or several (seeds), each `http://HOST:PORT`, `https://HOST:PORT` or
   * `HOST:PORT` (http, unless another seed says https).
   */
  constructor(nodes: string | readonly string[], options: ClientOptions = {}) {
    const parsed = (typeof nodes === "string" ? [nodes] : [...nodes]).map(parseNode);
    if (parsed.length === 0) throw new RangeError("RingstoreClient needs at least one node address");
    const schemes = new Set(parsed.map((p) => p.scheme).filter((x) => x !== undefined));
    if (schemes.size > 1) throw new RangeError("the nodes are all https:// or all http://, not a mix");
    this.scheme = schemes.has("https") ? "https" : "http";
    this.seeds = [...new Set(parsed.map((p) => p.addr))];
    this.common =
      options.token === undefined ? {} : { authorization: `Bearer ${headerValue("token", options.token)}` };
    this.ca =
      options.ca === undefined
        ? undefined
        : typeof options.ca === "string" || Buffer.isBuffer(options.ca)
          ? options.ca
          : [...options.ca];
    this.connections = options.connections ?? 16;
    this.routing = options.routing ?? "none";
    this.httpTimeoutMs = options.httpTimeoutMs ?? 10_000;
    this.avoidMs = options.avoidAfterFailureMs ?? 2000;
    this.now = options.clock ?? Date.now;
    if (this.routing === "partition-aware") {
      const every = options.ringRefreshMs ?? 5000;
      this.refreshTimer = setInterval(() => this.refreshRing(), every);
      this.refreshTimer.unref();
    }
  }

  // ------------------------------------------------------------------ plumbing

  private get closed(): boolean {
    return this.closing !== undefined;
  }

  private assertOpen(): void {
    if (this.closed) throw new RingstoreError(0, "closed", "the client is closed", { error: "closed" });
  }

  private pool(addr: string): Pool {
    // A request failing over while close() runs must not open a pool that nobody closes.
    this.assertOpen();
    let p = this.pools.get(addr);
    if (p === undefined) {
      const timeout = Math.min(this.httpTimeoutMs, 5000);
      p = new Pool(`${this.scheme}://${addr}`, {
        connections: this.connections,
        pipelining: 1,
        headersTimeout: this.httpTimeoutMs,
        bodyTimeout: this.httpTimeoutMs,
        connect: this.scheme === "https" && this.ca !== undefined ? { timeout, ca: this.ca } : { timeout },
      });
      this.pools.set(addr, p);
    }
    return p;
  }

  private avoided(addr: string, now: number): boolean {
    if (this.avoidUntil.size === 0) return false;
    const t = this.avoidUntil.get(addr);
    return t !== undefined && t > now;
  }

  private markFailed(addr: string): void {
    // Each failure in a row doubles the time a node is tried only after the others (up to 32x): a node
    // that is stuck (it accepts connections but never answers) costs one timeout per period, not one
    // every avoidMs.
    const k = Math.min(5, this.failuresInARow.get(addr) ?? 0);
    this.failuresInARow.set(addr, k + 1);
    this.avoidUntil.set(addr, this.now() + this.avoidMs * 2 ** k);
    if (this.routing === "partition-aware") this.refreshRing(250);
  }

  /**
   * The node to try first, without building the whole list (the common case): the key's first replica
   * that is up (partition-aware), else the next seed; undefined when every such node failed lately.
   */
  private primary(key: string | Uint8Array | undefined): string | undefined {
    const now = this.avoidUntil.size === 0 ? 0 : this.now();
    const ring = this.ring;
    if (this.routing === "partition-aware" && ring !== undefined) {
      if (key === undefined) return undefined;
      for (const id of ring.table.forPartition(partitionOf(keyBytes(key), ring.partitions))) {
        const m = ring.members.get(id);
        if (m !== undefined && m.state === "up" && m.api !== "" && !this.avoided(m.api, now)) return m.api;
      }
      return undefined;
    }
    const n = this.seeds.length;
    const start = this.next++ % n;
    for (let i = 0; i < n; i++) {
      const a = this.seeds[(start + i) % n]!;
      if (!this.avoided(a, now)) return a;
    }
    return undefined;
  }

  /** Nodes to try for a request, best first; nodes that failed lately come last. */
  private candidates(keyIn: string | Uint8Array | undefined): string[] {
    const key = keyIn === undefined ? undefined : keyBytes(keyIn);
    const now = this.now();
    const out: string[] = [];
    const seen = new Set<string>();
    const add = (a: string | undefined) => {
      if (a === undefined || a === "" || seen.has(a)) return;
      seen.add(a);
      out.push(a);
    };
    const ring = this.ring;
    if (this.routing === "partition-aware" && ring !== undefined) {
      const prefs = key === undefined ? [] : ring.table.forPartition(partitionOf(key, ring.partitions));
      const members = [...ring.members.values()];
      for (const id of prefs) {
        const m = ring.members.get(id);
        if (m?.state === "up") add(m.api);
      }
      // Any node serves any key (it forwards): members that are up next, spread by rotation; replicas
      // the ring says are down only after them, then everything else, then the seeds.
      const start = this.next++ % Math.max(1, members.length);
      for (let i = 0; i < members.length; i++) {
        const m = members[(start + i) % members.length]!;
        if (m.state === "up") add(m.api);
      }
      for (const id of prefs) add(ring.members.get(id)?.api);
      for (const m of members) add(m.api);
    }
    const start = this.next++ % this.seeds.length;
    for (let i = 0; i < this.seeds.length; i++) add(this.seeds[(start + i) % this.seeds.length]);
    const good = out.filter((a) => !this.avoided(a, now));
    const bad = out.filter((a) => this.avoided(a, now));
    return [...good, ...bad];
  }

  /**
   * Sends one request, moving to the next node when it could not be delivered (or, for reads, on any
   * network error). Every node is tried at most once.
   */
  private async send(
    method: "GET" | "PUT" | "DELETE",
    key: string | Uint8Array | undefined,
    path: string,
    headers: Record<string, string> = {},
    body?: Uint8Array,
    waitMs?: number,
    signal?: AbortSignal,
  ): Promise<Answer> {
    this.assertOpen();
    checkSignal(signal, `${method} ${path}`);
    if (this.routing === "partition-aware" && this.ring === undefined) await this.loadRing();
    checkSignal(signal, `${method} ${path}`);
    const tried: string[] = [];
    let last: unknown;
    const attempt = async (addr: string): Promise<Answer | undefined> => {
      tried.push(addr);
      try {
        // A request asked to wait longer than httpTimeoutMs gets its own wait plus 2 s for the answer.
        const t = waitMs !== undefined && waitMs + 2000 > this.httpTimeoutMs ? waitMs + 2000 : undefined;
        const timeouts = t === undefined ? {} : { headersTimeout: t, bodyTimeout: t };
        if (this.common.authorization !== undefined) headers.authorization = this.common.authorization;
        const sig = signal === undefined ? {} : { signal };
        const res = await this.pool(addr).request(
          body === undefined
            ? { method, path, headers, ...timeouts, ...sig }
            : { method, path, headers, body, ...timeouts, ...sig },
        );
        const buf = Buffer.from(await res.body.arrayBuffer());
        if (res.statusCode === 503 && isStoppingAnswer(buf)) {
          // The node is stopping and turned the request away before doing anything with it: not
          // applied, so it goes to another node like a refused connection (a write too).
          last = new Error(`${addr} is stopping or starting`);
          this.markFailed(addr);
          return undefined;
        }
        if (this.avoidUntil.size > 0) {
          this.avoidUntil.delete(addr);
          this.failuresInARow.delete(addr);
        }
        return { status: res.statusCode, headers: res.headers, body: buf };
      } catch (err) {
        // Aborted by the caller: not the node's fault, and no other node is tried.
        if (signal?.aborted === true)
          throw abortedError(
            signal,
            method === "GET" ? `${method} ${path}` : `${method} ${path} (it may have been applied)`,
          );
        if (!isNetworkError(err)) throw err;
        last = err;
        this.markFailed(addr);
        const code = errorCode(err) ?? "";
        // A failed TLS handshake sent nothing: safe elsewhere, like a refused connection.
        if (method !== "GET" && !NOT_DELIVERED.has(code) && !isTlsError(code)) {
          throw new RingstoreError(
            0,
            "unreachable",
            `${method} to ${addr} failed after it was sent (${code}): the write may have been applied`,
            { error: "unreachable", node: addr, cause: code },
            { cause: err },
          );
        }
        return undefined;
      }
    };
    const first = this.primary(key);
    if (first !== undefined) {
      const a = await attempt(first);
      if (a !== undefined) return a;
    }
    for (const addr of this.candidates(key)) {
      if (tried.includes(addr)) continue;
      const a = await attempt(addr);
      if (a !== undefined) return a;
    }
    const lastCode = errorCode(last);
    if (isTlsError(lastCode))
      throw new RingstoreError(
        0,
        "tls_error",
        `TLS with ${tried.join(", ")} failed (${lastCode}: ${(last as Error).message}): ${tlsHint(lastCode!)}`,
        { error: "tls_error", tried, cause: lastCode },
        { cause: last },
      );
    throw new RingstoreError(
      0,
      "unreachable",
      `no node could be reached (tried ${tried.join(", ")}): ${(last as Error | undefined)?.message ?? ""}${this.httpsHint(lastCode)}`,
      { error: "unreachable", tried },
      { cause: last },
    );
  }

  /** A node serving https closes a plain-HTTP connection without a word: say so when that may be it. */
  private httpsHint(code: string | undefined): string {
    return this.scheme === "http" && code === "UND_ERR_SOCKET"
      ? " (a node that serves https closes plain-HTTP connections unanswered: is it https://HOST:PORT?)"
      : "";
  }

  private fail(a: Answer): never {
    const text = a.body.toString("utf8");
    let body: Record<string, unknown>;
    try {
      body = JSON.parse(text) as Record<string, unknown>;
    } catch {
      body = { error: "unknown", message: text };
    }
    throw new RingstoreError(
      a.status,
      String(body.error ?? "unknown"),
      String(body.message ?? `HTTP ${a.status}`),
      body,
    );
  }

  // ------------------------------------------------------------------ the ring

  /** First fetch: waits for it (a failure leaves routing to the seeds until a refresh succeeds). */
  private async loadRing(): Promise<void> {
    this.refreshRing(0);
    await this.ringFetch;
  }

  /** Starts a fetch of /ring unless one is running or one started less than `minGapMs` ago. */
  private refreshRing(minGapMs = 0): void {
    if (this.closed || this.ringFetch !== undefined) return;
    const now = this.now();
    if (now - this.lastRingFetchAt < minGapMs) return;
    this.lastRingFetchAt = now;
    this.ringFetch = this.fetchRing()
      .catch(() => undefined)
      .finally(() => {
        this.ringFetch = undefined;
      });
  }

  private async fetchRing(): Promise<void> {
    const now = this.now();
    const known = this.ring === undefined ? [] : [...this.ring.members.values()];
    const order = [
      ...known.filter((m) => m.state === "up").map((m) => m.api),
      ...this.seeds,
      ...known.map((m) => m.api),
    ].filter((a) => a !== "");
    const tried = new Set<string>();
    for (const addr of [...order.filter((a) => !this.avoided(a, now)), ...order]) {
      if (tried.has(addr) || this.closed) continue;
      tried.add(addr);
      try {
        const res = await this.pool(addr).request({
          method: "GET",
          path: "/ring",
          headers: this.common,
          headersTimeout: Math.min(this.httpTimeoutMs, 3000),
        });
        const text = await res.body.text();
        if (res.statusCode !== 200) continue;
        const j = JSON.parse(text) as RingAnswer;
        if (!(j.partitions > 0) || !Array.isArray(j.owners) || j.owners.length !== j.partitions) continue;
        this.installRing(j);
        return;
      } catch {
        // try the next node
      }
    }
  }

  private installRing(j: RingAnswer): void {
    const members = new Map<string, RingMemberInfo>(
      // A member that gossips port 0 (bound to "any free port", address not yet known) cannot be reached:
      // it gets no address, and requests for its partitions go to the other replicas.
      j.members.map((m) => [m.id, { id: m.id, api: /:0$/.test(m.api) ? "" : m.api, state: m.state }]),
    );
    const ringMembers = j.members.map((m) => ({ id: m.id, weight: m.weight, zone: m.zone ?? undefined }));
    const shape = JSON.stringify([j.version, j.n, ringMembers.map((m) => [m.id, m.weight, m.zone ?? null])]);
    const prev = this.ring;
    const table =
      prev !== undefined && prev.shape === shape
        ? prev.table
        : new PreferenceTable({ partitions: j.partitions, owners: j.owners }, ringMembers, j.n);
    this.ring = { version: j.version, partitions: j.partitions, table, members, shape };
  }

  /**
   * Where a request for `key` would go, best first (API addresses), and the key's preference list as
   * the ring last fetched says (empty without partition-aware routing). For diagnostics and tests.
   */
  async route(
    key: string | Uint8Array,
  ): Promise<{ nodes: string[]; replicas: string[]; partition?: number }> {
    if (this.routing === "partition-aware" && this.ring === undefined) await this.loadRing();
    const k = keyBytes(key);
    const ring = this.ring;
    if (this.routing !== "partition-aware" || ring === undefined)
      return { nodes: this.candidates(k), replicas: [] };
    const partition = partitionOf(k, ring.partitions);
    return { nodes: this.candidates(k), replicas: [...ring.table.forPartition(partition)], partition };
  }

  // ------------------------------------------------------------------ the API

  async get(key: string | Uint8Array, options: RequestOptions = {}): Promise<GetResult> {
    const res = await this.send(
      "GET",
      key,
      `${keyPath(key)}${query(options)}`,
      {},
      undefined,
      options.timeoutMs,
      options.signal,
    );
    const context = res.headers["x-context"] as string | undefined;
    if (res.status === 200) {
      return {
        kind: "value",
        value: res.body,
        contentType: String(res.headers["content-type"] ?? ""),
        context: context!,
      };
    }
    if (res.status === 300) {
      const j = JSON.parse(res.body.toString("utf8")) as {
        context: string;
        siblings: { value: string; contentType: string; deleted: boolean }[];
      };
      return {
        kind: "siblings",
        context: j.context,
        siblings: j.siblings.map((s) => ({
          value: Buffer.from(s.value, "base64"),
          contentType: s.contentType,
          deleted: s.deleted,
        })),
      };
    }
    if (res.status === 404) {
      let j: { error?: string } = {};
      try {
        j = JSON.parse(res.body.toString("utf8")) as { error?: string };
      } catch {
        // not a ringstore answer: reported below
      }
      if (j.error === "not_found") return { kind: "not_found", context };
    }
    return this.fail(res);
  }

  /**
   * Writes `value`; pass the context of the versions it replaces. Returns the new version's context.
   * Without `contentType`, a string is stored as `text/plain; charset=utf-8` (STRING_CONTENT_TYPE, as
   * `ringstore put KEY VALUE` stores it) and bytes as `application/octet-stream`.
   */
  async put(
    key: string | Uint8Array,
    value: string | Uint8Array,
    options: RequestOptions & { context?: string | undefined; contentType?: string } = {},
  ): Promise<string> {
    const type =
      options.contentType ?? (typeof value === "string" ? STRING_CONTENT_TYPE : BYTES_CONTENT_TYPE);
    const headers = { "content-type": headerValue("contentType", type) };
    return this.writeKey("PUT", key, options, headers, valueBytes(value));
  }

  /**
   * Deletes a key. Without `context` it reads the key first and deletes exactly what it read, so the
   * tombstone supersedes the live versions (a delete with no context would be concurrent with them and
   * leave them as siblings of the tombstone); a write that lands between the read and the delete stays.
   * With `context`, it deletes what that context covers, without reading.
   *
   * Returns the tombstone's context. A key with nothing live (never written, or already deleted) is not
   * an error: nothing is written and it returns undefined, as `ringstore delete` says "not found: nothing
   * to delete" and exits 0, and `DELETE /kv/KEY` answers 204.
   */
  async delete(
    key: string | Uint8Array,
    options: RequestOptions & { context?: string | undefined } = {},
  ): Promise<string | undefined> {
    if (options.context !== undefined) return this.writeKey("DELETE", key, options, {}, undefined);
    const read: RequestOptions = {
      ...(options.r !== undefined ? { r: options.r } : {}),
      ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
      ...(options.signal !== undefined ? { signal: options.signal } : {}),
    };
    const cur = await this.get(key, read);
    if (cur.kind === "not_found") return undefined;
    return this.writeKey("DELETE", key, { ...options, context: cur.context }, {}, undefined);
  }

  /** A PUT or DELETE of a key: with the context's header, if any; returns the new version's context. */
  private async writeKey(
    method: "PUT" | "DELETE",
    key: string | Uint8Array,
    options: RequestOptions & { context?: string | undefined },
    headers: Record<string, string>,
    body: Uint8Array | undefined,
  ): Promise<string> {
    if (options.context !== undefined) headers["x-context"] = headerValue("context", options.context);
    const res = await this.send(
      method,
      key,
      `${keyPath(key)}${query(options)}`,
      headers,
      body,
      options.timeoutMs,
      options.signal,
    );
    if (res.status === 200 || res.status === 204) return res.headers["x-context"] as string;
    return this.fail(res);
  }

  /**
   * Read, merge, write back: reads `key`, calls `fn` with its live values (the single value, or every
   * live sibling; an empty list when the key is not found or deleted), and writes fn's result with the
   * context of that read (`undefined` from fn deletes the key).
   *
   * What it guarantees. The written version supersedes exactly the versions the read context covers, and
   * fn saw every one of those: nothing fn did not see is ever replaced. With dotted version vectors a
   * write that ran concurrently with this cycle (between the read and the write, through any node) does
   * not make this write fail: both stay, as siblings, and the next read (or the next `update`) hands both
   * to the merge function. So no concurrent update is lost, as long as fn merges (a set union, a counter
   * per writer, ...) rather than picks one value.
   *
   * Retries. The cycle starts again from the read (at most `maxAttempts` cycles, with jittered
   * exponential backoff) on 409 too_many_siblings, 503 unavailable, and on network errors. A write that
   * got 503 or lost its connection may have been applied on some replicas; the next read then returns
   * it (or it resurfaces later as a sibling), so fn must be idempotent in the sense that merging a value
   * with itself changes nothing. fn runs once per cycle. Other errors (400, 413, ...) are thrown at once.
   */
  async update(key: string | Uint8Array, fn: UpdateFn, options: UpdateOptions = {}): Promise<UpdateResult> {
    const k = key;
    const maxAttempts = Math.max(1, options.maxAttempts ?? 5);
    const base = options.retryDelayMs ?? 20;
    const rw: RequestOptions = {
      ...(options.r !== undefined ? { r: options.r } : {}),
      ...(options.w !== undefined ? { w: options.w } : {}),
      ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
      ...(options.signal !== undefined ? { signal: options.signal } : {}),
    };
    let lastErr: unknown;
    for (let attempt = 1; attempt <= maxAttempts; attempt++) {
      try {
        const cur = await this.get(k, rw);
        const siblings: Sibling[] =
          cur.kind === "value"
            ? [{ value: cur.value, contentType: cur.contentType, deleted: false }]
            : cur.kind === "siblings"
              ? cur.siblings
              : [];
        const live = siblings.filter((s) => !s.deleted);
        const out = await fn(
          live.map((s) => s.value),
          { values: live.map((s) => s.value), siblings, context: cur.context, attempt },
        );
        if (out === undefined) {
          // Nothing live and nothing to supersede: a delete would only add a tombstone.
          if (live.length === 0 && cur.kind === "not_found")
            return { context: cur.context, value: undefined, deleted: true, attempts: attempt };
          const context = await this.delete(k, { ...rw, context: cur.context });
          return { context, value: undefined, deleted: true, attempts: attempt };
        }
        const value = typeof out === "string" ? Buffer.from(out, "utf8") : Buffer.from(out);
        // The siblings' type when they all share one, else bytes.
        const types = new Set(live.map((s) => s.contentType));
        const contentType =
          options.contentType ?? (types.size === 1 ? [...types][0]! : "application/octet-stream");
        const context = await this.put(k, value, { ...rw, context: cur.context, contentType });
        return { context, value, deleted: false, attempts: attempt };
      } catch (err) {
        const retryable =
          err instanceof RingstoreError &&
          (err.code === "too_many_siblings" || err.code === "unavailable" || err.code === "unreachable");
        if (!retryable || attempt === maxAttempts) throw err;
        lastErr = err;
        const delay = Math.min(1000, base * 2 ** (attempt - 1)) * (0.5 + Math.random());
        await sleep(delay, options.signal);
        checkSignal(options.signal, "the update");
      }
    }
    throw lastErr;
  }

  /**
   * One page of the cluster's live keys (`GET /kv/?limit=N&cursor=C`): its keys, as bytes, and the cursor
   * of the next page (null: the listing is done). The cursor is opaque and good on any node.
   */
  async listKeys(options: ListKeysOptions = {}): Promise<KeyPage> {
    const p = new URLSearchParams();
    if (options.limit !== undefined) p.set("limit", String(options.limit));
    if (options.cursor !== undefined) p.set("cursor", options.cursor);
    const qs = p.size > 0 ? `?${p}` : "";
    const res = await this.send("GET", undefined, `/kv/${qs}`, {}, undefined, undefined, options.signal);
    if (res.status !== 200) return this.fail(res);
    const j = JSON.parse(res.body.toString("utf8")) as { keys: string[]; cursor: string | null };
    return { keys: j.keys.map(decodeKey), cursor: j.cursor };
  }

  /**
   * Every live key of the cluster, page after page (`listKeys`), each once: the keys written before the
   * listing started and not deleted since. It is not a snapshot (a key written or deleted meanwhile may
   * or may not appear), and the keys come in no particular order. A page that fails (no replica of some
   * partitions reachable) throws; `cursor` resumes a listing where a page left off (`onPage` gets each).
   */
  async *keys(options: KeysOptions = {}): AsyncGenerator<Buffer, void, undefined> {
    let cursor = options.cursor;
    for (;;) {
      checkSignal(options.signal, "the key listing");
      const page = await this.listKeys({
        limit: options.pageSize,
        cursor,
        ...(options.signal !== undefined ? { signal: options.signal } : {}),
      });
      options.onPage?.(page);
      yield* page.keys;
      if (page.cursor === null) return;
      cursor = page.cursor;
    }
  }

  /** This node's view of the cluster (`GET /status`): of `node` if given, else of any node. */
  async status(node?: string, options: CallOptions = {}): Promise<Record<string, unknown>> {
    const res =
      node === undefined
        ? await this.send("GET", undefined, "/status", {}, undefined, undefined, options.signal)
        : await this.direct(node, "GET", "/status", options.signal);
    if (res.status !== 200) return this.fail(res);
    return JSON.parse(res.body.toString("utf8")) as Record<string, unknown>;
  }

  /** `GET /health` of `node` (no failover): true when it answers 200. */
  async health(node: string, options: CallOptions = {}): Promise<boolean> {
    return (await this.direct(node, "GET", "/health", options.signal)).status === 200;
  }

  /**
   * The dashboard's figures of `node` (`GET /ui/state`, without the history it keeps: views in
   * src/ui/document.ts), such as its storage's key counts and its handoff's progress.
   */
  async dashboard(node: string, options: CallOptions = {}): Promise<Record<string, unknown>> {
    const res = await this.direct(
      node,
      "GET",
      `/ui/state?since=${Number.MAX_SAFE_INTEGER}&events=${Number.MAX_SAFE_INTEGER}`,
      options.signal,
    );
    if (res.status !== 200) return this.fail(res);
    return JSON.parse(res.body.toString("utf8")) as Record<string, unknown>;
  }

  /**
   * Asks `node` to leave the cluster (`POST /cluster/leave`; the token needs the admin role): its answer
   * once the leave started (`{node, remaining, ...}`), else a RingstoreError (409 `leave_refused`, 503
   * `unavailable`, 401, 403).
   */
  async leave(
    node: string,
    options: CallOptions & { readonly force?: boolean } = {},
  ): Promise<Record<string, unknown>> {
    return this.membership(
      node,
      `/cluster/leave${options.force === true ? "?force=true" : ""}`,
      options.signal,
    );
  }

  /**
   * Asks `node` (any live member) to remove member `id` on its behalf (`POST /cluster/remove`; admin
   * role): its answer (`{removed, remaining, ...}`), else a RingstoreError (409 `remove_refused`, ...).
   */
  async remove(
    node: string,
    id: string,
    options: CallOptions & { readonly force?: boolean } = {},
  ): Promise<Record<string, unknown>> {
    const q = new URLSearchParams({ id });
    if (options.force === true) q.set("force", "true");
    return this.membership(node, `/cluster/remove?${q}`, options.signal);
  }

  /**
   * What a change of the ring would move (`GET /cluster/plan`, computed by `node`; admin role): the
   * plan, else a RingstoreError (409 `plan_refused`, 400 `bad_parameter`, ...). Changes nothing.
   */
  async plan(
    node: string,
    change: {
      readonly change: string;
      readonly id: string;
      readonly weight?: number;
      readonly zone?: string;
    },
  ): Promise<Record<string, unknown>> {
    const q = new URLSearchParams({ change: change.change, id: change.id });
    if (change.weight !== undefined) q.set("weight", String(change.weight));
    if (change.zone !== undefined) q.set("zone", change.zone);
    const res = await this.direct(node, "GET", `/cluster/plan?${q}`, undefined);
    if (res.status !== 200) return this.fail(res);
    return JSON.parse(res.body.toString("utf8")) as Record<string, unknown>;
  }

  /**
   * Sets the weight of `node`, the member whose API that is (`POST /cluster/weight`; admin role), `id`
   * its id if given (checked there): `{node, weight, was}`, else a RingstoreError (409 `weight_refused`).
   */
  async setWeight(node: string, weight: number, id?: string): Promise<Record<string, unknown>> {
    const q = new URLSearchParams({ weight: String(weight) });
    if (id !== undefined) q.set("id", id);
    const res = await this.direct(node, "POST", `/cluster/weight?${q}`, undefined);
    if (res.status !== 200) return this.fail(res);
    return JSON.parse(res.body.toString("utf8")) as Record<string, unknown>;
  }

  /**
   * Sets the handoff throttle of `node` (`POST /cluster/handoff`; admin role), bytes per second:
   * `{node, bytesPerSecond, was}`, else a RingstoreError.
   */
  async setHandoffRate(node: string, bytesPerSecond: number): Promise<Record<string, unknown>> {
    const res = await this.direct(
      node,
      "POST",
      `/cluster/handoff?bytesPerSecond=${Math.round(bytesPerSecond)}`,
      undefined,
    );
    if (res.status !== 200) return this.fail(res);
    return JSON.parse(res.body.toString("utf8")) as Record<string, unknown>;
  }

  /**
   * Starts a full compaction of `node`'s storage (`POST /storage/compact`, admin): the answer's
   * `compaction` is its progress. One running already: a RingstoreError 409 `compaction_running` whose
   * body's `compaction` is that one's.
   */
  async compactStorage(node: string, options: CallOptions = {}): Promise<Record<string, unknown>> {
    const res = await this.direct(node, "POST", "/storage/compact", options.signal);
    if (res.status !== 202) return this.fail(res);
    return JSON.parse(res.body.toString("utf8")) as Record<string, unknown>;
  }

  private async membership(
    node: string,
    pathAndQuery: string,
    signal: AbortSignal | undefined,
  ): Promise<Record<string, unknown>> {
    const res = await this.direct(node, "POST", pathAndQuery, signal);
    if (res.status !== 202) return this.fail(res);
    return JSON.parse(res.body.toString("utf8")) as Record<string, unknown>;
  }

  /** One request to one node (no failover): a network failure is `unreachable` (or `tls_error`). */
  private async direct(
    node: string,
    method: "GET" | "POST",
    path: string,
    signal: AbortSignal | undefined,
  ): Promise<Answer> {
    this.assertOpen();
    checkSignal(signal, `${method} ${path}`);
    const { addr, scheme } = parseNode(node);
    if (scheme !== undefined && scheme !== this.scheme)
      throw new RangeError(
        `${node}: this client speaks ${this.scheme}:// (its nodes are all one or the other)`,
      );
    try {
      const r = await this.pool(addr).request({
        method,
        path,
        headers: this.common,
        ...(signal === undefined ? {} : { signal }),
      });
      return { status: r.statusCode, headers: r.headers, body: Buffer.from(await r.body.arrayBuffer()) };
    } catch (err) {
      if (signal?.aborted === true) throw abortedError(signal, `${method} ${path} to ${addr}`);
      if (!isNetworkError(err)) throw err;
      const code = errorCode(err);
      if (isTlsError(code))
        throw new RingstoreError(
          0,
          "tls_error",
          `TLS with ${addr} failed (${code}: ${(err as Error).message}): ${tlsHint(code!)}`,
          { error: "tls_error", node: addr, cause: code },
          { cause: err },
        );
      throw new RingstoreError(
        0,
        "unreachable",
        `${addr}: ${(err as Error).message}${this.httpsHint(code)}`,
        { error: "unreachable", node: addr },
        { cause: err },
      );
    }
  }

  /** Closes every connection; requests still running fail with `closed`. A second call waits for the first. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      if (this.refreshTimer !== undefined) clearInterval(this.refreshTimer);
      await this.ringFetch;
      await Promise.all([...this.pools.values()].map((p) => p.close()));
      this.pools.clear();
    })();
    return this.closing;
  }
}

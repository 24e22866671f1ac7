/**
 * The API's bounds on its clients, and their defaults (flags `--api-max-connections`,
 * `--api-max-in-flight`, `--api-headers-timeout`, `--api-body-timeout`). What happens at each bound is
 * http-server.ts's; each is counted in `ringstore_api_refused_total{reason}`.
 *
 * maxConnections 1024. An idle connection costs the node a socket and an HTTP parser, some tens of KiB
 *   (the kernel's buffers aside); 1024 of them stay well under 100 MiB, and under the usual limit of open
 *   files (the node needs others for its tables and peers). A client pool keeps 16 per node by default,
 *   so 64 such clients fit. Past it, a connection is answered 503 `overloaded` (or 200 for /health) and
 *   closed; 64 more (REFUSAL_SLOTS) can be waiting for that answer at once, beyond which the kernel's
 *   connection is closed at once, without a word.
 * maxInFlight 256. Each request in flight may hold its body (a value, 1 MiB by default): 256 of them are
 *   at most 256 MiB. A node serves a few thousand requests a second at a few ms each, so 256 in flight is
 *   tens of times its usual concurrency: past it the node is overloaded, and an immediate 503 (not
 *   applied, Retry-After 1) tells a client to back off or go elsewhere instead of queueing for seconds.
 * headersTimeoutMs 10 s. A client sends its request line and headers in one packet; 10 s covers the
 *   slowest real link, and bounds a client that trickles headers (slowloris), or opens a connection and
 *   sends nothing, to 10 s of a connection slot.
 * bodyTimeoutMs 30 s, for the whole request (headers and body). At the default 1 MiB value limit a body
 *   must come at 35 KiB/s or faster; Node's own default (300 s) let one trickled body hold a connection
 *   and a request slot for five minutes. With a larger --max-value-bytes raise it to match (64 MiB in
 *   30 s needs 2.2 MiB/s).
 */

export interface ApiServerLimits {
  /** Open client connections; more are answered 503 `overloaded` and closed. */
  readonly maxConnections: number;
  /** Requests being served at once (not /health); more are answered 503 `overloaded` at once. */
  readonly maxInFlight: number;
  /** A request's line and headers must arrive within this (408 and closed otherwise). */
  readonly headersTimeoutMs: number;
  /** A request's headers and body must arrive within this (408 and closed otherwise). */
  readonly bodyTimeoutMs: number;
}

export const API_LIMIT_DEFAULTS: ApiServerLimits = {
  maxConnections: 1024,
  maxInFlight: 256,
  headersTimeoutMs: 10_000,
  bodyTimeoutMs: 30_000,
};

/** Connections past maxConnections that may wait for their 503 at once; past them, closed at accept. */
export const REFUSAL_SLOTS = 64;
/** How long a connection past maxConnections has to send its request and read the 503. */
export const REFUSED_CONNECTION_MS = 1000;

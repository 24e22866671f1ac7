/**
 * The public HTTP API (../shared/spec/http-api.md): keys, values, contexts, quorum parameters, the
 * status codes and JSON error bodies, and the operational endpoints.
 *
 * This layer only translates: it parses and validates everything about a request before any state
 * changes (so a bad key, context or parameter changes nothing), asks the coordinator, and renders the
 * outcome. Every error response is `{"error": code, "message": text, ...details}`.
 *
 * It is built on node:http alone, its few routes matched by hand. It was built on fastify first; the
 * framework cost 10-20 us of CPU a request over bare node:http (`npm run bench:costs`), about 12% of a
 * single node's busy time in a profile of a GET and PUT load, and its general machinery (a router for
 * raw-byte keys it could not parse, a content-type parser to bypass, hooks to undo a rewritten URL and
 * a replaced Content-Type) only stood between the contract and the wire. Here a value's body is read
 * into a buffer of at most the value limit; a larger one is answered 413 at once (from its
 * Content-Length when it has one, and before the body is sent when the client asks
 * `Expect: 100-continue`) while the rest of it is read and dropped, so the client reads the 413 rather
 * than a reset connection.
 */
import * as http from "node:http";
import type { Socket } from "node:net";
import { performance } from "node:perf_hooks";
import { parse as parseQueryString } from "node:querystring";
import type { KvService } from "../replication/coordinator.js";
import { decodeContext, encodeContext, InvalidContextError } from "../versioning/context-token.js";
import { contextOf, type VersionVector } from "../versioning/dvv.js";
import type { StoredSibling } from "../versioning/object-codec.js";
import type { NodeMetrics } from "./metrics.js";

export interface ApiLimits {
  readonly maxKeyBytes: number;
  readonly maxValueBytes: number;
  readonly maxContextChars: number;
}

export interface ApiDeps {
  readonly service: KvService;
  readonly secret: Uint8Array;
  readonly n: number;
  readonly r: number;
  readonly w: number;
  readonly requestTimeoutMs: number;
  readonly maxTimeoutMs: number;
  readonly limits: ApiLimits;
  readonly metrics: NodeMetrics;
  /** Wall clock for writtenAt (tombstone expiry); never used to order versions. */
  readonly now: () => number;
  readonly status: () => Promise<unknown>;
  /** The ring as clients need it for routing: partitions, owners, and each member's API address. */
  readonly ring: () => unknown;
  /**
   * Starts this node's leave (`POST /cluster/leave`): what to answer, or rejects with an error with
   * `code: "leave_refused"` and the reason.
   */
  readonly leave?: (force: boolean) => Promise<unknown>;
  /** Removes another member on its behalf (`POST /cluster/remove?id=ID`); rejects with `remove_refused`. */
  readonly remove?: (id: string, force: boolean) => Promise<unknown>;
}

type ErrorCode =
  | "bad_key"
  | "bad_context"
  | "bad_parameter"
  | "value_too_large"
  | "not_found"
  | "too_many_siblings"
  | "unavailable"
  | "overloaded"
  | "method_not_allowed"
  | "bad_request"
  | "leave_refused"
  | "remove_refused"
  | "internal";

class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: ErrorCode,
    message: string,
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
  }
}

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

function single(q: Record<string, unknown>, name: string): string | undefined {
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

function parseTimeout(v: string | undefined, dflt: number, max: number): number {
  if (v === undefined) return dflt;
  if (!/^[0-9]{1,9}$/.test(v) || Number(v) < 1 || Number(v) > max)
    throw new ApiError(
      400,
      "bad_parameter",
      `timeout must be an integer number of milliseconds, 1..${max}; got "${v}"`,
    );
  return Number(v);
}

function contextHeader(req: http.IncomingMessage): string | undefined {
  const h = req.headers["x-context"];
  if (h === undefined) return undefined;
  // Node joins repeated headers with ", ", which no token contains (base64url).
  if (Array.isArray(h) || h.includes(","))
    throw new ApiError(400, "bad_context", "X-Context given more than once");
  return h;
}

/** The causal history of one version: its context plus its own dot. */
function historyOf(s: StoredSibling): VersionVector {
  const out = new Map(s.context);
  if ((out.get(s.dot.actor) ?? 0) < s.dot.counter) out.set(s.dot.actor, s.dot.counter);
  return out;
}

/**
 * Requests Node's HTTP parser refuses before any route sees them (malformed, or a request line and
 * headers over the size limit, as a key far beyond its limit makes them): a JSON error body in the
 * contract's form, then the connection is closed.
 */
function clientError(maxKeyBytes: number) {
  return (err: Error & { code?: string }, socket: Socket): void => {
    if (err.code === "ECONNRESET" || socket.destroyed) return;
    let status = 400;
    let body: Record<string, string>;
    if (err.code === "ERR_HTTP_REQUEST_TIMEOUT") {
      status = 408;
      body = { error: "bad_request", message: "the request did not arrive in time" };
    } else if (err.code === "HPE_HEADER_OVERFLOW") {
      body = {
        error: "bad_request",
        message: `the request line and headers exceed ${http.maxHeaderSize} bytes (a key is at most ${maxKeyBytes} bytes)`,
      };
    } else {
      body = { error: "bad_request", message: `malformed HTTP request (${err.code ?? err.message})` };
    }
    const text = JSON.stringify(body);
    if (socket.writable)
      socket.write(
        `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(text)}\r\nconnection: close\r\n\r\n${text}`,
      );
    socket.destroy();
  };
}

const JSON_TYPE = "application/json; charset=utf-8";
/**
 * How much of a body over the value limit is read and dropped after the 413, so that a client still
 * sending reads the answer rather than a reset connection; past this the connection is closed.
 */
const DRAIN_LIMIT_BYTES = 64 * 1024 * 1024;
/** How long close() lets requests in flight finish before it closes their connections. */
const CLOSE_GRACE_MS = 5000;
/**
 * How long close() keeps listening and keeps idle keep-alive connections open, answering every request
 * with 503 `stopping` (and Connection: close), before it stops listening and closes the idle ones.
 * Closing an idle connection at once races with a client that has just sent a request on it: the client
 * sees a reset, cannot tell whether its write was applied, and must report "may have been applied". A
 * 503 `stopping` says the request was not applied, so the client can send it to another node.
 */
const STOP_DRAIN_MS = 300;
/** As fastify had it, and longer than clients' idle timeouts (undici 4 s): the server never closes first. */
const KEEP_ALIVE_TIMEOUT_MS = 72_000;

/** The node's HTTP API: its server, and how it starts and stops. */
export interface HttpApi {
  readonly server: http.Server;
  /** Listens on host:port (port 0: any free port); resolves to the port bound. */
  listen(host: string, port: number): Promise<number>;
  /**
   * Stops the API. From the call on, every new request gets 503 `unavailable` with `stopping: true` (and
   * its connection is closed after the answer); requests in flight finish (for up to 5 s). While any
   * connection is open it keeps listening for STOP_DRAIN_MS first, so that a request sent on an idle
   * keep-alive connection gets that 503 instead of a reset; then it stops listening and closes the idle
   * connections. Calls after the first return the same promise.
   */
  close(): Promise<void>;
}

type Query = Record<string, string | string[] | undefined>;

/** One request as the handlers see it. */
interface Call {
  readonly req: http.IncomingMessage;
  readonly res: http.ServerResponse;
  readonly method: string;
  /** The URL as sent, and its path (before any `?`), still percent-encoded. */
  readonly rawUrl: string;
  readonly path: string;
  /** The operation a /kv/ request is counted under in the metrics (get, put, delete), else undefined. */
  readonly op: string | undefined;
  /** When it arrived (performance.now()), for the latency histogram. */
  readonly started: number;
  /** The client sent `Expect: 100-continue` and waits for a 100 before it sends the body. */
  awaitingContinue: boolean;
  /** Its place among the requests received on its connection (1, 2, ...; see lastOnSocket). */
  readonly seq: number;
}

/**
 * The number of the last request received on each connection. While the node stops, the answer to a
 * connection's last request says `Connection: close` (the client then opens no new request on it); an
 * answer to an earlier one does not, or Node would close the connection before the answers queued
 * behind it (pipelined requests) went out.
 */
const lastOnSocket = new WeakMap<Socket, number>();

function kvOp(method: string): string | undefined {
  switch (method) {
    case "GET":
    case "HEAD":
      return "get";
    case "PUT":
      return "put";
    case "DELETE":
      return "delete";
    default:
      return undefined;
  }
}

function queryOf(c: Call): Query {
  const q = c.rawUrl.indexOf("?");
  // maxKeys 0: every parameter is read (querystring stops at 1,000 by default: a parameter after them
  // would be silently ignored); the request line's length bounds their number.
  return q < 0 ? {} : parseQueryString(c.rawUrl.slice(q + 1), "&", "=", { maxKeys: 0 });
}

interface Route {
  /** GET routes answer HEAD as well. */
  readonly method: "GET" | "POST";
  readonly run: (c: Call) => Promise<void> | void;
}

export function buildHttpApi(deps: ApiDeps): HttpApi {
  const m = deps.metrics;
  const secret = deps.secret;
  const limits = deps.limits;
  let closing = false;
  let stopped: Promise<void> | undefined;

  /** Writes the whole response, once; counts a /kv/ request under its final status. */
  const respond = (
    c: Call,
    status: number,
    headers: http.OutgoingHttpHeaders,
    body: Buffer | string | undefined,
  ): void => {
    const res = c.res;
    if (res.headersSent) return;
    if (res.destroyed) {
      // The client went away before its answer (nginx's 499): counted, so that the metrics show
      // requests that were worked on (a write may have been applied) but never answered.
      if (c.op !== undefined) m.observeRequest(c.op, 499, (performance.now() - c.started) / 1000);
      return;
    }
    if (status !== 204)
      headers["content-length"] =
        body === undefined ? 0 : typeof body === "string" ? Buffer.byteLength(body) : body.length;
    // A client still waiting for a 100 Continue will not send its body on this connection; a stopping
    // node takes no further request on it.
    if (c.awaitingContinue || (closing && lastOnSocket.get(c.req.socket) === c.seq))
      headers.connection = "close";
    res.writeHead(status, headers);
    res.end(body);
    if (c.op !== undefined) m.observeRequest(c.op, status, (performance.now() - c.started) / 1000);
  };
  const sendJson = (c: Call, status: number, value: unknown, headers: http.OutgoingHttpHeaders = {}) => {
    headers["content-type"] = JSON_TYPE;
    respond(c, status, headers, JSON.stringify(value));
  };
  const sendError = (
    c: Call,
    status: number,
    code: ErrorCode,
    message: string,
    details: Record<string, unknown> = {},
    headers: http.OutgoingHttpHeaders = {},
  ) => sendJson(c, status, { error: code, message, ...details }, headers);

  const fail = (c: Call, err: unknown): void => {
    if (err instanceof ApiError) {
      sendError(c, err.status, err.code, err.message, err.details);
      return;
    }
    if (c.res.headersSent || c.res.destroyed) return;
    sendError(c, 500, "internal", `internal error: ${(err as Error)?.message ?? String(err)}`);
  };

  const tooLarge = (c: Call): void => {
    const headers: http.OutgoingHttpHeaders = {};
    const declared = Number(c.req.headers["content-length"]);
    if (!c.awaitingContinue) {
      if (declared > DRAIN_LIMIT_BYTES) headers.connection = "close";
      else {
        // Read and drop the rest, so that the client reads the 413; bounded.
        let dropped = 0;
        c.req.on("data", (chunk: Buffer) => {
          dropped += chunk.length;
          if (dropped > DRAIN_LIMIT_BYTES) c.req.socket.destroy();
        });
        c.req.resume();
      }
    }
    sendError(
      c,
      413,
      "value_too_large",
      `the value exceeds ${limits.maxValueBytes} bytes; nothing was stored`,
      { limit: limits.maxValueBytes },
      headers,
    );
  };

  /** The request's body, or undefined when it is over the value limit (the 413 is sent). */
  const readBody = (c: Call): Promise<Buffer | undefined> => {
    const limit = limits.maxValueBytes;
    if (Number(c.req.headers["content-length"]) > limit) {
      tooLarge(c);
      return Promise.resolve(undefined);
    }
    if (c.awaitingContinue) {
      c.res.writeContinue();
      c.awaitingContinue = false;
    }
    const req = c.req;
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      const done = () => {
        req.off("data", onData);
        req.off("end", onEnd);
        req.off("close", onClose);
      };
      const onData = (chunk: Buffer) => {
        size += chunk.length;
        if (size > limit) {
          done();
          tooLarge(c);
          resolve(undefined);
        } else chunks.push(chunk);
      };
      const onEnd = () => {
        done();
        resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size));
      };
      const onClose = () => {
        done();
        reject(new Error("the client closed the connection before the request's body arrived"));
      };
      req.on("data", onData);
      req.on("end", onEnd);
      req.on("close", onClose);
    });
  };

  const kvGet = async (c: Call): Promise<void> => {
    const key = parseKey(c.rawUrl, limits.maxKeyBytes);
    const q = queryOf(c);
    const r = parseQuorum(single(q, "r"), "r", deps.r, deps.n);
    const timeout = parseTimeout(single(q, "timeout"), deps.requestTimeoutMs, deps.maxTimeoutMs);
    const out = await deps.service.get(key, r, timeout);
    if (out.kind === "unavailable") {
      m.replicaTimeouts.inc();
      return sendError(
        c,
        503,
        "unavailable",
        `only ${out.replied} of the ${out.needed} replicas needed replied in time`,
        { needed: out.needed, replied: out.replied },
      );
    }
    const sibs = out.siblings;
    m.siblings.observe(sibs.length);
    const live = sibs.filter((s) => !s.value.deleted);
    const headers: http.OutgoingHttpHeaders = {};
    const context = sibs.length > 0 ? encodeContext(contextOf(sibs), key, secret) : undefined;
    if (context !== undefined) headers["x-context"] = context;
    if (live.length === 0)
      return sendError(
        c,
        404,
        "not_found",
        sibs.length > 0 ? "the key is deleted" : "no such key",
        {},
        headers,
      );
    if (sibs.length === 1) {
      const v = live[0]!.value;
      // The value's own Content-Type, as stored, even where it is not a valid media type.
      headers["content-type"] = v.contentType;
      return respond(c, 200, headers, Buffer.from(v.data));
    }
    sendJson(
      c,
      300,
      {
        context,
        siblings: sibs.map((s) => ({
          value: s.value.deleted ? "" : Buffer.from(s.value.data).toString("base64"),
          contentType: s.value.contentType,
          deleted: s.value.deleted,
        })),
      },
      headers,
    );
  };

  const kvWrite = async (c: Call, deleted: boolean): Promise<void> => {
    // Everything but the body is checked first: a bad request is refused before its body is read.
    const key = parseKey(c.rawUrl, limits.maxKeyBytes);
    const q = queryOf(c);
    const w = parseQuorum(single(q, "w"), "w", deps.w, deps.n);
    const timeout = parseTimeout(single(q, "timeout"), deps.requestTimeoutMs, deps.maxTimeoutMs);
    const token = contextHeader(c.req);
    let context: VersionVector = new Map();
    if (token !== undefined) {
      if (token.length > limits.maxContextChars)
        throw new ApiError(400, "bad_context", "X-Context is too long");
      try {
        context = decodeContext(token, key, secret);
      } catch (err) {
        if (err instanceof InvalidContextError) throw new ApiError(400, "bad_context", err.message);
        throw err;
      }
    }
    // A DELETE's body, if any, is read (within the same limit) and dropped.
    const body = await readBody(c);
    if (body === undefined) return;
    const sent = c.req.headers["content-type"];
    const ct = deleted ? "" : sent === undefined || sent === "" ? "application/octet-stream" : sent;
    const out = await deps.service.write(
      key,
      context,
      {
        data: deleted ? Buffer.alloc(0) : body,
        contentType: ct,
        deleted,
        writtenAtMs: Math.max(0, Math.floor(deps.now())),
      },
      w,
      timeout,
    );
    if (out.kind === "too_many_siblings")
      return sendError(
        c,
        409,
        "too_many_siblings",
        `the key already holds ${out.siblings} siblings (the maximum is ${out.max}): read it, resolve the siblings, and write back with the context`,
        { siblings: out.siblings, max: out.max },
      );
    if (out.kind === "unavailable") {
      m.replicaTimeouts.inc();
      return sendError(
        c,
        503,
        "unavailable",
        `only ${out.acked} of the ${out.needed} replica acknowledgements needed arrived in time; the write may have been applied on some replicas (it is not rolled back)`,
        { needed: out.needed, acked: out.acked },
      );
    }
    if (out.kind === "overloaded")
      return sendError(
        c,
        503,
        "overloaded",
        out.limit === "waiters_per_key"
          ? `the key has too many writes waiting on this node (${out.max}); the write was NOT applied: retry it later`
          : `this node has writes under way to too many keys (${out.max}); the write was NOT applied: retry it later`,
        { limit: out.limit, max: out.max, applied: false },
        { "retry-after": "1" },
      );
    m.siblings.observe(out.set.length);
    respond(c, 204, { "x-context": encodeContext(historyOf(out.written), key, secret) }, undefined);
  };

  /** `force` from the query: true, false (absent), or an ApiError. */
  const forceOf = (q: Query): boolean => {
    const force = q.force;
    if (force !== undefined && force !== "true" && force !== "false")
      throw new ApiError(400, "bad_parameter", `force must be true or false, got ${JSON.stringify(force)}`);
    return force === "true";
  };
  /**
   * Runs a membership operation: 202 with its answer, 409 with the reason it was refused, 503 when it
   * could not be decided now.
   */
  const membershipOp = async (c: Call, run: () => Promise<unknown>): Promise<void> => {
    let answer: unknown;
    try {
      answer = await run();
    } catch (err) {
      const code = (err as { code?: unknown })?.code;
      // Refused for now (the claimant could not decide it): 503, ask again; refused for good: 409.
      if (code === "unavailable") sendError(c, 503, code, (err as Error).message);
      else if (code === "leave_refused" || code === "remove_refused")
        sendError(c, 409, code, (err as Error).message);
      else throw err;
      return;
    }
    sendJson(c, 202, answer);
  };

  const routes = new Map<string, Route>([
    ["/health", { method: "GET", run: (c) => sendJson(c, 200, { status: "ok" }) }],
    ["/status", { method: "GET", run: async (c) => sendJson(c, 200, await deps.status()) }],
    ["/ring", { method: "GET", run: (c) => sendJson(c, 200, deps.ring()) }],
    [
      "/metrics",
      {
        method: "GET",
        run: async (c) => respond(c, 200, { "content-type": m.contentType }, await m.render()),
      },
    ],
    [
      "/cluster/leave",
      {
        method: "POST",
        run: (c) => {
          const leave = deps.leave;
          if (leave === undefined) return sendError(c, 404, "not_found", "this node cannot leave a cluster");
          const force = forceOf(queryOf(c));
          return membershipOp(c, () => leave(force));
        },
      },
    ],
    [
      "/cluster/remove",
      {
        method: "POST",
        run: (c) => {
          const remove = deps.remove;
          if (remove === undefined) return sendError(c, 404, "not_found", "this node cannot remove members");
          const q = queryOf(c);
          const force = forceOf(q);
          if (typeof q.id !== "string" || q.id === "")
            return sendError(c, 400, "bad_parameter", "id (the member to remove) is required, once");
          const id = q.id;
          return membershipOp(c, () => remove(id, force));
        },
      },
    ],
  ]);

  const route = (c: Call): Promise<void> | void => {
    if (c.path.startsWith("/kv/")) {
      // c.op: the operation kvOp read from the method (GET and HEAD are get).
      switch (c.op) {
        case "get":
          return kvGet(c);
        case "put":
          return kvWrite(c, false);
        case "delete":
          return kvWrite(c, true);
        default:
          return sendError(
            c,
            405,
            "method_not_allowed",
            `${c.method} is not supported on /kv/`,
            {},
            { allow: "GET, HEAD, PUT, DELETE" },
          );
      }
    }
    const r = routes.get(c.path);
    if (r === undefined) return sendError(c, 404, "not_found", `no route for ${c.method} ${c.path}`);
    if (c.method !== r.method && !(r.method === "GET" && c.method === "HEAD"))
      return sendError(
        c,
        405,
        "method_not_allowed",
        `${c.method} is not supported on ${c.path}`,
        {},
        { allow: r.method === "GET" ? "GET, HEAD" : r.method },
      );
    return r.run(c);
  };

  const onRequest = (req: http.IncomingMessage, res: http.ServerResponse, awaitingContinue: boolean) => {
    const rawUrl = req.url ?? "/";
    const method = req.method ?? "GET";
    const q = rawUrl.indexOf("?");
    const path = q < 0 ? rawUrl : rawUrl.slice(0, q);
    const seq = (lastOnSocket.get(req.socket) ?? 0) + 1;
    lastOnSocket.set(req.socket, seq);
    const c: Call = {
      req,
      res,
      method,
      rawUrl,
      path,
      op: path.startsWith("/kv/") ? kvOp(method) : undefined,
      started: performance.now(),
      awaitingContinue,
      seq,
    };
    if (closing) {
      const refuse = () =>
        sendError(c, 503, "unavailable", "this node is stopping: send the request to another node", {
          stopping: true,
        });
      // The answer closes the connection: read and drop the body first, or the client, still sending it,
      // could get a reset instead of this 503 and not know that nothing was applied. (A client waiting
      // for 100 Continue sends no body.) The close's 5 s bound covers a body that never ends.
      if (awaitingContinue) return refuse();
      req.once("end", refuse);
      req.resume();
      return;
    }
    try {
      const done = route(c);
      if (done !== undefined) done.catch((err: unknown) => fail(c, err));
    } catch (err) {
      fail(c, err);
    }
  };

  const server = http.createServer({ keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS }, (req, res) =>
    onRequest(req, res, false),
  );
  // Expect: 100-continue: the request is checked before the client sends its body (a value over the
  // limit gets its 413 without being sent at all).
  server.on("checkContinue", (req, res) => onRequest(req, res, true));
  server.on("clientError", clientError(limits.maxKeyBytes));

  return {
    server,
    listen: (host, port) =>
      new Promise<number>((resolve, reject) => {
        server.once("error", reject);
        server.listen(port, host, () => {
          server.off("error", reject);
          const addr = server.address();
          resolve(addr !== null && typeof addr === "object" ? addr.port : port);
        });
      }),
    close: () => {
      if (stopped !== undefined) return stopped;
      // Not listening (never started): nothing to stop, and a later listen() serves as usual.
      if (!server.listening) return Promise.resolve();
      closing = true;
      stopped = new Promise<void>((resolve) => {
        const shut = () => {
          const force = setTimeout(() => server.closeAllConnections(), CLOSE_GRACE_MS);
          force.unref();
          // Stops listening and closes the idle connections (Node does both in close()).
          server.close(() => {
            clearTimeout(force);
            resolve();
          });
        };
        server.getConnections((err, open) => {
          if (err !== null || open === 0) shut();
          else setTimeout(shut, STOP_DRAIN_MS);
        });
      });
      return stopped;
    },
  };
}

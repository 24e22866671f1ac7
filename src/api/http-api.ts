/**
 * The public HTTP API (../shared/spec/http-api.md): keys, values, contexts, quorum parameters, the
 * status codes and JSON error bodies, and the operational endpoints.
 *
 * This layer only translates: it parses and validates everything about a request before any state
 * changes (so a bad key, context or parameter changes nothing), asks the coordinator, and renders the
 * outcome. Every error response is `{"error": code, "message": text, ...details}`.
 */
import * as http from "node:http";
import type { Socket } from "node:net";
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from "fastify";
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
   * Starts this node's leave (`POST /cluster/leave`): what to answer, or throws an error with
   * `code: "leave_refused"` and the reason.
   */
  readonly leave?: (force: boolean) => unknown;
  /** Removes another member on its behalf (`POST /cluster/remove?id=ID`); throws `remove_refused`. */
  readonly remove?: (id: string, force: boolean) => unknown;
}

type ErrorCode =
  | "bad_key"
  | "bad_context"
  | "bad_parameter"
  | "value_too_large"
  | "not_found"
  | "too_many_siblings"
  | "unavailable"
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

function sendError(
  reply: FastifyReply,
  status: number,
  code: ErrorCode,
  message: string,
  details = {},
): FastifyReply {
  return reply
    .code(status)
    .header("content-type", "application/json; charset=utf-8")
    .send(JSON.stringify({ error: code, message, ...details }));
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

function contextHeader(req: FastifyRequest): string | undefined {
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

/** Where the original URL of a /kv/ request is kept once routing has been pointed at KV_ROUTE. */
const RAW_URL = Symbol("ringstore.rawUrl");
/** A /kv/ request's own Content-Type, kept as sent (fastify refuses a type it cannot parse with 415). */
const RAW_TYPE = Symbol("ringstore.rawContentType");
/** When a /kv/ request arrived (performance.now()), for the latency histogram. */
const STARTED = Symbol("ringstore.started");
type WithRawUrl = { [RAW_URL]?: string; [RAW_TYPE]?: string; [STARTED]?: number };
/** The stored Content-Type a GET answers with (fastify would replace one it cannot parse). */
const VALUE_TYPE = Symbol("ringstore.valueType");
type WithValueType = { [VALUE_TYPE]?: string };
const KV_ROUTE = "/kv/_";
const KV_OPS: Record<string, string> = { GET: "get", HEAD: "get", PUT: "put", DELETE: "delete" };

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

function rawUrlOf(req: FastifyRequest): string {
  return (req.raw as WithRawUrl)[RAW_URL] ?? req.raw.url ?? "";
}

export function buildHttpApi(deps: ApiDeps): FastifyInstance {
  const app = Fastify({
    logger: false,
    bodyLimit: deps.limits.maxValueBytes,
    // While the node stops, requests still arriving get the contract's 503 (below), not fastify's own.
    return503OnClosing: false,
    // Keys are raw bytes, and a percent-encoded byte need not be UTF-8: the router would refuse such a
    // path. Every /kv/ request is routed to one fixed path, its original URL kept for parseKey.
    rewriteUrl(req) {
      const url = req.url ?? "/";
      if (!url.startsWith("/kv/")) return url;
      (req as WithRawUrl)[STARTED] = performance.now();
      (req as WithRawUrl)[RAW_URL] = url;
      // A value keeps whatever Content-Type it came with (the contract); fastify would refuse one it
      // cannot parse, so the body parser sees a neutral type and the handler the one sent.
      const ct = req.headers["content-type"];
      if (ct !== undefined) {
        (req as WithRawUrl)[RAW_TYPE] = ct;
        req.headers["content-type"] = "application/octet-stream";
      }
      const q = url.indexOf("?");
      return q < 0 ? KV_ROUTE : KV_ROUTE + url.slice(q);
    },
    frameworkErrors(err, _req, reply) {
      sendError(reply, 400, "bad_request", err.message);
    },
    clientErrorHandler: clientError(deps.limits.maxKeyBytes),
  });
  let closing = false;
  app.addHook("preClose", (done) => {
    closing = true;
    done();
  });
  app.addHook("onRequest", (_req, reply, done) => {
    if (!closing) return done();
    reply.header("connection", "close");
    sendError(reply, 503, "unavailable", "this node is stopping: send the request to another node", {
      stopping: true,
    });
  });
  app.removeAllContentTypeParsers();
  app.addContentTypeParser("*", { parseAs: "buffer" }, (_req, body, done) => done(null, body));

  const m = deps.metrics;
  const secret = deps.secret;

  // Counted once the response has gone, with its final status: errors raised before the handler (413)
  // or by it (400) included.
  app.addHook("onResponse", (req, reply, done) => {
    const raw = req.raw as WithRawUrl;
    const op = raw[RAW_URL] === undefined ? undefined : KV_OPS[req.method];
    if (op !== undefined)
      m.observeRequest(op, reply.statusCode, (performance.now() - (raw[STARTED] ?? 0)) / 1000);
    done();
  });

  const kvGet = async (req: FastifyRequest, reply: FastifyReply) => {
    const q = req.query as Record<string, unknown>;
    const key = parseKey(rawUrlOf(req), deps.limits.maxKeyBytes);
    const r = parseQuorum(single(q, "r"), "r", deps.r, deps.n);
    const timeout = parseTimeout(single(q, "timeout"), deps.requestTimeoutMs, deps.maxTimeoutMs);
    const out = await deps.service.get(key, r, timeout);
    if (out.kind === "unavailable") {
      m.replicaTimeouts.inc();
      return sendError(
        reply,
        503,
        "unavailable",
        `only ${out.replied} of the ${out.needed} replicas needed replied in time`,
        {
          needed: out.needed,
          replied: out.replied,
        },
      );
    }
    const sibs = out.siblings;
    m.siblings.observe(sibs.length);
    const live = sibs.filter((s) => !s.value.deleted);
    if (sibs.length > 0) reply.header("x-context", encodeContext(contextOf(sibs), key, secret));
    if (live.length === 0)
      return sendError(reply, 404, "not_found", sibs.length > 0 ? "the key is deleted" : "no such key");
    if (sibs.length === 1) {
      const v = live[0]!.value;
      (reply as unknown as WithValueType)[VALUE_TYPE] = v.contentType;
      return reply.code(200).header("content-type", v.contentType).send(Buffer.from(v.data));
    }
    return reply
      .code(300)
      .header("content-type", "application/json; charset=utf-8")
      .send(
        JSON.stringify({
          context: reply.getHeader("x-context"),
          siblings: sibs.map((s) => ({
            value: s.value.deleted ? "" : Buffer.from(s.value.data).toString("base64"),
            contentType: s.value.contentType,
            deleted: s.value.deleted,
          })),
        }),
      );
  };

  const kvWrite = async (req: FastifyRequest, reply: FastifyReply, deleted: boolean) => {
    const q = req.query as Record<string, unknown>;
    const key = parseKey(rawUrlOf(req), deps.limits.maxKeyBytes);
    const w = parseQuorum(single(q, "w"), "w", deps.w, deps.n);
    const timeout = parseTimeout(single(q, "timeout"), deps.requestTimeoutMs, deps.maxTimeoutMs);
    const token = contextHeader(req);
    let context: VersionVector = new Map();
    if (token !== undefined) {
      if (token.length > deps.limits.maxContextChars)
        throw new ApiError(400, "bad_context", "X-Context is too long");
      try {
        context = decodeContext(token, key, secret);
      } catch (err) {
        if (err instanceof InvalidContextError) throw new ApiError(400, "bad_context", err.message);
        throw err;
      }
    }
    const body = deleted ? Buffer.alloc(0) : ((req.body as Buffer | undefined) ?? Buffer.alloc(0));
    const sent = (req.raw as WithRawUrl)[RAW_TYPE];
    const ct = deleted ? "" : sent === undefined || sent === "" ? "application/octet-stream" : sent;
    const out = await deps.service.write(
      key,
      context,
      { data: body, contentType: ct, deleted, writtenAtMs: Math.max(0, Math.floor(deps.now())) },
      w,
      timeout,
    );
    if (out.kind === "too_many_siblings")
      return sendError(
        reply,
        409,
        "too_many_siblings",
        `the key already holds ${out.siblings} siblings (the maximum is ${out.max}): read it, resolve the siblings, and write back with the context`,
        { siblings: out.siblings, max: out.max },
      );
    if (out.kind === "unavailable") {
      m.replicaTimeouts.inc();
      return sendError(
        reply,
        503,
        "unavailable",
        `only ${out.acked} of the ${out.needed} replica acknowledgements needed arrived in time; the write may have been applied on some replicas (it is not rolled back)`,
        { needed: out.needed, acked: out.acked },
      );
    }
    m.siblings.observe(out.set.length);
    return reply
      .code(204)
      .header("x-context", encodeContext(historyOf(out.written), key, secret))
      .send();
  };

  app.get(
    KV_ROUTE,
    {
      // The value's own Content-Type, as stored, even where it is not a media type fastify can parse.
      onSend: (_req, reply, payload, done) => {
        const t = (reply as unknown as WithValueType)[VALUE_TYPE];
        if (t !== undefined) reply.header("content-type", t);
        done(null, payload);
      },
    },
    kvGet,
  );
  app.put(KV_ROUTE, (req, reply) => kvWrite(req, reply, false));
  app.delete(KV_ROUTE, (req, reply) => kvWrite(req, reply, true));
  app.route({
    method: ["POST", "PATCH", "OPTIONS"],
    url: KV_ROUTE,
    handler: async (req, reply) =>
      sendError(
        reply.header("allow", "GET, PUT, DELETE"),
        405,
        "method_not_allowed",
        `${req.method} is not supported on /kv/`,
      ),
  });

  app.get("/health", async (_req, reply) => reply.code(200).send({ status: "ok" }));
  app.get("/status", async (_req, reply) => reply.code(200).send(await deps.status()));
  app.get("/ring", async (_req, reply) => reply.code(200).send(deps.ring()));
  /** `force` from the query: true, false (absent), or an ApiError. */
  const forceOf = (q: Record<string, unknown>): boolean => {
    const force = q.force;
    if (force !== undefined && force !== "true" && force !== "false")
      throw new ApiError(400, "bad_parameter", `force must be true or false, got ${JSON.stringify(force)}`);
    return force === "true";
  };
  /** Runs a membership operation: 202 with its answer, 409 with the reason it was refused. */
  const membershipOp = (reply: FastifyReply, run: () => unknown) => {
    try {
      return reply.code(202).send(run());
    } catch (err) {
      const code = (err as { code?: unknown })?.code;
      if (code === "leave_refused" || code === "remove_refused")
        return sendError(reply, 409, code, (err as Error).message);
      throw err;
    }
  };
  app.post("/cluster/leave", async (req, reply) => {
    const leave = deps.leave;
    if (leave === undefined) return sendError(reply, 404, "not_found", "this node cannot leave a cluster");
    const force = forceOf(req.query as Record<string, unknown>);
    return membershipOp(reply, () => leave(force));
  });
  app.post("/cluster/remove", async (req, reply) => {
    const remove = deps.remove;
    if (remove === undefined) return sendError(reply, 404, "not_found", "this node cannot remove members");
    const q = req.query as Record<string, unknown>;
    const force = forceOf(q);
    if (typeof q.id !== "string" || q.id === "")
      return sendError(reply, 400, "bad_parameter", "id (the member to remove) is required, once");
    const id = q.id;
    return membershipOp(reply, () => remove(id, force));
  });
  app.get("/metrics", async (_req, reply) =>
    reply
      .code(200)
      .header("content-type", m.contentType)
      .send(await m.render()),
  );

  app.setNotFoundHandler((req, reply) => {
    sendError(reply, 404, "not_found", `no route for ${req.method} ${rawUrlOf(req).split("?")[0]}`);
  });
  app.setErrorHandler((err: Error & { statusCode?: number; code?: string }, req, reply) => {
    if (err instanceof ApiError) return sendError(reply, err.status, err.code, err.message, err.details);
    if (err.code === "FST_ERR_CTP_BODY_TOO_LARGE" || err.statusCode === 413)
      return sendError(
        reply,
        413,
        "value_too_large",
        `the value exceeds ${deps.limits.maxValueBytes} bytes; nothing was stored`,
        {
          limit: deps.limits.maxValueBytes,
        },
      );
    if (err.statusCode !== undefined && err.statusCode >= 400 && err.statusCode < 500)
      return sendError(reply, err.statusCode, "bad_request", err.message);
    req.log.error({ err }, "request failed");
    return sendError(reply, 500, "internal", `internal error: ${err.message}`);
  });
  return app;
}

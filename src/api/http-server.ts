/**
 * The API's HTTP server on node:http alone, and the plumbing of one request: how it listens and stops,
 * how a request is answered (once, counted in the metrics), how errors become JSON error bodies, and how
 * a value's body is read within its limit. What a request means is the router's (http-api.ts).
 *
 * A value's body is read into a buffer of at most the limit; a larger one is answered 413 at once (from
 * its Content-Length when it has one, and before the body is sent when the client asks
 * `Expect: 100-continue`) while the rest of it is read and dropped, so the client reads the 413 rather
 * than a reset connection.
 *
 * Stopping: from close() on, every new request gets 503 `unavailable` with `stopping: true`, and the
 * answer to a connection's last request closes it; requests in flight finish. A client can send such a
 * request to another node, knowing that nothing was applied.
 *
 * Bounds (limits.ts has the figures and why), each counted in `ringstore_api_refused_total{reason}`:
 * - connections: past `maxConnections` open ones, a new connection's request is answered 503
 *   `overloaded` (200 for GET /health) and the connection closed, within REFUSED_CONNECTION_MS; past
 *   REFUSAL_SLOTS more, Node closes it at accept (`connections`);
 * - requests in flight: past `maxInFlight`, a request is answered 503 `overloaded` at once, not applied
 *   (`in_flight`); GET /health is never held back;
 * - time: the request line and headers must arrive within `headersTimeoutMs`, the whole request within
 *   `bodyTimeoutMs`; past either the answer is 408 and the connection closed (`headers_timeout`,
 *   `body_timeout`). A connection that sends nothing is closed at the headers' deadline too;
 * - with TLS, a failed handshake (a plain-HTTP request among them) gets nothing and is closed
 *   (`tls_handshake`); the handshake must end within `headersTimeoutMs`.
 * With tokens (access.ts), a request without a valid one is answered 401 `unauthorized` and one whose
 * role may not 403 `forbidden` (`unauthorized`, `forbidden`), before anything else is done with it.
 * Every early answer (these, and 413) reads and drops the rest of the body, bounded, so that the
 * client reads it on a usable connection.
 */
import * as http from "node:http";
import * as https from "node:https";
import type { Socket } from "node:net";
import { performance } from "node:perf_hooks";
import { checkAccess, type TokenSource } from "./access.js";
import { ApiError, type ErrorCode } from "./api-error.js";
import type { TlsMaterial } from "./api-security.js";
import { type ApiServerLimits, REFUSAL_SLOTS, REFUSED_CONNECTION_MS } from "./limits.js";
import type { ApiRefusal, NodeMetrics } from "./metrics.js";
import { parseQuery, type Query } from "./params.js";

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
/** Longer than clients' idle timeouts (undici's 4 s): the server never closes an idle connection first. */
const KEEP_ALIVE_TIMEOUT_MS = 72_000;

/** The node's HTTP API: its server, and how it starts and stops. */
export interface HttpApi {
  /** An https.Server when the API serves TLS. */
  readonly server: http.Server | https.Server;
  /** Serves new TLS connections with this certificate and key (a renewed pair); only with TLS. */
  renewTls(m: TlsMaterial): void;
  /** Listens on host:port (port 0: any free port); resolves to the port bound. */
  listen(host: string, port: number): Promise<number>;
  /**
   * Serves requests with `handler` from now on. Until then (a node binds its port before it starts, so
   * that a port in use refuses the start before anything is written) every request gets 503
   * `unavailable` with `starting: true`: nothing was done with it.
   */
  serve(handler: RequestHandler): void;
  /**
   * Stops the API. From the call on, every new request gets 503 `unavailable` with `stopping: true` (and
   * its connection is closed after the answer); requests in flight finish (for up to 5 s). While any
   * connection is open it keeps listening for STOP_DRAIN_MS first, so that a request sent on an idle
   * keep-alive connection gets that 503 instead of a reset; then it stops listening and closes the idle
   * connections. Calls after the first return the same promise.
   */
  close(): Promise<void>;
}

/** What the server serves: the router. */
export interface RequestHandler {
  /**
   * The operation a request is counted under in the metrics (its latency and final status, 499 when the
   * client went away first), or undefined for a request not counted.
   */
  opOf(path: string, method: string): string | undefined;
  /** Answers the request (every path ends in one answer); a throw or rejection is answered by `fail`. */
  handle(c: Call): Promise<void> | void;
}

export interface HttpServerOptions {
  /** Named in the answer to a request line and headers too large for Node's parser. */
  readonly maxKeyBytes: number;
  /** The most a request's body may hold (a value); more gets 413 `value_too_large`. */
  readonly maxBodyBytes: number;
  readonly metrics: NodeMetrics;
  readonly limits: ApiServerLimits;
  /** Serve https only, with this certificate and key. */
  readonly tls?: TlsMaterial | undefined;
  /** Require a token of these on every request but GET /health. */
  readonly tokens?: TokenSource | undefined;
}

/** What every request of one server shares. */
interface ServerState {
  /** close() was called. */
  closing: boolean;
  readonly metrics: NodeMetrics;
  readonly maxBodyBytes: number;
  /** Client connections open (TCP, TLS handshakes included). */
  connections: number;
  /** Requests admitted and not yet answered (or abandoned). */
  inFlight: number;
}

/** The most of a body read and dropped after an early answer (401, 403, 503) before the connection closes. */
const EARLY_DRAIN_MIN_BYTES = 64 * 1024;

/**
 * The number of the last request received on each connection. While the node stops, the answer to a
 * connection's last request says `Connection: close` (the client then opens no new request on it); an
 * answer to an earlier one does not, or Node would close the connection before the answers queued
 * behind it (pipelined requests) went out.
 */
const lastOnSocket = new WeakMap<Socket, number>();
/** The last request received on each connection: a deadline that passes during its body is its own. */
const currentCall = new WeakMap<Socket, Call>();

/** One request, and how it is answered. */
export class Call {
  /** The URL as sent, and its path (before any `?`), still percent-encoded. */
  readonly rawUrl: string;
  readonly path: string;
  readonly method: string;
  /** The operation it is counted under in the metrics (RequestHandler.opOf), or undefined. */
  readonly op: string | undefined;
  /** When it arrived (performance.now()), for the latency histogram. */
  readonly started: number;
  /** Its place among the requests received on its connection (1, 2, ...; see lastOnSocket). */
  readonly seq: number;
  /** Answered outside the response (a deadline's 408 written on the socket): respond() does nothing. */
  private answeredOnSocket = false;

  constructor(
    readonly req: http.IncomingMessage,
    readonly res: http.ServerResponse,
    /** The client sent `Expect: 100-continue` and waits for a 100 before it sends the body. */
    public awaitingContinue: boolean,
    private readonly server: ServerState,
    opOf: RequestHandler["opOf"],
  ) {
    const rawUrl = req.url ?? "/";
    const q = rawUrl.indexOf("?");
    this.rawUrl = rawUrl;
    this.path = q < 0 ? rawUrl : rawUrl.slice(0, q);
    this.method = req.method ?? "GET";
    const seq = (lastOnSocket.get(req.socket) ?? 0) + 1;
    lastOnSocket.set(req.socket, seq);
    currentCall.set(req.socket, this);
    this.seq = seq;
    this.op = opOf(this.path, this.method);
    this.started = performance.now();
  }

  /** The query string's parameters. */
  query(): Query {
    return parseQuery(this.rawUrl);
  }

  /** Writes the whole response, once; counts a request that has an op under its final status. */
  respond(status: number, headers: http.OutgoingHttpHeaders, body: Buffer | string | undefined): void {
    const res = this.res;
    if (res.headersSent || this.answeredOnSocket) return;
    if (res.destroyed) {
      // The client went away before its answer (nginx's 499): counted, so that the metrics show
      // requests that were worked on (a write may have been applied) but never answered.
      this.observe(499);
      return;
    }
    if (status !== 204)
      headers["content-length"] =
        body === undefined ? 0 : typeof body === "string" ? Buffer.byteLength(body) : body.length;
    // A client still waiting for a 100 Continue will not send its body on this connection; a stopping
    // node takes no further request on it.
    if (this.awaitingContinue || (this.server.closing && lastOnSocket.get(this.req.socket) === this.seq))
      headers.connection = "close";
    // How long the node held a key-value request, from its arrival (W3C Server-Timing): a client tells
    // the node's time from the network's and its own.
    if (this.op !== undefined)
      headers["server-timing"] = `total;dur=${(performance.now() - this.started).toFixed(1)}`;
    res.writeHead(status, headers);
    res.end(body);
    this.observe(status);
  }

  json(status: number, value: unknown, headers: http.OutgoingHttpHeaders = {}): void {
    headers["content-type"] = JSON_TYPE;
    this.respond(status, headers, JSON.stringify(value));
  }

  /** An error answer: `{"error": code, "message": message, ...details}`. */
  error(
    status: number,
    code: ErrorCode,
    message: string,
    details: Record<string, unknown> = {},
    headers: http.OutgoingHttpHeaders = {},
  ): void {
    this.json(status, { error: code, message, ...details }, headers);
  }

  /** Answers what a handler threw: an ApiError as itself, anything else as 500 `internal`. */
  fail(err: unknown): void {
    if (err instanceof ApiError) {
      this.error(err.status, err.code, err.message, err.details);
      return;
    }
    if (this.res.headersSent || this.res.destroyed) return;
    this.error(500, "internal", `internal error: ${(err as Error)?.message ?? String(err)}`);
  }

  /** The request's body, or undefined when it is over the body limit (the 413 is sent). */
  readBody(): Promise<Buffer | undefined> {
    const limit = this.server.maxBodyBytes;
    if (Number(this.req.headers["content-length"]) > limit) {
      this.tooLarge();
      return Promise.resolve(undefined);
    }
    if (this.awaitingContinue) {
      this.res.writeContinue();
      this.awaitingContinue = false;
    }
    const req = this.req;
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
          this.tooLarge();
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
  }

  /**
   * Answers before the body is read (a refusal: nothing is done with the request), reading and dropping
   * the rest of the body so that the client reads the answer on a connection it can reuse; past the
   * larger of the value limit and 64 KiB the connection is closed instead.
   */
  refuseEarly(
    status: number,
    code: ErrorCode,
    message: string,
    details: Record<string, unknown> = {},
    headers: http.OutgoingHttpHeaders = {},
  ): void {
    if (!this.awaitingContinue) {
      const limit = Math.max(this.server.maxBodyBytes, EARLY_DRAIN_MIN_BYTES);
      if (Number(this.req.headers["content-length"]) > limit) headers.connection = "close";
      else {
        let dropped = 0;
        this.req.on("data", (chunk: Buffer) => {
          dropped += chunk.length;
          if (dropped > limit) this.req.socket.destroy();
        });
        this.req.resume();
      }
    }
    this.error(status, code, message, details, headers);
  }

  /** The connection's deadline passed while this request's body was arriving: counted as a 408. */
  timedOutOnSocket(): void {
    if (this.res.headersSent || this.answeredOnSocket) return;
    this.answeredOnSocket = true;
    this.observe(408);
  }

  /** 413, with the rest of the body read and dropped (bounded) unless the client has not sent it. */
  private tooLarge(): void {
    const headers: http.OutgoingHttpHeaders = {};
    const declared = Number(this.req.headers["content-length"]);
    if (!this.awaitingContinue) {
      if (declared > DRAIN_LIMIT_BYTES) headers.connection = "close";
      else {
        // Read and drop the rest, so that the client reads the 413; bounded.
        let dropped = 0;
        this.req.on("data", (chunk: Buffer) => {
          dropped += chunk.length;
          if (dropped > DRAIN_LIMIT_BYTES) this.req.socket.destroy();
        });
        this.req.resume();
      }
    }
    const limit = this.server.maxBodyBytes;
    this.error(
      413,
      "value_too_large",
      `the value exceeds ${limit} bytes; nothing was stored`,
      { limit },
      headers,
    );
  }

  private observe(status: number): void {
    if (this.op !== undefined)
      this.server.metrics.observeRequest(this.op, status, (performance.now() - this.started) / 1000);
  }
}

/**
 * Requests Node's HTTP parser refuses before any route sees them (malformed, or a request line and
 * headers over the size limit, as a key far beyond its limit makes them): a JSON error body in the
 * contract's form, then the connection is closed.
 */
function clientError(maxKeyBytes: number, refused: (reason: ApiRefusal) => void) {
  return (err: Error & { code?: string }, socket: Socket): void => {
    if (err.code === "ECONNRESET" || socket.destroyed) return;
    // An answer is on this connection already (it said "close", or it is being sent): nothing may follow
    // it. Bytes after a request that asked to close (HPE_CLOSED_CONNECTION: a client that sent a body
    // without saying so) end the connection once that answer is out, without a second answer after it.
    const current = currentCall.get(socket);
    if (err.code === "HPE_CLOSED_CONNECTION" || (current?.res.headersSent && !current.res.writableFinished)) {
      if (current === undefined || current.res.writableFinished) socket.destroy();
      else current.res.once("finish", () => socket.destroy());
      return;
    }
    let status = 400;
    let body: Record<string, string>;
    if (err.code === "ERR_HTTP_REQUEST_TIMEOUT") {
      // Past the headers' deadline (or the whole request's, with the headers in): a request whose body
      // was still arriving is its own, counted under 408.
      const c = currentCall.get(socket);
      const inBody = c !== undefined && !c.req.complete;
      refused(inBody ? "body_timeout" : "headers_timeout");
      if (inBody) {
        const answered = c.res.headersSent;
        c.timedOutOnSocket();
        // An answer already under way (an early refusal whose body still trickles): just close.
        if (answered) {
          socket.destroy();
          return;
        }
      }
      status = 408;
      body = {
        error: "bad_request",
        message: inBody
          ? "the request's body did not arrive in time"
          : "the request line and headers did not arrive in time",
      };
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
        `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\ncontent-type: ${JSON_TYPE}\r\ncontent-length: ${Buffer.byteLength(text)}\r\nconnection: close\r\n\r\n${text}`,
      );
    socket.destroy();
  };
}

/** GET (or HEAD) /health: answered whatever the load, and without a token. */
const isHealth = (c: Call) => c.path === "/health" && (c.method === "GET" || c.method === "HEAD");

/** While the node starts: no request is counted or served. */
const STARTING: RequestHandler = { opOf: () => undefined, handle: () => undefined };

/**
 * A server that hands every request to `handler` (given now or later with serve(): before, the answer
 * is 503 `starting`), until it stops.
 */
export function createHttpServer(initial: RequestHandler | undefined, options: HttpServerOptions): HttpApi {
  let handler = initial ?? STARTING;
  const limits = options.limits;
  const metrics = options.metrics;
  const tokens = options.tokens;
  const state: ServerState = {
    closing: false,
    metrics,
    maxBodyBytes: options.maxBodyBytes,
    connections: 0,
    inFlight: 0,
  };
  metrics.watchApi(() => ({ connections: state.connections, inFlight: state.inFlight }));
  const refused = (reason: ApiRefusal) => metrics.refused(reason);
  /** Connections over maxConnections: each request on them is refused, and they close soon. */
  const overCap = new WeakSet<Socket>();
  let stopped: Promise<void> | undefined;

  const refuseOverCap = (c: Call, awaitingContinue: boolean) => {
    const answer = () =>
      isHealth(c)
        ? c.respond(200, { connection: "close", "content-type": JSON_TYPE }, '{"status":"ok"}')
        : c.error(
            503,
            "overloaded",
            `this node has ${limits.maxConnections} client connections open, its limit; nothing was done: retry in a moment, or another node`,
            { limit: "connections", max: limits.maxConnections, applied: false },
            { "retry-after": "1", connection: "close" },
          );
    // As below for a stopping node: the body is read first, so that the client reads the 503.
    if (awaitingContinue) return answer();
    c.req.once("end", answer);
    c.req.resume();
  };

  const onRequest = (req: http.IncomingMessage, res: http.ServerResponse, awaitingContinue: boolean) => {
    const c = new Call(req, res, awaitingContinue, state, handler.opOf);
    if (overCap.has(req.socket)) return refuseOverCap(c, awaitingContinue);
    if (tokens !== undefined) {
      const access = checkAccess(tokens, req.headers.authorization, c.path, c.method);
      if (access.kind === "unauthorized") {
        refused("unauthorized");
        return c.refuseEarly(
          401,
          "unauthorized",
          access.message,
          {},
          {
            // The dashboard's page is opened by a browser: Basic makes it ask for the token (the password).
            "www-authenticate":
              c.path === "/ui" || c.path.startsWith("/ui/")
                ? 'Basic realm="ringstore", charset="UTF-8"'
                : access.presented
                  ? 'Bearer realm="ringstore", error="invalid_token"'
                  : 'Bearer realm="ringstore"',
          },
        );
      }
      if (access.kind === "forbidden") {
        refused("forbidden");
        return c.refuseEarly(403, "forbidden", access.message, { role: access.role, needs: access.needs });
      }
    }
    if (state.closing || handler === STARTING) {
      const refuse = () =>
        state.closing
          ? c.error(503, "unavailable", "this node is stopping: send the request to another node", {
              stopping: true,
            })
          : c.error(503, "unavailable", "this node is starting: try again in a moment, or another node", {
              starting: true,
            });
      // The answer closes the connection: read and drop the body first, or the client, still sending it,
      // could get a reset instead of this 503 and not know that nothing was applied. (A client waiting
      // for 100 Continue sends no body.) The close's 5 s bound covers a body that never ends.
      if (awaitingContinue) return refuse();
      req.once("end", refuse);
      req.resume();
      return;
    }
    // /health answers whatever the load: it is how an operator or a balancer tells a busy node from a
    // dead one.
    const admitted = !isHealth(c);
    if (admitted) {
      if (state.inFlight >= limits.maxInFlight) {
        refused("in_flight");
        return c.refuseEarly(
          503,
          "overloaded",
          `this node has ${limits.maxInFlight} requests in flight, its limit; this one was NOT applied: retry in a moment, or another node`,
          { limit: "requests_in_flight", max: limits.maxInFlight, applied: false },
          { "retry-after": "1" },
        );
      }
      state.inFlight++;
    }
    // A request is in flight until its handler is done with it, answered or not: a client that goes away
    // does not free its slot while the node still works for it.
    const finish = () => {
      if (admitted) state.inFlight--;
    };
    try {
      const done = handler.handle(c);
      if (done === undefined) finish();
      else
        done.then(finish, (err: unknown) => {
          finish();
          c.fail(err);
        });
    } catch (err) {
      finish();
      c.fail(err);
    }
  };

  const serverOptions: http.ServerOptions = {
    keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS,
    headersTimeout: limits.headersTimeoutMs,
    requestTimeout: limits.bodyTimeoutMs,
    // How often Node looks for requests past those deadlines: a fraction of the shorter one.
    connectionsCheckingInterval: Math.max(50, Math.min(1000, Math.floor(limits.headersTimeoutMs / 5))),
  };
  const listener = (req: http.IncomingMessage, res: http.ServerResponse) => onRequest(req, res, false);
  const server: http.Server | https.Server =
    options.tls === undefined
      ? http.createServer(serverOptions, listener)
      : https.createServer(
          {
            ...serverOptions,
            cert: options.tls.cert,
            key: options.tls.key,
            minVersion: "TLSv1.2",
            handshakeTimeout: limits.headersTimeoutMs,
          },
          listener,
        );
  // Expect: 100-continue: the request is checked before the client sends its body (a value over the
  // limit gets its 413 without being sent at all).
  server.on("checkContinue", (req, res) => onRequest(req, res, true));
  server.on("clientError", clientError(options.maxKeyBytes, refused));

  // Connections are counted from accept (a TLS handshake holds one too); Node itself closes those past
  // REFUSAL_SLOTS more.
  server.maxConnections = limits.maxConnections + REFUSAL_SLOTS;
  server.on("drop", () => refused("connections"));
  const admit = (socket: Socket) => {
    if (state.connections <= limits.maxConnections) return;
    overCap.add(socket);
    refused("connections");
    const t = setTimeout(() => socket.destroy(), REFUSED_CONNECTION_MS);
    t.unref();
    socket.once("close", () => clearTimeout(t));
  };
  server.prependListener("connection", (socket: Socket) => {
    state.connections++;
    socket.once("close", () => {
      state.connections--;
    });
    if (options.tls === undefined) admit(socket);
  });
  if (options.tls !== undefined) {
    // The HTTP layer sees the TLS socket: it is the one marked.
    server.prependListener("secureConnection", (socket: Socket) => admit(socket));
    server.on("tlsClientError", () => refused("tls_handshake"));
  }

  return {
    server,
    renewTls: (m) => {
      if (!(server instanceof https.Server)) throw new Error("renewTls: this API serves plain http");
      server.setSecureContext({ cert: m.cert, key: m.key });
    },
    serve: (h) => {
      handler = h;
    },
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
      state.closing = true;
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

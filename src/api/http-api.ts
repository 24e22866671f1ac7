/**
 * The public HTTP API (../shared/spec/http-api.md): what it needs from the node, and its routing.
 *
 *   http-server.ts   the server's lifecycle and one request's plumbing (answering, errors, body limit),
 *                    its bounds (limits.ts) and its gate (tokens: access.ts, tokens.ts; TLS)
 *   api-security.ts  the TLS and token files: read, checked and watched for changes
 *   kv-routes.ts     GET/HEAD/PUT/DELETE /kv/{key}
 *   list-route.ts    GET /kv/?limit=N&cursor=C: a page of the cluster's keys
 *   admin-routes.ts  /health, /status, /ring, /metrics, /cluster/leave, /cluster/remove
 *   ui-routes.ts     /ui (the dashboard: its page, assets and /ui/state), dashboard.ts its data
 *   params.ts        key, quorum, timeout, force and context parsing
 *   views.ts         the /status and /ring documents and the builders that make them
 *
 * This layer only translates: it parses and validates everything about a request before any state
 * changes, asks the coordinator (or the node), and renders the outcome. Every error response is
 * `{"error": code, "message": text, ...details}`.
 *
 * It is built on node:http alone, its few routes matched by hand: a framework's general router cost CPU
 * on every request and stood between the contract and the wire (keys of raw bytes, the Content-Type as
 * sent); ARCHITECTURE.md, "The API and stopping", says more. Keep the matching by hand.
 */

import type { TokenSource } from "./access.js";
import { type AdminRouteDeps, adminRoutes } from "./admin-routes.js";
import type { ApiSecurity, TlsMaterial } from "./api-security.js";
import { type Call, createHttpServer, type HttpApi, type RequestHandler } from "./http-server.js";
import { type KvRouteDeps, kvRoutes } from "./kv-routes.js";
import { API_LIMIT_DEFAULTS, type ApiServerLimits } from "./limits.js";
import { type ListRouteDeps, listRoute } from "./list-route.js";
import { type UiRouteDeps, uiRoutes } from "./ui-routes.js";

export type { MembershipOutcome } from "./admin-routes.js";
export type { HttpApi } from "./http-server.js";
export type { ApiLimits } from "./kv-routes.js";

/** What the API needs from its node. */
export interface ApiDeps extends KvRouteDeps, AdminRouteDeps, ListRouteDeps, UiRouteDeps {}

/** The operation a /kv/ request is counted under in the metrics: GET and HEAD are get. */
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

/** `GET /kv/` (no key): the key listing, counted as `list`. */
const isList = (path: string, method: string) => path === "/kv/" && (method === "GET" || method === "HEAD");

/** The router: /kv/ by method, the other routes by exact path; 404 and 405 (with Allow) otherwise. */
function router(deps: ApiDeps): RequestHandler {
  const kv = kvRoutes(deps);
  const list = listRoute(deps);
  const routes = new Map([...adminRoutes(deps), ...uiRoutes(deps)]);
  return {
    opOf: (path, method) =>
      isList(path, method) ? "list" : path.startsWith("/kv/") ? kvOp(method) : undefined,
    handle: (c: Call): Promise<void> | void => {
      if (isList(c.path, c.method)) return list(c);
      if (c.path.startsWith("/kv/")) {
        // c.op: the operation kvOp read from the method.
        switch (c.op) {
          case "get":
            return kv.get(c);
          case "put":
            return kv.put(c);
          case "delete":
            return kv.delete(c);
          default:
            return c.error(
              405,
              "method_not_allowed",
              `${c.method} is not supported on /kv/`,
              {},
              { allow: "GET, HEAD, PUT, DELETE" },
            );
        }
      }
      const r = routes.get(c.path);
      if (r === undefined) return c.error(404, "not_found", `no route for ${c.method} ${c.path}`);
      if (c.method !== r.method && !(r.method === "GET" && c.method === "HEAD"))
        return c.error(
          405,
          "method_not_allowed",
          `${c.method} is not supported on ${c.path}`,
          {},
          { allow: r.method === "GET" ? "GET, HEAD" : r.method },
        );
      return r.run(c);
    },
  };
}

/**
 * The API's server before the node behind it exists: it can listen (a node binds its port first) and
 * answers 503 `starting` until `serveApi`.
 */
export function createApi(o: {
  readonly maxKeyBytes: number;
  readonly maxValueBytes: number;
  readonly metrics: ApiDeps["metrics"];
  /** Default: API_LIMIT_DEFAULTS. */
  readonly limits?: ApiServerLimits;
  /** TLS and tokens (api-security.ts), kept current while the API runs and released by close(). */
  readonly security?: ApiSecurity;
}): HttpApi {
  const security = o.security;
  const api = createHttpServer(undefined, {
    maxKeyBytes: o.maxKeyBytes,
    maxBodyBytes: o.maxValueBytes,
    metrics: o.metrics,
    limits: o.limits ?? API_LIMIT_DEFAULTS,
    tls: security?.tls,
    tokens: security?.tokens,
  });
  if (security === undefined) return api;
  if (security.tls !== undefined) security.onTlsChange((m) => api.renewTls(m));
  return {
    ...api,
    close: () => {
      security.close();
      return api.close();
    },
  };
}

/** Serves the API's routes over the node. */
export function serveApi(api: HttpApi, deps: ApiDeps): void {
  api.serve(router(deps));
}

/** The API over `deps`, serving at once (tests, benchmarks); `server` adds limits, TLS and tokens. */
export function buildHttpApi(
  deps: ApiDeps,
  server: {
    readonly limits?: ApiServerLimits;
    readonly tls?: TlsMaterial;
    readonly tokens?: TokenSource;
  } = {},
): HttpApi {
  return createHttpServer(router(deps), {
    maxKeyBytes: deps.limits.maxKeyBytes,
    maxBodyBytes: deps.limits.maxValueBytes,
    metrics: deps.metrics,
    limits: server.limits ?? API_LIMIT_DEFAULTS,
    tls: server.tls,
    tokens: server.tokens,
  });
}

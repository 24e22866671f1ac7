/**
 * Who may do what on the API when it requires tokens (`--auth-file`): the role each request needs, and
 * the check of a request's `Authorization: Bearer TOKEN` against the current token set.
 *
 *   GET /health (and HEAD)                         open: a load balancer's probe carries no token
 *   GET/HEAD /kv/..., /status, /ring, /metrics, /ui   read
 *   PUT/DELETE /kv/...                             write (and admin)
 *   POST /cluster/leave, /cluster/remove,          admin
 *        /cluster/anti-entropy, /storage/compact
 *
 * Any other request (an unknown path or method) needs `read`: only a token holder learns that a route
 * does not exist (404 or 405 after the check).
 *
 * A token comes as `Authorization: Bearer TOKEN`, or as the password of `Authorization: Basic` (any user
 * name): a browser asks for it when the dashboard's 401 challenges Basic, and sends it with the page's
 * own requests after that.
 */
import type { Role, TokenCheck } from "./tokens.js";
import { roleAllows } from "./tokens.js";

/** The role a request needs, or undefined when it is open to everyone. */
export function requiredRole(path: string, method: string): Role | undefined {
  if (path === "/health" && (method === "GET" || method === "HEAD")) return undefined;
  if (path.startsWith("/kv/")) return method === "PUT" || method === "DELETE" ? "write" : "read";
  if (path.startsWith("/cluster/") || path.startsWith("/storage/")) return "admin";
  return "read";
}

/** The current tokens (re-read when their file changes: api-security.ts). */
export interface TokenSource {
  check(token: string): TokenCheck;
}

export type AccessOutcome =
  | { readonly kind: "allowed" }
  | { readonly kind: "unauthorized"; readonly message: string; readonly presented: boolean }
  | { readonly kind: "forbidden"; readonly message: string; readonly role: Role; readonly needs: Role };

const ALLOWED: AccessOutcome = { kind: "allowed" };
const BEARER = /^Bearer +(\S+) *$/i;
const BASIC = /^Basic +([A-Za-z0-9+/=]+) *$/i;

/** The token an Authorization header carries: Bearer, or Basic's password (else its user name). */
function tokenOf(authorization: string): string | undefined {
  const b = BEARER.exec(authorization);
  if (b !== null) return b[1]!;
  const m = BASIC.exec(authorization);
  if (m === null) return undefined;
  const pair = Buffer.from(m[1]!, "base64").toString("utf8");
  const colon = pair.indexOf(":");
  const t = colon < 0 ? pair : pair.slice(colon + 1) || pair.slice(0, colon);
  return t === "" ? undefined : t;
}

/** Whether the request may go on, given its Authorization header. */
export function checkAccess(
  tokens: TokenSource,
  authorization: string | undefined,
  path: string,
  method: string,
): AccessOutcome {
  const needs = requiredRole(path, method);
  if (needs === undefined) return ALLOWED;
  if (authorization === undefined || authorization === "")
    return {
      kind: "unauthorized",
      presented: false,
      message:
        "this node requires a token: send Authorization: Bearer TOKEN (ringstore --token, RINGSTORE_TOKEN)",
    };
  const t = tokenOf(authorization);
  const c = t === undefined ? undefined : tokens.check(t);
  if (c === undefined || c.kind !== "valid")
    return {
      kind: "unauthorized",
      presented: true,
      message:
        t === undefined
          ? "the Authorization header must be Bearer TOKEN"
          : "the token is not valid on this node (unknown, revoked or mistyped)",
    };
  if (!roleAllows(c.role, needs))
    return {
      kind: "forbidden",
      role: c.role,
      needs,
      message: `token ${c.id} has role ${c.role}: ${method} ${path.startsWith("/kv/") ? "/kv/" : path} needs ${needs}`,
    };
  return ALLOWED;
}

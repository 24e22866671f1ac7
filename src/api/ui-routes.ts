/**
 * The dashboard's routes: `GET /ui` (the page), its assets (`/ui/app.js`, `/ui/app.css`, the charting
 * library `/ui/uPlot.iife.min.js` and `/ui/uPlot.min.css`), and `GET /ui/state` (its data: views.ts,
 * DashboardDocument). The assets are files built into `dist/ui/` by `npm run build` (src/ui/, and uPlot
 * copied from its package), read once, kept in memory with their gzip, and served by the node itself:
 * nothing is fetched from elsewhere at run time. Every route needs the `read` role when the API requires
 * tokens; a browser asked for /ui gets a Basic challenge, and the token as its password (access.ts).
 */
import { existsSync, readFileSync } from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import type { Route } from "./admin-routes.js";
import type { Call } from "./http-server.js";
import { single } from "./params.js";
import type { DashboardDocument } from "./views.js";

/** The files of the page, by route, with their type. */
const ASSETS: readonly (readonly [route: string, file: string, type: string])[] = [
  ["/ui", "index.html", "text/html; charset=utf-8"],
  ["/ui/", "index.html", "text/html; charset=utf-8"],
  ["/ui/app.js", "app.js", "text/javascript; charset=utf-8"],
  ["/ui/app.css", "app.css", "text/css; charset=utf-8"],
  ["/ui/uPlot.iife.min.js", "uPlot.iife.min.js", "text/javascript; charset=utf-8"],
  ["/ui/uPlot.min.css", "uPlot.min.css", "text/css; charset=utf-8"],
];

/** The page loads only what the node serves; uPlot sets element styles, hence the inline styles. */
const CSP =
  "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'";

export interface UiRouteDeps {
  /** The dashboard's data; absent: the node has no dashboard (404). */
  readonly dashboard?: { document(since: number, eventsAfter: number): Promise<DashboardDocument> };
  /** Where the built assets are (default: `uiAssetsDir()`). */
  readonly uiAssets?: string;
}

/**
 * The folder of the built assets: `dist/ui` beside this module once built; from the sources (tests run
 * under tsx), the `dist/ui` of the package. Undefined when not built.
 */
export function uiAssetsDir(): string | undefined {
  const here = path.dirname(fileURLToPath(import.meta.url));
  for (const dir of [path.join(here, "..", "ui"), path.join(here, "..", "..", "dist", "ui")])
    if (existsSync(path.join(dir, "index.html")) && existsSync(path.join(dir, "app.js"))) return dir;
  return undefined;
}

interface Asset {
  readonly type: string;
  readonly body: Buffer;
  readonly gzip: Buffer;
}

function loadAssets(dir: string): Map<string, Asset> {
  const out = new Map<string, Asset>();
  for (const [route, file, type] of ASSETS) {
    const body = readFileSync(path.join(dir, file));
    out.set(route, { type, body, gzip: gzipSync(body, { level: 9 }) });
  }
  return out;
}

function serveAsset(c: Call, a: Asset): void {
  const gz = /\bgzip\b/.test(String(c.req.headers["accept-encoding"] ?? ""));
  c.respond(
    200,
    {
      "content-type": a.type,
      "cache-control": "no-cache",
      "x-content-type-options": "nosniff",
      "content-security-policy": CSP,
      vary: "accept-encoding",
      ...(gz ? { "content-encoding": "gzip" } : {}),
    },
    gz ? a.gzip : a.body,
  );
}

function nonNegative(v: string | undefined, name: string): number {
  if (v === undefined) return 0;
  const n = Number(v);
  if (!/^[0-9]{1,16}$/.test(v) || !Number.isSafeInteger(n))
    throw Object.assign(new Error(`${name} must be a whole number`), { status: 400 });
  return n;
}

/** The dashboard's routes, by path. */
export function uiRoutes(deps: UiRouteDeps): ReadonlyMap<string, Route> {
  let assets: Map<string, Asset> | undefined;
  const assetsNow = (): Map<string, Asset> | undefined => {
    if (assets !== undefined) return assets;
    const dir = deps.uiAssets ?? uiAssetsDir();
    if (dir === undefined) return undefined;
    assets = loadAssets(dir);
    return assets;
  };
  const routes = new Map<string, Route>();
  for (const [route] of ASSETS)
    routes.set(route, {
      method: "GET",
      run: (c) => {
        if (deps.dashboard === undefined) return c.error(404, "not_found", "this node serves no dashboard");
        const a = assetsNow()?.get(route);
        if (a === undefined)
          return c.error(
            503,
            "unavailable",
            "the dashboard's files are not built (npm run build makes dist/ui)",
          );
        serveAsset(c, a);
      },
    });
  routes.set("/ui/state", {
    method: "GET",
    run: async (c) => {
      const d = deps.dashboard;
      if (d === undefined) return c.error(404, "not_found", "this node serves no dashboard");
      const q = c.query();
      let since: number;
      let events: number;
      try {
        since = nonNegative(single(q, "since"), "since");
        events = nonNegative(single(q, "events"), "events");
      } catch (err) {
        return c.error(400, "bad_parameter", (err as Error).message);
      }
      c.json(200, await d.document(since, events), { "cache-control": "no-store" });
    },
  });
  return routes;
}

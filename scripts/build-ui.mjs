/**
 * The dashboard's build step after tsc (npm run build): copies its page and stylesheet (src/ui) and the
 * charting library uPlot (from its package) into dist/ui, where the node serves them from
 * (src/api/ui-routes.ts). Nothing is fetched at run time.
 */
import { copyFileSync, mkdirSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import * as path from "node:path";

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..");
const out = path.join(root, "dist", "ui");
mkdirSync(out, { recursive: true });
for (const f of ["index.html", "app.css"]) copyFileSync(path.join(root, "src", "ui", f), path.join(out, f));
const uplot = path.dirname(createRequire(import.meta.url).resolve("uplot/package.json"));
for (const f of ["uPlot.iife.min.js", "uPlot.min.css"])
  copyFileSync(path.join(uplot, "dist", f), path.join(out, f));
// The document's types compile to an empty module the page does not load.
for (const f of ["document.js", "document.js.map", "document.d.ts", "document.d.ts.map"])
  rmSync(path.join(out, f), { force: true });

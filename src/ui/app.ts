/**
 * The dashboard page (`GET /ui`): fetches `/ui/state` every few seconds (only the samples and events it
 * has not seen) and draws the members, the ring, request rates and latencies, background work, storage
 * and recent events. No view layer: each refresh rebuilds a few small tables and redraws one canvas;
 * the charts are uPlot's (loaded before this script by the page, from the node itself).
 */
import type uPlotType from "uplot";
import type {
  DashboardDocument,
  DashboardEvent,
  JoinStatus,
  RequestSampleView,
  WorkProgress,
} from "./document.js";

declare const uPlot: typeof uPlotType;

/** Samples kept for the charts (the node keeps as many: six minutes at 2 s). */
const MAX_SAMPLES = 180;
const MAX_EVENTS = 200;
const OP_COLORS: Record<string, string> = {
  get: "#58a6ff",
  put: "#3fb950",
  delete: "#f85149",
  list: "#d29922",
};
const OWNER_COLORS = [
  "#4e79a7",
  "#f28e2b",
  "#59a14f",
  "#e15759",
  "#76b7b2",
  "#edc948",
  "#b07aa1",
  "#ff9da7",
  "#9c755f",
  "#bab0ac",
  "#2f6f8f",
  "#8f2f6f",
];

const $ = <T extends HTMLElement>(sel: string): T => document.querySelector(sel) as T;

function el(tag: string, attrs: Record<string, string> = {}, ...kids: (Node | string)[]): HTMLElement {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  for (const k of kids) e.append(k);
  return e;
}

function bytes(n: number): string {
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n < 10 && i > 0 ? n.toFixed(1) : Math.round(n)} ${u[i]}`;
}

function duration(s: number | null): string {
  if (s === null) return "—";
  if (s < 60) return `${Math.round(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
}

const num = (n: number) => n.toLocaleString("en-US");

// ------------------------------------------------------------------ state kept between refreshes

let samples: RequestSampleView[] = [];
let events: DashboardEvent[] = [];
let ops: readonly string[] = [];
let lastDoc: DashboardDocument | undefined;
let rateChart: uPlotType | undefined;
let latencyChart: uPlotType | undefined;

// ------------------------------------------------------------------ panels

function drawSummary(d: DashboardDocument): void {
  const c = d.cluster;
  const up = d.members.filter((m) => m.state === "up").length;
  const live = d.members.filter((m) => m.state !== "left").length;
  $("#summary").textContent =
    `cluster ${c.id.slice(0, 8)} · seen from ${d.node.id} · ${up}/${live} members up · ` +
    `N=${c.n} R=${c.r} W=${c.w} · ${c.partitions} partitions · ring v${c.ringVersion}`;
  $("#updated").textContent = `updated ${new Date(d.at).toLocaleTimeString()}`;
}

function drawMembers(d: DashboardDocument): void {
  const body = $("#members tbody");
  body.replaceChildren(
    ...d.members.map((m) =>
      el(
        "tr",
        { "data-member": m.id, "data-state": m.state, class: m.self ? "self" : "" },
        el("td", {}, m.id),
        el("td", { class: "state" }, el("span", { class: `badge ${m.state}` }, m.state)),
        el("td", {}, m.zone ?? "—"),
        el("td", { class: "num" }, String(m.weight)),
        el("td", {}, m.api),
        el("td", {}, m.peer),
        el("td", { class: "num" }, num(m.owned)),
        el("td", { class: "num" }, num(m.replicated)),
      ),
    ),
  );
}

/** The ring: one cell per partition, coloured by owner; marks for pending work. */
function drawRing(d: DashboardDocument): void {
  const canvas = $<HTMLCanvasElement>("#ring");
  const q = d.owners.length;
  const ctx = canvas.getContext("2d");
  if (ctx === null) return;
  ctx.fillStyle = "#0f1419";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  if (q === 0) return;
  const cols = Math.ceil(Math.sqrt(q));
  const cell = Math.floor(canvas.width / cols);
  const gap = cell >= 6 ? 1 : 0;
  const handoff = new Set(d.pending.handoff);
  const hints = new Set(d.pending.hints);
  const ae = new Set(d.pending.antiEntropy);
  for (let p = 0; p < q; p++) {
    const x = (p % cols) * cell;
    const y = Math.floor(p / cols) * cell;
    const o = d.owners[p]!;
    ctx.fillStyle = o < 0 ? "#30363d" : OWNER_COLORS[o % OWNER_COLORS.length]!;
    ctx.fillRect(x, y, cell - gap, cell - gap);
    if (handoff.has(p)) {
      ctx.strokeStyle = "#ffffff";
      ctx.lineWidth = 1;
      ctx.strokeRect(x + 0.5, y + 0.5, cell - gap - 1, cell - gap - 1);
    }
    if (hints.has(p)) {
      ctx.fillStyle = "#ffffff";
      ctx.fillRect(x + 2, y + 2, Math.max(2, cell / 3), Math.max(2, cell / 3));
    }
    if (ae.has(p)) {
      ctx.fillStyle = "#000000";
      ctx.beginPath();
      ctx.moveTo(x + cell - gap, y + cell - gap);
      ctx.lineTo(x + cell - gap, y + cell / 2);
      ctx.lineTo(x + cell / 2, y + cell - gap);
      ctx.fill();
    }
  }
  $("#ring-caption").textContent = `· ${q} partitions, coloured by owner`;
  const legend = $("#ring-legend");
  legend.replaceChildren(
    ...d.members
      .map((m, i) => ({ m, i }))
      .filter(({ m }) => m.owned > 0)
      .map(({ m, i }) =>
        el("span", {}, el("i", { style: `background:${OWNER_COLORS[i % OWNER_COLORS.length]}` }), m.id),
      ),
    el("span", { class: "muted" }, `□ handoff ${handoff.size}`),
    el("span", { class: "muted" }, `▪ hints ${hints.size}${d.pending.hintsComplete ? "" : "+"}`),
    el("span", { class: "muted" }, `◢ anti-entropy ${ae.size}`),
  );
  canvas.dataset.cells = String(q);
  canvas.onmousemove = (ev) => {
    const r = canvas.getBoundingClientRect();
    const p = Math.floor((ev.clientY - r.top) / cell) * cols + Math.floor((ev.clientX - r.left) / cell);
    const doc = lastDoc;
    if (doc === undefined || p < 0 || p >= doc.owners.length) return;
    const owner = doc.members[doc.owners[p]!]?.id ?? "?";
    const marks = [
      doc.pending.handoff.includes(p) ? "handoff" : "",
      doc.pending.hints.includes(p) ? "hints" : "",
      doc.pending.antiEntropy.includes(p) ? "anti-entropy" : "",
    ].filter((x) => x !== "");
    $("#ring-tip").textContent =
      `partition ${p}: owner ${owner}${marks.length > 0 ? `, pending ${marks.join(", ")}` : ""}`;
  };
}

function progressRow(name: string, w: WorkProgress, extra = ""): HTMLElement {
  const frac = w.total !== null && w.total > 0 ? Math.min(1, w.done / w.total) : null;
  const bar =
    frac === null
      ? el("span", {}, num(w.done))
      : el(
          "span",
          {},
          el("span", { class: "bar" }, el("span", { style: `width:${(frac * 100).toFixed(1)}%` })),
          `${num(w.done)} / ${num(w.total!)}`,
        );
  return el(
    "tr",
    { "data-work": name },
    el("td", {}, name, extra === "" ? "" : el("span", { class: "muted" }, ` ${extra}`)),
    el("td", {}, w.state),
    el("td", { class: "num" }, w.rate === null ? "—" : `${w.rate.toFixed(w.rate < 10 ? 1 : 0)} ${w.unit}/s`),
    el("td", {}, bar),
    el("td", {}, duration(w.etaSeconds)),
  );
}

/** The handoff this node's join started, over every member (keys scanned of those they hold). */
function joinRow(j: JoinStatus): HTMLElement {
  const who =
    j.membersBusy.length > 0
      ? `, waiting for ${j.membersBusy.join(", ")}`
      : j.membersSilent.length > 0
        ? `, ${j.membersSilent.map((m) => m.id).join(", ")} did not answer`
        : "";
  return progressRow(
    "join",
    {
      state: j.state.replace("_", " "),
      rate: j.state === "handing_off" ? j.keysPerSecond : null,
      unit: "keys",
      done: j.keysScanned,
      total: j.keysTotal,
      etaSeconds: j.etaSeconds,
    },
    `${j.ringVersion === null ? "" : `ring v${j.ringVersion}, `}${num(j.keysSent)} copies sent, ${num(j.keysReceived)} received${who}`,
  );
}

function drawProgress(d: DashboardDocument): void {
  const p = d.progress;
  const ae = p.antiEntropy;
  const rows = [
    progressRow(
      "handoff",
      p.handoff,
      `ring v${p.handoff.ringVersion}${p.handoff.leaving ? ", leaving" : ""}, throttle ${bytes(p.handoff.throttleBytesPerSecond)}/s`,
    ),
    ...(p.join === null ? [] : [joinRow(p.join)]),
    ...p.hints.map((h) => progressRow(`hints → ${h.target}`, h, bytes(h.bytes))),
    progressRow(
      "anti-entropy",
      ae,
      `${num(ae.exchanges)} exchanges, full sweep ${ae.lastFullSweepAgeMs === null ? "not yet" : `${duration(ae.lastFullSweepAgeMs / 1000)} ago`}`,
    ),
  ];
  if (p.hints.length === 0) rows.splice(1, 0, el("tr", {}, el("td", {}, "hints"), el("td", {}, "none held")));
  $("#progress tbody").replaceChildren(...rows);
}

/** The last full compaction asked for (`ringstore storage compact`), in a line. */
function fullCompaction(c: DashboardDocument["storage"]["fullCompaction"]): string {
  if (c === null) return "none asked for";
  const ago = duration(c.ageMs / 1000);
  if (c.state === "failed") return `failed ${ago} ago: ${c.error ?? "unknown error"}`;
  if (c.state === "done")
    return `done ${ago} ago: ${num(c.tablesBefore)} tables to ${num(c.tablesAfter ?? 0)}`;
  if (c.phase !== "merge" || c.bytesTotal === 0) return `running (${c.phase ?? "starting"}) for ${ago}`;
  const left = c.bytesPerSecond > 0 ? (c.bytesTotal - c.bytesDone) / c.bytesPerSecond : null;
  return (
    `merging ${bytes(c.bytesDone)} of ${bytes(c.bytesTotal)} ` +
    `(${Math.floor((100 * c.bytesDone) / c.bytesTotal)}%), ${bytes(c.bytesPerSecond)}/s, ${duration(left)} left`
  );
}

function drawStorage(d: DashboardDocument): void {
  const s = d.storage;
  const items: [string, string][] = [
    ["engine", s.engine],
    [
      "keys stored",
      s.keys === null ? "counting…" : `${num(s.keys.live)} live, ${num(s.keys.tombstones)} tombstones`,
    ],
    ["on disk", `${bytes(s.diskBytes)} in ${s.tables} tables, ${s.sortedRuns} sorted runs`],
    ["memtable", bytes(s.memtableBytes)],
    ["flushes / compactions", `${num(s.flushes)} / ${num(s.compactions)}`],
    ["write amplification", s.writeAmplification.toFixed(2)],
    ["disk writes", s.diskWriteRate === null ? "—" : `${bytes(s.diskWriteRate)}/s`],
    ["write stalls", `${num(s.writeStalls)} (${num(Math.round(s.writeStallMs))} ms)`],
    ["block cache hits", s.blockCacheHitRatio === null ? "—" : `${(s.blockCacheHitRatio * 100).toFixed(1)}%`],
    ["full compaction", fullCompaction(s.fullCompaction)],
  ];
  $("#storage").replaceChildren(...items.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}

function drawEvents(): void {
  $("#events").replaceChildren(
    ...[...events]
      .reverse()
      .map((e) =>
        el("li", { "data-kind": e.kind }, el("time", {}, new Date(e.at).toLocaleTimeString()), e.detail),
      ),
  );
}

// ------------------------------------------------------------------ charts

function chartWidth(id: string): number {
  return Math.max(300, ($(id).parentElement?.clientWidth ?? 600) - 24);
}

function makeCharts(): void {
  const axes = [
    { stroke: "#7d8a99", grid: { stroke: "#263241" }, ticks: { stroke: "#263241" } },
    { stroke: "#7d8a99", grid: { stroke: "#263241" }, ticks: { stroke: "#263241" } },
  ];
  const rateSeries = [{}, ...ops.map((op) => ({ label: op, stroke: OP_COLORS[op] ?? "#ccc", width: 1.5 }))];
  rateChart = new uPlot(
    {
      width: chartWidth("#chart-rate"),
      height: 180,
      series: rateSeries,
      axes,
      scales: { x: { time: true } },
    },
    [[], ...ops.map(() => [])],
    $("#chart-rate"),
  );
  const latSeries = [
    {},
    ...ops.flatMap((op) => [
      { label: `${op} p50`, stroke: OP_COLORS[op] ?? "#ccc", width: 1.5 },
      { label: `${op} p99`, stroke: OP_COLORS[op] ?? "#ccc", width: 1, dash: [4, 3] },
    ]),
  ];
  // A log scale, with a line per decade only.
  const decades = (_u: uPlotType, _axis: number, min: number, max: number) => {
    const out: number[] = [];
    for (let v = 10 ** Math.floor(Math.log10(Math.max(min, 0.001))); v <= max * 1.0001; v *= 10)
      if (v >= min * 0.9999) out.push(v);
    return out;
  };
  latencyChart = new uPlot(
    {
      width: chartWidth("#chart-latency"),
      height: 180,
      series: latSeries,
      axes: [axes[0]!, { ...axes[1]!, splits: decades }],
      scales: { x: { time: true }, y: { distr: 3 } },
      legend: { show: false },
    },
    [[], ...ops.flatMap(() => [[], []])],
    $("#chart-latency"),
  );
}

function drawCharts(): void {
  if (rateChart === undefined || latencyChart === undefined) makeCharts();
  const xs = samples.map((s) => s.at / 1000);
  const rates = ops.map((_, i) => samples.map((s) => (s.ops[i]![0] * 1000) / s.ms));
  const lats = ops.flatMap((_, i) => [samples.map((s) => s.ops[i]![2]), samples.map((s) => s.ops[i]![3])]);
  rateChart!.setData([xs, ...rates]);
  latencyChart!.setData([xs, ...lats] as uPlotType.AlignedData);
  const points = lats.reduce((n, series) => n + series.filter((v) => v !== null).length, 0);
  $("#chart-latency").dataset.points = String(points);
  $("#chart-rate").dataset.points = String(xs.length);
}

// ------------------------------------------------------------------ the refresh loop

async function refresh(): Promise<number> {
  const since = samples.length > 0 ? samples[samples.length - 1]!.at : 0;
  const seq = events.length > 0 ? events[events.length - 1]!.seq : 0;
  const res = await fetch(`/ui/state?since=${since}&events=${seq}`, { cache: "no-store" });
  if (!res.ok) throw new Error(`GET /ui/state: ${res.status}`);
  const d = (await res.json()) as DashboardDocument;
  lastDoc = d;
  ops = d.requests.ops;
  samples = [...samples, ...d.requests.samples].slice(-MAX_SAMPLES);
  events = [...events, ...d.events].slice(-MAX_EVENTS);
  drawSummary(d);
  drawMembers(d);
  drawRing(d);
  drawProgress(d);
  drawStorage(d);
  drawEvents();
  drawCharts();
  document.body.dataset.refreshed = String(d.at);
  return d.sampleMs;
}

async function loop(): Promise<void> {
  let wait = 2000;
  try {
    wait = await refresh();
  } catch (err) {
    $("#updated").textContent = `cannot reach the node: ${(err as Error).message}; retrying`;
  }
  setTimeout(() => void loop(), Math.max(1000, wait));
}

window.addEventListener("resize", () => {
  rateChart?.setSize({ width: chartWidth("#chart-rate"), height: 180 });
  latencyChart?.setSize({ width: chartWidth("#chart-latency"), height: 180 });
});

void loop();

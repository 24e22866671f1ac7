/**
 * `ringstore cluster status|leave|remove --node HOST:PORT`: through the client library, so that `https://`
 * nodes (`--ca-file`) and tokens (`--token`) work as for the key commands.
 */
import type { HintedHandoffStatus } from "../api/views.js";
import { RingstoreClient, RingstoreError } from "../client/client.js";
import { type ConnectionFlags, clientOptions } from "./connection.js";
import { Progress } from "./progress.js";

export interface StatusMember {
  id: string;
  state: string;
  api: string;
  peer: string;
  partitions: number;
  weight: number;
  zone: string | null;
}

export function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  return rows
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i]!))
        .join("  ")
        .trimEnd(),
    )
    .join("\n");
}

/** How long `cluster status` waits for the node asked, and for each member's /health. */
export const STATUS_ANSWER_MS = 3000;

/** The sentence for a node that did not answer in time (or at all). */
function noAnswer(addr: string, err: RingstoreError, ms: number): string {
  const timedOut = /timeout/i.test(`${err.message} ${String((err.cause as { code?: string })?.code ?? "")}`);
  return timedOut
    ? `${addr} did not answer within ${ms / 1000} s: its process may be paused (SIGSTOP) or overloaded; ask another node with --node`
    : `cannot reach ${addr}: ${err.message}`;
}

/** The members `cluster status` shows: departed members (state `left`, until every node forgets them) only with `all`. */
export function shownMembers(members: readonly StatusMember[], all: boolean): readonly StatusMember[] {
  return all ? members : members.filter((m) => m.state !== "left");
}

/**
 * The members' table of `cluster status` (shownMembers), with each member's answer to /health when
 * `answers` has it; a line says how many departed members are hidden.
 */
export function membersTable(
  members: readonly StatusMember[],
  all: boolean,
  answers?: ReadonlyMap<string, string>,
): string {
  const shown = shownMembers(members, all);
  const head = [
    "ID",
    "STATE",
    ...(answers === undefined ? [] : ["ANSWERS"]),
    "API",
    "PEER",
    "PARTITIONS",
    "WEIGHT",
    "ZONE",
  ];
  const rows = [head];
  for (const m of shown)
    rows.push([
      m.id,
      m.state,
      ...(answers === undefined ? [] : [answers.get(m.id) ?? "-"]),
      m.api,
      m.peer,
      String(m.partitions),
      String(m.weight),
      m.zone ?? "-",
    ]);
  const hidden = members.length - shown.length;
  return hidden === 0
    ? table(rows)
    : `${table(rows)}
(${hidden} departed member${hidden === 1 ? "" : "s"} not shown: --all shows ${hidden === 1 ? "it" : "them"})`;
}

export async function clusterStatusCommand(
  flags: ConnectionFlags & { json?: boolean; all?: boolean },
): Promise<void> {
  const c = new RingstoreClient(flags.node, {
    connections: 1,
    httpTimeoutMs: STATUS_ANSWER_MS,
    ...clientOptions(flags),
  });
  try {
    let s: {
      node: { id: string };
      cluster: { id: string; n: number; r: number; w: number; partitions: number; ringVersion: number };
      members: StatusMember[];
      handoff?: LeaveStatus["handoff"];
      hintedHandoff?: HintedHandoffStatus;
    };
    try {
      s = (await c.status(flags.node)) as typeof s;
    } catch (err) {
      if (!(err instanceof RingstoreError) || err.status !== 0) throw err;
      throw new Error(noAnswer(flags.node, err, STATUS_ANSWER_MS));
    }
    if (flags.json) {
      process.stdout.write(`${JSON.stringify(s, null, 2)}\n`);
      return;
    }
    const cl = s.cluster;
    process.stdout.write(
      `cluster ${cl.id}: N=${cl.n} R=${cl.r} W=${cl.w}, ${cl.partitions} partitions, ring version ${cl.ringVersion} (as seen by ${s.node.id})\n\n`,
    );
    const shown = shownMembers(s.members, flags.all === true);
    // Every member shown (but the one that answered) is asked for /health at once, each within the same
    // short bound: one paused or cut off is named rather than holding the command up.
    const answers = await Promise.all(
      shown.map(async (m) => {
        if (m.id === s.node.id) return "yes";
        if (m.state === "left" || /:0$/.test(m.api)) return "-";
        try {
          return (await c.health(m.api)) ? "yes" : "no";
        } catch (err) {
          if (err instanceof RingstoreError && err.status === 0) return "NO";
          throw err;
        }
      }),
    );
    const byId = new Map(shown.map((m, i) => [m.id, answers[i]!]));
    process.stdout.write(`${membersTable(s.members, flags.all === true, byId)}\n`);
    shown.forEach((m, i) => {
      if (answers[i] === "NO")
        process.stdout.write(
          `${m.id} (${m.api}) did not answer within ${STATUS_ANSWER_MS / 1000} s: its process may be paused (SIGSTOP), overloaded or cut off\n`,
        );
    });
    const h = s.handoff;
    if (h !== undefined && h.state !== "idle")
      process.stdout.write(
        `\nhandoff on ${s.node.id}: ${h.state} for ring version ${h.ringVersion}, ${h.keysScanned} keys scanned, ` +
          `${h.keysSent} copies sent, ${h.storesFailed} failed${handoffPace(h)}${h.lastError ? ` (last error: ${h.lastError})` : ""}\n`,
      );
    const hh = s.hintedHandoff;
    if (hh !== undefined && hh.targets.length > 0) process.stdout.write(`\n${hintsTable(s.node.id, hh)}\n`);
  } finally {
    await c.close();
  }
}

/** The hints a node holds, by target, and how their delivery goes. */
export function hintsTable(node: string, hh: HintedHandoffStatus): string {
  const rows = [["TARGET", "HINTS", "BYTES", "OLDEST", "DELIVERY", "DELIVERED", "FAILED"]];
  for (const t of hh.targets)
    rows.push([
      t.target,
      String(t.count),
      formatBytes(t.bytes),
      t.oldestAgeMs === null ? "-" : formatAge(t.oldestAgeMs),
      t.state,
      String(t.delivered),
      t.failed === 0 ? "0" : `${t.failed}${t.lastError ? ` (${t.lastError})` : ""}`,
    ]);
  return `hints held by ${node} (${hh.backlog} for delivery, ${formatBytes(hh.backlogBytes)}):\n${table(rows)}`;
}

function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / (1024 * 1024)).toFixed(1)} MiB`;
}

function formatAge(ms: number): string {
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

interface LeaveStatus {
  node: { id: string };
  members: { id: string; api: string; status: string }[];
  handoff: {
    state: string;
    ringVersion: number;
    keysScanned: number;
    keysSent: number;
    storesFailed: number;
    passesCompleted: number;
    lastError: string | null;
    /** Absent from nodes of before the handoff throttle. */
    throttleBytesPerSecond?: number;
    keysPerSecond?: number | null;
    bytesPerSecond?: number | null;
    keysTotal?: number | null;
    etaSeconds?: number | null;
  };
}

/** A handoff's rates, total and time left, as one phrase ("" when the node reports none). */
export function handoffPace(h: LeaveStatus["handoff"]): string {
  const parts: string[] = [];
  if (h.keysPerSecond != null) parts.push(`${Math.round(h.keysPerSecond)} keys/s scanned`);
  if (h.bytesPerSecond != null) parts.push(`${formatRate(h.bytesPerSecond)} sent`);
  if (h.keysTotal != null) parts.push(`${h.keysScanned} of ~${h.keysTotal} keys`);
  if (h.etaSeconds != null) parts.push(`about ${Math.ceil(h.etaSeconds)} s left`);
  if (h.throttleBytesPerSecond !== undefined) parts.push(`throttle ${formatRate(h.throttleBytesPerSecond)}`);
  return parts.length === 0 ? "" : ` (${parts.join(", ")})`;
}

function formatRate(bps: number): string {
  if (bps < 1024) return `${Math.round(bps)} B/s`;
  if (bps < 1 << 20) return `${(bps / 1024).toFixed(1)} KiB/s`;
  return `${(bps / (1 << 20)).toFixed(1)} MiB/s`;
}

/** The node's /status, or undefined if it does not answer 200 (or at all). */
async function statusOf(c: RingstoreClient, node: string): Promise<LeaveStatus | undefined> {
  try {
    return (await c.status(node)) as unknown as LeaveStatus;
  } catch (err) {
    if (err instanceof RingstoreError) return undefined;
    throw err;
  }
}

/** POSTs a membership change to `node`; its 202 answer, or an error saying why it was refused. */
async function postMembership(
  node: string,
  what: string,
  run: () => Promise<Record<string, unknown>>,
): Promise<Record<string, unknown>> {
  try {
    return await run();
  } catch (err) {
    if (!(err instanceof RingstoreError)) throw err;
    if (err.status === 0) throw new Error(`cannot reach ${node}: ${err.message}`);
    throw new Error(`${node} refused to ${what}: ${err.message}`);
  }
}

/**
 * `ringstore cluster leave --node HOST:PORT`: asks that node to leave, then follows its handoff on its
 * /status until it says `left` (the node then stops by itself). If it stops answering first, another
 * member is asked whether it left.
 */
export async function clusterLeaveCommand(
  flags: ConnectionFlags & {
    force?: boolean;
    wait: boolean;
    waitTimeout: string;
  },
): Promise<void> {
  const waitS = Number(flags.waitTimeout);
  if (!Number.isFinite(waitS) || waitS <= 0)
    throw new Error(`--wait-timeout must be a positive number of seconds`);
  const c = new RingstoreClient(flags.node, { connections: 1, httpTimeoutMs: 5000, ...clientOptions(flags) });
  try {
    await leaveAndFollow(c, flags, waitS);
  } finally {
    await c.close();
  }
}

async function leaveAndFollow(
  c: RingstoreClient,
  flags: { node: string; force?: boolean; wait: boolean },
  waitS: number,
): Promise<void> {
  // The members as the node sees them now: whom to ask whether it left, once it has stopped answering.
  // (If it does not answer, the POST below says what is wrong.)
  let last = await statusOf(c, flags.node);
  const info = (await postMembership(flags.node, "leave", () =>
    c.leave(flags.node, { force: flags.force === true }),
  )) as { node: string; remaining: number };
  process.stdout.write(
    `node ${info.node} is leaving: its partitions go to the ${info.remaining} other member(s); it hands its data off, then stops\n`,
  );
  if (!flags.wait) return;
  const deadline = Date.now() + waitS * 1000;
  const progress = new Progress({ stream: process.stdout, unit: "keys" });
  let unreachableSince: number | undefined;
  let total: number | null = null;
  let totalAt = 0;
  while (Date.now() < deadline) {
    const s = await statusOf(c, flags.node);
    if (s === undefined) {
      // It stopped answering: it left and stopped, or it died. Ask the others (gossip may take a moment
      // to carry the news: only 10 s of silence without it counts as a failed leave).
      unreachableSince ??= Date.now();
      if ((await askOthers(c, last, info.node, flags.node)) === "left") {
        progress.finish(`node ${info.node} has left the cluster and stopped`);
        return;
      }
      if (Date.now() - unreachableSince > 10_000) {
        progress.finish();
        throw new Error(
          `node ${info.node} stopped answering before it finished handing off; start it again (same --data) and its leave goes on`,
        );
      }
    } else {
      unreachableSince = undefined;
      last = s;
      const self = s.members.find((m) => m.id === s!.node.id);
      if (self?.status === "left") {
        progress.finish(`node ${info.node} has left the cluster; it stops by itself`);
        return;
      }
      // The keys it holds (its last census, refreshed every few seconds): what the pass scans.
      if (Date.now() - totalAt > 2000) {
        totalAt = Date.now();
        total = await keysHeld(c, flags.node);
      }
      const h = s.handoff;
      const failed =
        h.storesFailed > 0 ? `, ${h.storesFailed} failed${h.lastError ? ` (${h.lastError})` : ""}` : "";
      progress.update(
        `handoff of ${info.node}:`,
        h.keysScanned,
        h.state === "idle" ? null : total,
        `${h.keysSent} copies sent, ${h.state}${handoffPace(h)}${failed}`,
      );
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  progress.finish();
  throw new Error(
    `node ${info.node} has not finished leaving after ${waitS} s (it goes on; see cluster status)`,
  );
}

/** The keys `node` holds, live and tombstones, as its last census counted them (null: not known). */
async function keysHeld(c: RingstoreClient, node: string): Promise<number | null> {
  try {
    const d = (await c.dashboard(node)) as {
      storage?: { keys?: { live: number; tombstones: number } | null };
    };
    const k = d.storage?.keys;
    return k === undefined || k === null ? null : k.live + k.tombstones;
  } catch (err) {
    if (err instanceof RingstoreError) return null;
    throw err;
  }
}

/** "left" if another member says `id` has left; undefined if none answers or none knows it yet. */
async function askOthers(
  c: RingstoreClient,
  last: LeaveStatus | undefined,
  id: string,
  leaving: string,
): Promise<"left" | undefined> {
  for (const m of last?.members ?? []) {
    if (m.id === id || leaving.replace(/^https?:\/\//i, "") === m.api || m.status === "left") continue;
    // One that does not answer: try the next one.
    const s = await statusOf(c, m.api);
    if (s?.members.find((x) => x.id === id)?.status === "left") return "left";
  }
  return undefined;
}

/**
 * `ringstore cluster remove --node HOST:PORT --id ID`: asks a live member to remove member ID on its
 * behalf, for a node that is gone for good and cannot leave by itself.
 */
export async function clusterRemoveCommand(
  flags: ConnectionFlags & {
    id: string;
    force?: boolean;
    wait: boolean;
    waitTimeout: string;
  },
): Promise<void> {
  const waitS = Number(flags.waitTimeout);
  if (!Number.isFinite(waitS) || waitS <= 0)
    throw new Error(`--wait-timeout must be a positive number of seconds`);
  const c = new RingstoreClient(flags.node, { connections: 1, httpTimeoutMs: 5000, ...clientOptions(flags) });
  try {
    const r = (await postMembership(flags.node, `remove ${flags.id}`, () =>
      c.remove(flags.node, flags.id, { force: flags.force === true }),
    )) as { removed: string; remaining: number };
    process.stdout.write(
      `member ${r.removed} is removed: its partitions go to the ${r.remaining} remaining member(s), and the ` +
        `other replicas of its keys send them to their new replicas; if ${r.removed} ever runs again, it stops\n`,
    );
    if (flags.wait) await followRemoval(c, flags.node, r.removed, waitS);
  } finally {
    await c.close();
  }
}

interface MemberStatus {
  node: { id: string };
  cluster: { ringVersion: number };
  members: { id: string; api: string; status: string; state: string }[];
  handoff: LeaveStatus["handoff"];
}

/**
 * Follows the handoff that a removal starts on every remaining member (each sends the keys it holds to
 * their new replicas) until each has finished a pass for the ring without the removed member: the sum of
 * their figures, as a bar on a terminal or lines elsewhere. A member that does not answer is left out
 * (and named) rather than waited for.
 */
async function followRemoval(
  c: RingstoreClient,
  node: string,
  removed: string,
  waitS: number,
): Promise<void> {
  const first = (await statusOf(c, node)) as unknown as MemberStatus | undefined;
  if (first === undefined) return;
  const version = first.cluster.ringVersion;
  const members = first.members.filter((m) => m.id !== removed && m.status !== "left" && m.state === "up");
  const progress = new Progress({ stream: process.stdout, unit: "keys" });
  const totals = new Map<string, number | null>();
  let totalsAt = 0;
  const deadline = Date.now() + waitS * 1000;
  while (Date.now() < deadline) {
    const all = await Promise.all(
      members.map(async (m) => ({ m, s: (await statusOf(c, m.api)) as unknown as MemberStatus | undefined })),
    );
    if (Date.now() - totalsAt > 2000) {
      totalsAt = Date.now();
      await Promise.all(members.map(async (m) => totals.set(m.id, await keysHeld(c, m.api))));
    }
    const answering = all.filter((x) => x.s !== undefined) as { m: (typeof members)[0]; s: MemberStatus }[];
    const busy = answering.filter(
      (x) =>
        x.s.cluster.ringVersion < version ||
        x.s.handoff.state !== "idle" ||
        x.s.handoff.ringVersion < version,
    );
    if (busy.length === 0) {
      const silent = all.filter((x) => x.s === undefined).map((x) => x.m.id);
      progress.finish(
        `handoff after removing ${removed} done on ${answering.map((x) => x.m.id).join(", ")}` +
          (silent.length > 0 ? `; ${silent.join(", ")} did not answer (see cluster status)` : ""),
      );
      return;
    }
    const running = busy.filter((x) => x.s.handoff.ringVersion >= version);
    const done = running.reduce((n, x) => n + x.s.handoff.keysScanned, 0);
    const sizes = busy.map((x) => totals.get(x.m.id) ?? null);
    const total = sizes.includes(null) ? null : (sizes as number[]).reduce((a, b) => a + b, 0);
    const sent = running.reduce((n, x) => n + x.s.handoff.keysSent, 0);
    progress.update(`handoff on ${busy.map((x) => x.m.id).join(", ")}:`, done, total, `${sent} copies sent`);
    await new Promise((r) => setTimeout(r, 250));
  }
  progress.finish();
  throw new Error(
    `the handoff after removing ${removed} has not finished after ${waitS} s (it goes on; see cluster status)`,
  );
}

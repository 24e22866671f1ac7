/**
 * `ringstore cluster status|leave|remove --node HOST:PORT`: through the client library, so that `https://`
 * nodes (`--ca-file`) and tokens (`--token`) work as for the key commands.
 */
import type { HintedHandoffStatus } from "../api/views.js";
import { RingstoreClient, RingstoreError } from "../client/client.js";
import { type ConnectionFlags, clientOptions } from "./connection.js";

interface StatusMember {
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

export async function clusterStatusCommand(flags: ConnectionFlags & { json?: boolean }): Promise<void> {
  const c = new RingstoreClient(flags.node, { connections: 1, ...clientOptions(flags) });
  try {
    const s = (await c.status()) as {
      node: { id: string };
      cluster: { id: string; n: number; r: number; w: number; partitions: number; ringVersion: number };
      members: StatusMember[];
      handoff?: LeaveStatus["handoff"];
      hintedHandoff?: HintedHandoffStatus;
    };
    if (flags.json) {
      process.stdout.write(`${JSON.stringify(s, null, 2)}\n`);
      return;
    }
    const cl = s.cluster;
    process.stdout.write(
      `cluster ${cl.id}: N=${cl.n} R=${cl.r} W=${cl.w}, ${cl.partitions} partitions, ring version ${cl.ringVersion} (as seen by ${s.node.id})\n\n`,
    );
    const rows = [["ID", "STATE", "API", "PEER", "PARTITIONS", "WEIGHT", "ZONE"]];
    for (const m of s.members)
      rows.push([m.id, m.state, m.api, m.peer, String(m.partitions), String(m.weight), m.zone ?? "-"]);
    process.stdout.write(`${table(rows)}\n`);
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
  let lastLine = "";
  let unreachableSince: number | undefined;
  while (Date.now() < deadline) {
    const s = await statusOf(c, flags.node);
    if (s === undefined) {
      // It stopped answering: it left and stopped, or it died. Ask the others (gossip may take a moment
      // to carry the news: only 10 s of silence without it counts as a failed leave).
      unreachableSince ??= Date.now();
      if ((await askOthers(c, last, info.node, flags.node)) === "left") {
        process.stdout.write(`node ${info.node} has left the cluster and stopped\n`);
        return;
      }
      if (Date.now() - unreachableSince > 10_000)
        throw new Error(
          `node ${info.node} stopped answering before it finished handing off; start it again (same --data) and its leave goes on`,
        );
    } else {
      unreachableSince = undefined;
      last = s;
      const self = s.members.find((m) => m.id === s!.node.id);
      const h = s.handoff;
      const line = `handoff: ${h.state}, ring version ${h.ringVersion}, ${h.keysScanned} keys scanned, ${h.keysSent} copies sent, ${h.storesFailed} failed, ${h.passesCompleted} passes done${handoffPace(h)}${h.storesFailed > 0 && h.lastError ? ` (last error: ${h.lastError})` : ""}`;
      if (line !== lastLine) process.stdout.write(`  ${line}\n`);
      lastLine = line;
      if (self?.status === "left") {
        process.stdout.write(`node ${info.node} has left the cluster; it stops by itself\n`);
        return;
      }
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(
    `node ${info.node} has not finished leaving after ${waitS} s (it goes on; see cluster status)`,
  );
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
  },
): Promise<void> {
  const c = new RingstoreClient(flags.node, { connections: 1, httpTimeoutMs: 5000, ...clientOptions(flags) });
  let r: { removed: string; remaining: number };
  try {
    r = (await postMembership(flags.node, `remove ${flags.id}`, () =>
      c.remove(flags.node, flags.id, { force: flags.force === true }),
    )) as { removed: string; remaining: number };
  } finally {
    await c.close();
  }
  process.stdout.write(
    `member ${r.removed} is removed: its partitions go to the ${r.remaining} remaining member(s), and the ` +
      `other replicas of its keys send them to their new replicas (handoff in each node's /status); ` +
      `if ${r.removed} ever runs again, it stops\n`,
  );
}

/** `ringstore cluster status --node HOST:PORT`: the members and their states, as a table. */
import { RingstoreClient } from "../client/client.js";

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

export async function clusterStatusCommand(flags: { node: string; json?: boolean }): Promise<void> {
  const c = new RingstoreClient(flags.node, { connections: 1 });
  try {
    const s = (await c.status()) as {
      node: { id: string };
      cluster: { id: string; n: number; r: number; w: number; partitions: number; ringVersion: number };
      members: StatusMember[];
      handoff?: LeaveStatus["handoff"];
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
          `${h.keysSent} copies sent, ${h.storesFailed} failed${h.lastError ? ` (last error: ${h.lastError})` : ""}\n`,
      );
  } finally {
    await c.close();
  }
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
  };
}

async function fetchJson(url: string, init: RequestInit = {}): Promise<{ status: number; body: unknown }> {
  const res = await fetch(url, { ...init, signal: AbortSignal.timeout(5000) });
  const text = await res.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON: keep the text for the message
  }
  return { status: res.status, body };
}

/** POSTs a membership change to `node`; its 202 answer, or an error saying why it was refused. */
async function postMembership(node: string, pathAndQuery: string, what: string): Promise<unknown> {
  let res: { status: number; body: unknown };
  try {
    res = await fetchJson(`http://${node}${pathAndQuery}`, { method: "POST" });
  } catch (err) {
    throw new Error(`cannot reach ${node}: ${(err as Error).message}`);
  }
  if (res.status !== 202) {
    const b = res.body as { message?: string };
    throw new Error(`${node} refused to ${what}: ${b?.message ?? JSON.stringify(res.body)}`);
  }
  return res.body;
}

/**
 * `ringstore cluster leave --node HOST:PORT`: asks that node to leave, then follows its handoff on its
 * /status until it says `left` (the node then stops by itself). If it stops answering first, another
 * member is asked whether it left.
 */
export async function clusterLeaveCommand(flags: {
  node: string;
  force?: boolean;
  wait: boolean;
  waitTimeout: string;
}): Promise<void> {
  const waitS = Number(flags.waitTimeout);
  if (!Number.isFinite(waitS) || waitS <= 0)
    throw new Error(`--wait-timeout must be a positive number of seconds`);
  const base = `http://${flags.node}`;
  // The members as the node sees them now: whom to ask whether it left, once it has stopped answering.
  let last: LeaveStatus | undefined;
  try {
    const r = await fetchJson(`${base}/status`);
    if (r.status === 200) last = r.body as LeaveStatus;
  } catch {
    // the POST below says what is wrong
  }
  const info = (await postMembership(
    flags.node,
    `/cluster/leave${flags.force ? "?force=true" : ""}`,
    "leave",
  )) as { node: string; remaining: number };
  process.stdout.write(
    `node ${info.node} is leaving: its partitions go to the ${info.remaining} other member(s); it hands its data off, then stops\n`,
  );
  if (!flags.wait) return;
  const deadline = Date.now() + waitS * 1000;
  let lastLine = "";
  let unreachableSince: number | undefined;
  while (Date.now() < deadline) {
    let s: LeaveStatus | undefined;
    try {
      const r = await fetchJson(`${base}/status`);
      if (r.status === 200) s = r.body as LeaveStatus;
    } catch {
      s = undefined;
    }
    if (s === undefined) {
      // It stopped answering: it left and stopped, or it died. Ask the others (gossip may take a moment
      // to carry the news: only 10 s of silence without it counts as a failed leave).
      unreachableSince ??= Date.now();
      if ((await askOthers(last, info.node, flags.node)) === "left") {
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
      const line = `handoff: ${h.state}, ring version ${h.ringVersion}, ${h.keysScanned} keys scanned, ${h.keysSent} copies sent, ${h.storesFailed} failed, ${h.passesCompleted} passes done${h.storesFailed > 0 && h.lastError ? ` (last error: ${h.lastError})` : ""}`;
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
  last: LeaveStatus | undefined,
  id: string,
  leaving: string,
): Promise<"left" | undefined> {
  for (const m of last?.members ?? []) {
    if (m.id === id || m.api === leaving || m.status === "left") continue;
    try {
      const r = await fetchJson(`http://${m.api}/status`);
      if (r.status !== 200) continue;
      const me = (r.body as LeaveStatus).members.find((x) => x.id === id);
      if (me?.status === "left") return "left";
    } catch {
      // try the next one
    }
  }
  return undefined;
}

/**
 * `ringstore cluster remove --node HOST:PORT --id ID`: asks a live member to remove member ID on its
 * behalf, for a node that is gone for good and cannot leave by itself.
 */
export async function clusterRemoveCommand(flags: {
  node: string;
  id: string;
  force?: boolean;
}): Promise<void> {
  const q = new URLSearchParams({ id: flags.id });
  if (flags.force) q.set("force", "true");
  const r = (await postMembership(flags.node, `/cluster/remove?${q}`, `remove ${flags.id}`)) as {
    removed: string;
    remaining: number;
  };
  process.stdout.write(
    `member ${r.removed} is removed: its partitions go to the ${r.remaining} remaining member(s), and the ` +
      `other replicas of its keys send them to their new replicas (handoff in each node's /status); ` +
      `if ${r.removed} ever runs again, it stops\n`,
  );
}

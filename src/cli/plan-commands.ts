/**
 * `ringstore cluster plan join|leave|remove|weight --id ID [W]` (what a change would move, from the
 * node's `GET /cluster/plan`; changes nothing) and `ringstore cluster weight --id ID W` (the member's
 * weight, set through its own API, found in `--node`'s view) and `ringstore cluster handoff-rate MIB`
 * (a node's handoff throttle, at run time).
 */
import { RingstoreClient } from "../client/client.js";
import type { Plan } from "../ring/plan.js";
import { table } from "./cluster-commands.js";
import { type ConnectionFlags, clientOptions } from "./connection.js";

export function formatBytes(b: number): string {
  if (b < 1024) return `${b} B`;
  if (b < 1 << 20) return `${(b / 1024).toFixed(1)} KiB`;
  if (b < 1 << 30) return `${(b / (1 << 20)).toFixed(1)} MiB`;
  return `${(b / (1 << 30)).toFixed(2)} GiB`;
}

function formatSeconds(s: number): string {
  if (s < 1) return "under a second";
  if (s < 120) return `${Math.ceil(s)} s`;
  if (s < 7200) return `${Math.ceil(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

const CHANGES = ["join", "leave", "remove", "weight"];

/** Parses a weight argument or option: an integer 1..1000. */
function weightArg(v: string | undefined, what: string): number | undefined {
  if (v === undefined) return undefined;
  if (!/^[0-9]{1,4}$/.test(v) || Number(v) < 1 || Number(v) > 1000)
    throw new Error(`${what} must be an integer 1..1000, not "${v}"`);
  return Number(v);
}

export async function clusterPlanCommand(
  change: string,
  weightPositional: string | undefined,
  flags: ConnectionFlags & { id: string; weight?: string; zone?: string; json?: boolean; all?: boolean },
): Promise<void> {
  if (!CHANGES.includes(change))
    throw new Error(`the change is one of ${CHANGES.join(", ")}, not "${change}"`);
  const weight = weightArg(weightPositional ?? flags.weight, "the weight");
  if (change === "weight" && weight === undefined)
    throw new Error("cluster plan weight --id ID W: the new weight W is required");
  const c = new RingstoreClient(flags.node, {
    connections: 1,
    httpTimeoutMs: 120_000,
    ...clientOptions(flags),
  });
  let plan: Plan;
  try {
    plan = (await c.plan(flags.node, {
      change,
      id: flags.id,
      ...(weight === undefined ? {} : { weight }),
      ...(flags.zone === undefined ? {} : { zone: flags.zone }),
    })) as unknown as Plan;
  } finally {
    await c.close();
  }
  if (flags.json === true) {
    process.stdout.write(`${JSON.stringify(plan, null, 2)}\n`);
    return;
  }
  const what =
    change === "join"
      ? `${flags.id} joins (weight ${weight ?? 1})`
      : change === "weight"
        ? `${flags.id} gets weight ${weight}`
        : change === "leave"
          ? `${flags.id} leaves`
          : `${flags.id} is removed`;
  const out: string[] = [];
  out.push(`plan (nothing is changed): ${what}, over ring version ${plan.ringVersion}`);
  out.push(
    `  ${plan.moves.length} partition(s) change replicas (${plan.ownersChanged} change owner); ` +
      `${plan.keys} key copies, ${formatBytes(plan.bytes)}, go to new replicas`,
  );
  out.push(
    `  estimated time at the handoff throttle of ${formatBytes(plan.bytesPerSecond)}/s per node: ${formatSeconds(plan.estimateSeconds)}`,
  );
  if (plan.missingCounts.length > 0)
    out.push(`  no counts from ${plan.missingCounts.join(", ")}: their partitions may be undercounted`);
  out.push("");
  out.push(
    table([
      ["node", "partitions", "receives keys", "receives", "sends"],
      ...plan.nodes.map((n) => [
        n.id,
        `${n.partitionsBefore} -> ${n.partitionsAfter}`,
        String(n.receivesKeys),
        formatBytes(n.receivesBytes),
        formatBytes(n.sendsBytes),
      ]),
    ]),
  );
  if (plan.moves.length > 0) {
    const shown = flags.all === true ? plan.moves : plan.moves.slice(0, 40);
    out.push("");
    out.push(
      table([
        ["partition", "owner", "replicas", "keys", "bytes"],
        ...shown.map((m) => [
          String(m.partition),
          m.ownerFrom === m.ownerTo ? m.ownerFrom : `${m.ownerFrom} -> ${m.ownerTo}`,
          `${m.from.join(",")} -> ${m.to.join(",")}`,
          String(m.keys),
          formatBytes(m.bytes),
        ]),
      ]),
    );
    if (shown.length < plan.moves.length)
      out.push(`... and ${plan.moves.length - shown.length} more (--all lists every one, --json all of it)`);
  }
  process.stdout.write(`${out.join("\n")}\n`);
}

interface StatusView {
  node: { id: string };
  members: { id: string; api: string; status: string; weight: number }[];
}

export async function clusterWeightCommand(
  weightArgument: string,
  flags: ConnectionFlags & { id: string },
): Promise<void> {
  const weight = weightArg(weightArgument, "the weight")!;
  const c = new RingstoreClient(flags.node, {
    connections: 1,
    httpTimeoutMs: 10_000,
    ...clientOptions(flags),
  });
  try {
    // The member sets its own weight: find its API in this node's view.
    const s = (await c.status(flags.node)) as unknown as StatusView;
    const m = s.members.find((x) => x.id === flags.id);
    if (m === undefined || m.status === "left")
      throw new Error(`${flags.id} is not a member of the cluster ${flags.node} belongs to`);
    const target = s.node.id === flags.id ? flags.node : m.api;
    const r = (await c.setWeight(target, weight, flags.id)) as { node: string; weight: number; was: number };
    process.stdout.write(
      r.was === r.weight
        ? `member ${r.node} has weight ${r.weight} already: nothing changes\n`
        : `member ${r.node} now has weight ${r.weight} (was ${r.was}): the claimant re-claims the ring and handoff moves its share (see cluster status); a restart takes its --weight again\n`,
    );
  } finally {
    await c.close();
  }
}

export async function clusterHandoffRateCommand(mib: string, flags: ConnectionFlags): Promise<void> {
  const v = Number(mib);
  if (!(v > 0) || !Number.isFinite(v) || v * (1 << 20) < 1024)
    throw new Error(`the rate is in MiB/s, at least 0.001, not "${mib}"`);
  const c = new RingstoreClient(flags.node, {
    connections: 1,
    httpTimeoutMs: 10_000,
    ...clientOptions(flags),
  });
  try {
    const r = (await c.setHandoffRate(flags.node, v * (1 << 20))) as {
      node: string;
      bytesPerSecond: number;
      was: number;
    };
    process.stdout.write(
      `node ${r.node}: handoff throttle ${formatBytes(r.bytesPerSecond)}/s (was ${formatBytes(r.was)}/s), from now on; a restart takes its --handoff-rate again\n`,
    );
  } finally {
    await c.close();
  }
}

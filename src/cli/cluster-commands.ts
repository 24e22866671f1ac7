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
  } finally {
    await c.close();
  }
}

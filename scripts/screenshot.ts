/**
 * `npm run screenshot`: docs/dashboard.png, the dashboard of a running 3-node cluster, remade by anyone.
 *
 * Starts three nodes through the CLI (dist/, in a temporary folder, ports chosen by the system), sends
 * some traffic for a while (writes, reads, deletes, a key listing), stops one node with SIGKILL and goes
 * on writing (so it shows down, and the others hold hints for it), then opens /ui in Debian's Chromium
 * (playwright-core), waits for two refreshes, and saves a full-page screenshot. Cleans everything up.
 *
 *   npm run screenshot [-- --out docs/dashboard.png] [--seconds 20]
 */
import { parseArgs } from "node:util";
import { RingstoreClient } from "../src/client/client.js";
import { TestCluster } from "../test/cluster/harness.js";
import { findChromium, launchChromium } from "../test/support/chromium.js";

const { values } = parseArgs({
  options: {
    out: { type: "string", default: "docs/dashboard.png" },
    seconds: { type: "string", default: "20" },
  },
});
const seconds = Number(values.seconds);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function traffic(client: RingstoreClient, ms: number, keys: number, width = 6): Promise<void> {
  const end = Date.now() + ms;
  let i = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (Date.now() < end) {
        const n = i++;
        const k = `user:${n % keys}`;
        try {
          if (n % 10 < 4) await client.put(k, `value ${n} `.repeat(1 + (n % 50)));
          else if (n % 97 === 0) {
            const cur = await client.get(k);
            await client.delete(k, { context: cur.context });
          } else await client.get(k);
        } catch {
          // a node going down mid-request: the next one goes on
        }
        // A gentle, uneven load, so that the charts have a shape.
        await sleep(2 + (Math.sin(Date.now() / 3000) + 1) * 4);
      }
    }),
  );
}

async function main(): Promise<void> {
  const chromium = findChromium();
  if (chromium === undefined)
    throw new Error("no Chromium: apt-get install -y --no-install-recommends chromium");
  const c = new TestCluster(["--gossip-interval", "200", "--down-after", "3000"]);
  const ids = ["n1", "n2", "n3"];
  try {
    await c.start("n1");
    await c.start("n2", { join: "n1", args: ["--zone", "b"] });
    await c.start("n3", { join: "n1", args: ["--zone", "c"] });
    for (const id of ids) await c.converged(id, ids);
    const client = new RingstoreClient(
      ids.map((id) => c.nodes.get(id)!.api),
      { connections: 8 },
    );
    try {
      const listing = (async () => {
        await sleep((seconds * 1000) / 3);
        let listed = 0;
        for await (const _ of client.keys({ pageSize: 500 })) listed++;
        process.stdout.write(`listed ${listed} keys\n`);
      })();
      await traffic(client, seconds * 1000, 5000);
      await listing;
      process.stdout.write("n3 SIGKILLed; writes go on\n");
      await c.kill("n3");
      await traffic(client, 6000, 5000);
    } finally {
      await client.close();
    }
    const b = await launchChromium(chromium);
    try {
      const page = await b.browser.newPage({ viewport: { width: 1400, height: 1000 } });
      await page.goto(c.url("n1", "/ui"));
      await page.waitForSelector('#members tr[data-member="n3"][data-state="down"]', { timeout: 20_000 });
      await page.waitForSelector('#chart-latency[data-points]:not([data-points="0"])', { timeout: 20_000 });
      await sleep(2500);
      await page.screenshot({ path: values.out, fullPage: true });
      process.stdout.write(`saved ${values.out}\n`);
    } finally {
      await b.close();
    }
  } finally {
    await c.shutdown();
  }
}

await main();

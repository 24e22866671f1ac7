/**
 * The dashboard in a real browser: Debian's Chromium driven by playwright-core against a cluster of
 * three real nodes (started through the CLI). The page loads with no console error, shows three
 * members, turns a SIGKILLed node's row to down within the failure detector's bound (plus the page's
 * refresh), and its latency chart has points. Skipped, saying so, where no Chromium is installed
 * (`.ci/run` installs it).
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { Page } from "playwright-core";
import { RingstoreClient } from "../../src/client/client.js";
import { http, TestCluster } from "../cluster/harness.js";
import { findChromium, launchChromium } from "../support/chromium.js";

const chromiumPath = findChromium();
const DOWN_AFTER_MS = 1000;

describe("the dashboard in Chromium", {
  timeout: 120_000,
  skip:
    chromiumPath === undefined
      ? "no Chromium at /usr/bin/chromium (or $CHROMIUM_PATH): apt-get install -y --no-install-recommends chromium"
      : false,
}, () => {
  const c = new TestCluster([
    "--gossip-interval",
    "100",
    "--down-after",
    String(DOWN_AFTER_MS),
    "--timeout",
    "1500",
  ]);
  const ids = ["a", "b", "c"];
  let browser: Awaited<ReturnType<typeof launchChromium>> | undefined;
  let page: Page;
  const errors: string[] = [];

  before(async () => {
    await c.start("a");
    await c.start("b", { join: "a" });
    await c.start("c", { join: "a" });
    for (const id of ids) await c.converged(id, ids);
    // Some traffic, so that the charts have something to show.
    const client = new RingstoreClient(
      ids.map((id) => c.nodes.get(id)!.api),
      { connections: 4 },
    );
    try {
      for (let i = 0; i < 200; i++) {
        await client.put(`k${i}`, `v${i}`);
        await client.get(`k${i}`);
      }
    } finally {
      await client.close();
    }
    browser = await launchChromium(chromiumPath!);
    page = await browser.browser.newPage({ viewport: { width: 1400, height: 1000 } });
    page.on("console", (m) => {
      if (m.type() === "error") errors.push(m.text());
    });
    page.on("pageerror", (e) => errors.push(String(e)));
    page.on("requestfailed", (r) => errors.push(`request failed: ${r.url()}`));
  });
  after(async () => {
    await browser?.close();
    await c.shutdown();
  });

  const stateOf = (id: string) => page.getAttribute(`#members tr[data-member="${id}"]`, "data-state");

  test("loads with no console error and shows three members up", async () => {
    await page.goto(c.url("a", "/ui"));
    for (const id of ids) await page.waitForSelector(`#members tr[data-member="${id}"]`, { timeout: 10_000 });
    assert.equal(await page.locator("#members tr[data-member]").count(), 3);
    for (const id of ids) assert.equal(await stateOf(id), "up", id);
    assert.equal(await page.getAttribute("#ring", "data-cells"), "1024");
    // The handoff row shows the throttle it is paced at (the default, 64 MiB/s).
    const handoffRow = await page.locator('#progress tr[data-work="handoff"]').textContent();
    assert.match(handoffRow ?? "", /throttle 64 MiB\/s/);
    assert.deepEqual(errors, []);
  });

  test("the latency chart has points", async () => {
    // The node samples every 2 s: a refresh or two after the traffic, the chart has it.
    await page.waitForSelector('#chart-latency[data-points]:not([data-points="0"])', { timeout: 10_000 });
    assert.ok(Number(await page.getAttribute("#chart-latency", "data-points")) > 0);
    assert.ok(Number(await page.getAttribute("#chart-rate", "data-points")) > 0);
  });

  test("a SIGKILLed node's row turns down within the failure detector's bound", async () => {
    const state = (await http(c.url("a", "/ui/state"))).json() as { sampleMs: number };
    const t0 = Date.now();
    await c.kill("c");
    // Down after DOWN_AFTER_MS without a heartbeat (gossip adds a round or two), seen by the page at
    // its next refresh (every sampleMs).
    const bound = DOWN_AFTER_MS + 1000 + 2 * state.sampleMs;
    await page.waitForSelector('#members tr[data-member="c"][data-state="down"]', { timeout: bound + 5000 });
    const took = Date.now() - t0;
    assert.ok(took <= bound, `c shown down after ${took} ms (bound ${bound} ms)`);
    assert.equal(await stateOf("a"), "up");
    assert.equal(await stateOf("b"), "up");
    // The change is in the recent events too.
    await page.waitForSelector('#events li:has-text("-> down")', { timeout: 5000 });
    assert.deepEqual(errors, []);
  });
});

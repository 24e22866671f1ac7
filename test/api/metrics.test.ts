/**
 * /metrics follows Prometheus's conventions: read by a Prometheus text-format parser
 * (parse-prometheus-text-format) and, where it is installed, by Prometheus's own `promtool check
 * metrics`: counters typed counter and named _total (the storage engine's counts too), no gauge named
 * _total, no HELP/TYPE without a sample, the process and event-loop defaults, per-member state gauges,
 * stored keys and tombstones, sibling counts and object sizes as histograms. On a registry of its own
 * and on a real node's scrape.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { after, before, describe, test } from "node:test";
import parsePrometheusTextFormat from "parse-prometheus-text-format";
import { MEMBER_STATES, NodeMetrics } from "../../src/api/metrics.js";
import { MemoryEngine } from "../../src/storage/memory-engine.js";
import { http, TestCluster } from "../cluster/harness.js";

interface Family {
  name: string;
  help: string;
  type: "COUNTER" | "GAUGE" | "HISTOGRAM" | "SUMMARY" | "UNTYPED";
  metrics: { labels?: Record<string, string>; value?: string; buckets?: Record<string, string> }[];
}

const parse = (text: string) => parsePrometheusTextFormat(text) as Family[];

const promtool = spawnSync("promtool", ["--version"]).status === 0;

/** `promtool check metrics` on a scrape: its complaints ([] when it has none). */
function promtoolComplaints(text: string): string[] {
  const r = spawnSync("promtool", ["check", "metrics"], { input: text, encoding: "utf8" });
  return `${r.stdout}${r.stderr}`.split("\n").filter((l) => l.trim() !== "");
}

/** The conventions every scrape must follow (what the parser can tell). */
function checkConventions(families: Family[], text: string): void {
  for (const f of families) {
    assert.ok(f.metrics.length > 0, `${f.name} has HELP/TYPE but no sample`);
    if (f.type === "COUNTER") assert.match(f.name, /_total$/, `counter ${f.name} is not named _total`);
    else assert.doesNotMatch(f.name, /_total$/, `${f.type.toLowerCase()} ${f.name} is named _total`);
  }
  // Every family the text declares is one the parser read (nothing it could not make sense of).
  const declared = [...text.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]);
  assert.deepEqual(declared.sort(), families.map((f) => f.name).sort());
}

function testMetrics(): NodeMetrics {
  const engine = new MemoryEngine();
  const m = new NodeMetrics(
    () => engine.stats(),
    { node: "t" },
    undefined,
    undefined,
    () => 10_000,
    true,
  );
  m.watchNode({
    members: () => [
      { id: "a", state: "up" },
      { id: "b", state: "down" },
    ],
    census: () => ({ live: 42, tombstones: 7, at: 4000 }),
  });
  return m;
}

describe("the metrics' conventions", () => {
  test("a fresh registry: parsed, typed, no family without samples", async () => {
    const text = await testMetrics().render();
    const families = parse(text);
    checkConventions(families, text);
    const byName = new Map(families.map((f) => [f.name, f]));
    // Labelled counters with no event yet are left out whole.
    assert.ok(!byName.has("ringstore_requests_total"));
    assert.ok(!byName.has("ringstore_hints_dropped_total"));
    assert.doesNotMatch(text, /# HELP ringstore_requests_total/);
    // The storage engine's counts are counters, read at scrape time.
    for (const n of ["flushes_total", "compactions_total", "disk_bytes_written_total", "write_stalls_total"])
      assert.equal(byName.get(`ringstore_storage_${n}`)?.type, "COUNTER", n);
    assert.equal(byName.get("ringstore_storage_write_amplification")?.type, "GAUGE");
    // prom-client's process and event-loop defaults.
    assert.equal(byName.get("process_cpu_seconds_total")?.type, "COUNTER");
    assert.ok(byName.has("nodejs_eventloop_lag_p99_seconds"));
    // One series per member and state, 1 for its own state.
    const states = byName.get("ringstore_member_state")!;
    assert.equal(states.type, "GAUGE");
    assert.equal(states.metrics.length, 2 * MEMBER_STATES.length);
    const on = states.metrics
      .filter((s) => s.value === "1")
      .map((s) => `${s.labels?.member}=${s.labels?.state}`);
    assert.deepEqual(on.sort(), ["a=up", "b=down"]);
    const keys = byName.get("ringstore_stored_keys")!;
    assert.deepEqual(keys.metrics.map((s) => [s.labels?.kind, s.value]).sort(), [
      ["live", "42"],
      ["tombstone", "7"],
    ]);
    assert.equal(byName.get("ringstore_stored_keys_census_age_seconds")?.metrics[0]?.value, "6");
  });

  test("after traffic: requests, sibling counts and object sizes as histograms", async () => {
    const m = testMetrics();
    m.observeRequest("get", 200, 0.002);
    m.observeRequest("put", 204, 0.004);
    m.siblings.observe(2);
    m.objectSize.observe({ op: "get" }, 300);
    m.objectSize.observe({ op: "put" }, 5000);
    m.hintsDropped.inc({ reason: "expired" });
    const text = await m.render();
    const families = parse(text);
    checkConventions(families, text);
    const byName = new Map(families.map((f) => [f.name, f]));
    assert.equal(byName.get("ringstore_requests_total")?.type, "COUNTER");
    assert.equal(byName.get("ringstore_request_duration_seconds")?.type, "HISTOGRAM");
    assert.equal(byName.get("ringstore_siblings")?.type, "HISTOGRAM");
    // (This parser folds a histogram's label sets into one when `le` is not the last label, as
    // prom-client writes it: the text is checked for both.)
    assert.equal(byName.get("ringstore_object_size_bytes")?.type, "HISTOGRAM");
    for (const op of ["get", "put"])
      assert.match(text, new RegExp(`^ringstore_object_size_bytes_count\\{[^}]*op="${op}"[^}]*\\} 1$`, "m"));
    assert.equal(byName.get("ringstore_hints_dropped_total")?.metrics.length, 1);
  });

  test("promtool check metrics finds nothing to say", {
    skip: promtool ? false : "promtool is not installed (apt-get install --no-install-recommends prometheus)",
  }, async () => {
    const m = testMetrics();
    m.observeRequest("get", 200, 0.002);
    m.objectSize.observe({ op: "get" }, 300);
    assert.deepEqual(promtoolComplaints(await m.render()), []);
  });

  test("promtool flags a gauge named _total (the check can fail)", {
    skip: promtool ? false : "promtool is not installed",
  }, () => {
    const bad = "# HELP x_total a count\n# TYPE x_total gauge\nx_total 1\n";
    assert.notDeepEqual(promtoolComplaints(bad), []);
  });
});

describe("a real node's scrape", { timeout: 60_000 }, () => {
  const c = new TestCluster();
  before(async () => {
    await c.start("a");
    for (let i = 0; i < 20; i++) await http(c.url("a", `/kv/k${i}?w=1`), { method: "PUT", body: "v" });
    await http(c.url("a", "/kv/k1?r=1"));
  });
  after(() => c.shutdown());

  test("follows the conventions, and promtool agrees", async () => {
    const r = await http(c.url("a", "/metrics"));
    assert.equal(r.status, 200);
    const families = parse(r.text);
    checkConventions(families, r.text);
    const byName = new Map(families.map((f) => [f.name, f]));
    for (const n of [
      "ringstore_member_state",
      "process_resident_memory_bytes",
      "ringstore_object_size_bytes",
    ])
      assert.ok(byName.has(n), n);
    const on = byName.get("ringstore_member_state")!.metrics.filter((s) => s.value === "1");
    assert.deepEqual(
      on.map((s) => [s.labels?.member, s.labels?.state, s.labels?.node]),
      [["a", "up", "a"]],
    );
    if (promtool) assert.deepEqual(promtoolComplaints(r.text), []);
  });
});

/**
 * The node's Prometheus metrics, in a registry of its own (several nodes can share a process in tests).
 *
 * Conventions (checked by `promtool check metrics` and a text-format parser in test/api/metrics.test.ts):
 * - a figure that only grows is a counter named `_total`, also when it is read at scrape time from a
 *   count kept elsewhere (the storage engine's statistics: `ScrapeCounter`); a gauge never ends in
 *   `_total`;
 * - a metric with no sample yet (a labelled counter before its first event) is left out of the scrape,
 *   HELP and TYPE included;
 * - prom-client's default process and event-loop metrics (`process_*`, `nodejs_*`) when asked
 *   (`processMetrics`: a node does; tests that make many registries do not), but for three sums it
 *   names _total though they are gauges;
 * - per member of this node's view, `ringstore_member_state{member, state}` is 1 for its state and 0 for
 *   the others (a state set); the keys and tombstones this node stores, from its last census (a paced
 *   scan); sibling counts and object sizes per read and write as histograms.
 */
import {
  Counter,
  collectDefaultMetrics,
  Gauge,
  Histogram,
  type Metric,
  type MetricObjectWithValues,
  type MetricValue,
  Registry,
} from "prom-client";
import type { EngineStats } from "../storage/engine.js";
import { RequestHistory } from "./request-history.js";

/** The states `ringstore_member_state` has a series for (StatusMember.state's values). */
export const MEMBER_STATES = ["joining", "up", "suspect", "down", "leaving", "left"] as const;

/** What the node tells the metrics at scrape time, once it runs (NodeMetrics.watchNode). */
export interface NodeSources {
  /** Every member of this node's view and its state as /status shows it. */
  readonly members: () => readonly { readonly id: string; readonly state: string }[];
  /** The last census of this node's stored keys, or null before the first one ended. */
  readonly census: () => {
    readonly live: number;
    readonly tombstones: number;
    readonly at: number;
  } | null;
}

/**
 * A counter whose value is read at scrape time from a count kept elsewhere (it must only grow while the
 * process lives): typed `counter`, as promtool and Prometheus's rate() expect.
 */
class ScrapeCounter {
  readonly type = "counter";
  readonly aggregator = "sum";
  constructor(
    readonly name: string,
    readonly help: string,
    private readonly read: () => number,
  ) {}

  get(): Pick<MetricObjectWithValues<MetricValue<string>>, "name" | "help" | "aggregator" | "values"> & {
    type: string;
  } {
    return {
      name: this.name,
      help: this.help,
      type: "counter",
      aggregator: "sum",
      values: [{ value: this.read(), labels: {} }],
    };
  }
}

/** Why the API turned a connection or a request away (http-server.ts). */
export type ApiRefusal =
  | "connections"
  | "in_flight"
  | "headers_timeout"
  | "body_timeout"
  | "tls_handshake"
  | "unauthorized"
  | "forbidden";

/** What the metrics read of the peer transport (tcp-transport.ts's counters). */
export interface PeerCounters {
  readonly refused: Readonly<Record<string, number>>;
  readonly protocolErrors: number;
  readonly slowReaders: number;
  readonly expired: number;
}

export class NodeMetrics {
  readonly registry = new Registry();
  /** The last minutes of request rates and latencies, per operation (the dashboard's charts). */
  readonly history = new RequestHistory();
  readonly requests: Counter<"op" | "status">;
  readonly latency: Histogram<"op" | "status">;
  readonly siblings: Histogram;
  readonly objectSize: Histogram<"op">;
  readonly replicaTimeouts: Counter;
  /**
   * Requests the API answered 503 by itself at their deadline (the replication layer had not answered),
   * by when: `ready` (the timeout had passed when the request was ready, its body read) or `late`.
   */
  readonly deadlineAnswers: Counter<"when">;
  readonly readRepairs: Counter;
  readonly replicaRequestTimeouts: Counter<"op">;
  readonly hintsStored: Counter;
  readonly hintsDelivered: Counter;
  readonly hintsDeliveredBytes: Counter;
  readonly hintsDropped: Counter<"reason">;
  readonly antiEntropyKeysRepaired: Counter;
  readonly antiEntropyExchanges: Counter<"outcome">;
  readonly antiEntropyDifferingSegments: Counter;
  readonly antiEntropyRebuilds: Counter<"outcome">;
  readonly apiRefused: Counter<"reason">;
  readonly tombstonesPurged: Counter;
  readonly tombstonesRefused: Counter<"reason">;
  /** The peer transport's counters (set by the node), read at scrape time. */
  private peer: () => PeerCounters | undefined = () => undefined;
  /** The API's open connections and requests in flight (set by its server), read at scrape time. */
  private apiLoad: () => { readonly connections: number; readonly inFlight: number } = () => ({
    connections: 0,
    inFlight: 0,
  });

  constructor(
    storageStats: () => EngineStats,
    labels: Record<string, string>,
    /** The hints this node holds, by target (read at scrape time). */
    hintBacklog: () => ReadonlyMap<string, { readonly count: number; readonly bytes: number }> = () =>
      new Map(),
    /** When anti-entropy last swept every co-replica (null: not yet), and the clock it is read by. */
    lastFullSweepAt: () => number | null = () => null,
    now: () => number = () => 0,
    /** Add prom-client's default process and event-loop metrics. */
    processMetrics = false,
    /** Keys whose set is only tombstones, at the last tombstone sweep (null: none yet). */
    tombstonesHeld: () => number | null = () => null,
  ) {
    const r = this.registry;
    r.setDefaultLabels(labels);
    if (processMetrics) {
      collectDefaultMetrics({ register: r });
      // prom-client's sums of its own nodejs_active_{handles,requests,resources} (by type) are gauges
      // named _total, against the convention: the series by type stay, their sums go.
      for (const n of ["handles", "requests", "resources"]) r.removeSingleMetric(`nodejs_active_${n}_total`);
    }
    this.requests = new Counter({
      name: "ringstore_requests_total",
      help: "Client requests by operation and HTTP status",
      labelNames: ["op", "status"],
      registers: [r],
    });
    this.latency = new Histogram({
      name: "ringstore_request_duration_seconds",
      help: "Client request latency by operation and HTTP status",
      labelNames: ["op", "status"],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers: [r],
    });
    this.siblings = new Histogram({
      name: "ringstore_siblings",
      help: "Siblings per key seen by reads and left by writes",
      buckets: [1, 2, 3, 4, 8, 16, 32, 64],
      registers: [r],
    });
    this.objectSize = new Histogram({
      name: "ringstore_object_size_bytes",
      help: "Bytes of the values of a key seen by reads (every sibling) and written by writes",
      labelNames: ["op"],
      buckets: [64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304],
      registers: [r],
    });
    this.replicaTimeouts = new Counter({
      name: "ringstore_replica_timeouts_total",
      help: "Requests that did not get their quorum in time",
      registers: [r],
    });
    this.deadlineAnswers = new Counter({
      name: "ringstore_api_deadline_answers_total",
      help: "Requests the API answered 503 itself at their deadline: the timeout had passed when the request was ready (ready), or the replication layer had not answered by then (late)",
      labelNames: ["when"],
      registers: [r],
    });
    this.replicaRequestTimeouts = new Counter({
      name: "ringstore_replica_request_timeouts_total",
      help: "Requests to another replica (read, store) that timed out",
      labelNames: ["op"],
      registers: [r],
    });
    this.readRepairs = new Counter({
      name: "ringstore_read_repairs_total",
      help: "Replicas repaired after reads",
      registers: [r],
    });
    this.hintsStored = new Counter({
      name: "ringstore_hints_stored_total",
      help: "Hints stored by this node for a replica that was down or did not answer",
      registers: [r],
    });
    this.hintsDelivered = new Counter({
      name: "ringstore_hints_delivered_total",
      help: "Hints delivered to their target and deleted here",
      registers: [r],
    });
    this.hintsDeliveredBytes = new Counter({
      name: "ringstore_hints_delivered_bytes_total",
      help: "Bytes of hints delivered (its rate is the delivery rate)",
      registers: [r],
    });
    this.hintsDropped = new Counter({
      name: "ringstore_hints_dropped_total",
      help: "Hints not kept or not delivered, by reason (full, expired, removed, overloaded, failed), left to anti-entropy",
      labelNames: ["reason"],
      registers: [r],
    });
    new Gauge({
      name: "ringstore_hints_backlog",
      help: "Hints held for delivery, by target node",
      labelNames: ["target"],
      registers: [r],
      collect() {
        this.reset();
        for (const [target, b] of hintBacklog()) this.set({ target }, b.count);
      },
    });
    new Gauge({
      name: "ringstore_hints_backlog_bytes",
      help: "Bytes of hints held for delivery, by target node",
      labelNames: ["target"],
      registers: [r],
      collect() {
        this.reset();
        for (const [target, b] of hintBacklog()) this.set({ target }, b.bytes);
      },
    });
    this.antiEntropyKeysRepaired = new Counter({
      name: "ringstore_antientropy_keys_repaired_total",
      help: "Key copies repaired by anti-entropy (here or at the peer)",
      registers: [r],
    });
    this.antiEntropyExchanges = new Counter({
      name: "ringstore_antientropy_exchanges_total",
      help: "Anti-entropy exchanges this node started, by outcome (in_sync, differences, no_differences, failed)",
      labelNames: ["outcome"],
      registers: [r],
    });
    this.antiEntropyDifferingSegments = new Counter({
      name: "ringstore_antientropy_differing_segments_total",
      help: "Tree segments found differing at both looks of an exchange",
      registers: [r],
    });
    this.antiEntropyRebuilds = new Counter({
      name: "ringstore_antientropy_tree_rebuilds_total",
      help: "Rebuilds of the anti-entropy trees from the data, by outcome (done, abandoned)",
      labelNames: ["outcome"],
      registers: [r],
    });
    new Gauge({
      name: "ringstore_antientropy_seconds_since_full_sweep",
      help: "Seconds since every co-replica was last exchanged with in full (-1: not yet)",
      registers: [r],
      collect() {
        const at = lastFullSweepAt();
        this.set(at === null ? -1 : Math.max(0, (now() - at) / 1000));
      },
    });
    new Gauge({
      name: "ringstore_tombstones_held",
      help: "Keys whose set is only tombstones, counted by the last complete sweep (-1: none yet)",
      registers: [r],
      collect() {
        this.set(tombstonesHeld() ?? -1);
      },
    });
    this.tombstonesPurged = new Counter({
      name: "ringstore_tombstones_purged_total",
      help: "Keys whose tombstones this node deleted, every primary replica having agreed",
      registers: [r],
    });
    this.tombstonesRefused = new Counter({
      name: "ringstore_tombstones_purge_refused_total",
      help: "Keys this node owns whose tombstones, past the grace period, were kept at a sweep, by reason (differs, young, hint_pending, handoff_pending, ring_differs, off, busy, replica_down, unreachable, changed)",
      labelNames: ["reason"],
      registers: [r],
    });
    this.apiRefused = new Counter({
      name: "ringstore_api_refused_total",
      help: "Client connections and requests the API turned away, by reason (connections, in_flight, headers_timeout, body_timeout, tls_handshake, unauthorized, forbidden)",
      labelNames: ["reason"],
      registers: [r],
    });
    const peer = () => this.peer();
    new Counter({
      name: "ringstore_peer_refused_total",
      help: "Peer connections refused before their peer was authenticated, by reason (tls_handshake: no cluster key, another one, or not TLS; handshake_timeout; address_limit; pending_limit; connection_limit; key_removed: made with a key no longer accepted)",
      labelNames: ["reason"],
      registers: [r],
      collect() {
        this.reset();
        for (const [reason, n] of Object.entries(peer()?.refused ?? {})) this.inc({ reason }, n);
      },
    });
    new Counter({
      name: "ringstore_peer_protocol_errors_total",
      help: "Peer connections closed for a malformed or unexpected frame",
      registers: [r],
      collect() {
        this.reset();
        this.inc(peer()?.protocolErrors ?? 0);
      },
    });
    new Counter({
      name: "ringstore_peer_slow_readers_total",
      help: "Peer connections dropped because their peer left its answers unread past the byte bound",
      registers: [r],
      collect() {
        this.reset();
        this.inc(peer()?.slowReaders ?? 0);
      },
    });
    new Counter({
      name: "ringstore_peer_requests_expired_total",
      help: "Peer requests not run because their deadline had passed before they would start",
      registers: [r],
      collect() {
        this.reset();
        this.inc(peer()?.expired ?? 0);
      },
    });
    const load = () => this.apiLoad();
    new Gauge({
      name: "ringstore_api_connections",
      help: "Client connections open on the API",
      registers: [r],
      collect() {
        this.set(load().connections);
      },
    });
    new Gauge({
      name: "ringstore_api_requests_in_flight",
      help: "Client requests being served (not /health)",
      registers: [r],
      collect() {
        this.set(load().inFlight);
      },
    });
    const storageGauge = (name: string, help: string, pick: (s: EngineStats) => number) =>
      new Gauge({
        name: `ringstore_storage_${name}`,
        help,
        registers: [r],
        collect() {
          this.set(pick(storageStats()));
        },
      });
    const storageCounter = (name: string, help: string, pick: (s: EngineStats) => number) =>
      r.registerMetric(
        new ScrapeCounter(`ringstore_storage_${name}`, help, () => pick(storageStats())) as unknown as Metric,
      );
    storageCounter("flushes_total", "Memtable flushes since start", (s) => s.flushes);
    storageCounter("compactions_total", "Compactions since start", (s) => s.compactions);
    storageCounter(
      "manual_compactions_total",
      "Full compactions asked for (POST /storage/compact) since start",
      (s) => s.manualCompactions,
    );
    storageGauge(
      "write_amplification",
      "Bytes written to disk per byte written by users",
      (s) => s.writeAmplification,
    );
    storageCounter("user_bytes_written_total", "Bytes of keys and values written", (s) => s.userBytesWritten);
    storageCounter(
      "disk_bytes_written_total",
      "Bytes written to disk (WAL, tables, manifest)",
      (s) => s.diskBytesWritten,
    );
    storageGauge("sorted_runs", "Sorted runs (levels) on disk", (s) => s.levels.length);
    storageGauge("memtable_bytes", "Bytes in the active memtable", (s) => s.memtableBytes);
    storageCounter("block_cache_hits_total", "Block cache hits", (s) => s.blockCacheHits);
    storageCounter("block_cache_misses_total", "Block cache misses", (s) => s.blockCacheMisses);
    storageCounter(
      "bloom_false_positives_total",
      "Bloom filter false positives",
      (s) => s.bloomFalsePositives,
    );
    storageCounter("write_stalls_total", "Writes that waited for flush or compaction", (s) => s.writeStalls);
    const sources = () => this.sources;
    new Gauge({
      name: "ringstore_member_state",
      help: "Each member of this node's view: 1 for its state (joining, up, suspect, down, leaving, left), 0 for the others",
      labelNames: ["member", "state"],
      registers: [r],
      collect() {
        this.reset();
        for (const m of sources()?.members() ?? [])
          for (const state of MEMBER_STATES) this.set({ member: m.id, state }, m.state === state ? 1 : 0);
      },
    });
    new Gauge({
      name: "ringstore_stored_keys",
      help: "Keys this node stores, by kind: live (a live sibling) or tombstone (deleted siblings only), as its last census counted them",
      labelNames: ["kind"],
      registers: [r],
      collect() {
        this.reset();
        const c = sources()?.census();
        if (c === null || c === undefined) return;
        this.set({ kind: "live" }, c.live);
        this.set({ kind: "tombstone" }, c.tombstones);
      },
    });
    new Gauge({
      name: "ringstore_stored_keys_census_age_seconds",
      help: "Seconds since this node's last census of its stored keys ended",
      registers: [r],
      collect() {
        this.reset();
        const c = sources()?.census();
        if (c !== null && c !== undefined) this.set(Math.max(0, (now() - c.at) / 1000));
      },
    });
  }

  /** What the running node tells the metrics (members, the key census), read at scrape time. */
  private sources: NodeSources | undefined;

  watchNode(sources: NodeSources): void {
    this.sources = sources;
  }

  observeRequest(op: string, status: number, seconds: number): void {
    const labels = { op, status: String(status) };
    this.requests.inc(labels);
    this.latency.observe(labels, seconds);
    this.history.observe(op, status, seconds);
  }

  refused(reason: ApiRefusal): void {
    this.apiRefused.inc({ reason });
  }

  /** The node says where the peer transport's counters are. */
  watchPeers(counters: () => PeerCounters): void {
    this.peer = counters;
  }

  /** The API's server says how loaded it is. */
  watchApi(load: () => { readonly connections: number; readonly inFlight: number }): void {
    this.apiLoad = load;
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** The scrape: every metric with at least one sample (one without any is left out whole). */
  async render(): Promise<string> {
    const text = await this.registry.metrics();
    const blocks = text
      .split("\n\n")
      .filter((b) => b.split("\n").some((l) => l !== "" && !l.startsWith("#")));
    return `${blocks.map((b) => b.trimEnd()).join("\n\n")}\n`;
  }
}

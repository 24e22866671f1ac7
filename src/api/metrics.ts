/**
 * The node's Prometheus metrics, in a registry of its own (several nodes can share a process in tests).
 * Storage engine figures are read at scrape time from the engine's statistics.
 */
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import type { EngineStats } from "../storage/engine.js";

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
  readonly requests: Counter<"op" | "status">;
  readonly latency: Histogram<"op" | "status">;
  readonly siblings: Histogram;
  readonly replicaTimeouts: Counter;
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
  ) {
    const r = this.registry;
    r.setDefaultLabels(labels);
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
    this.replicaTimeouts = new Counter({
      name: "ringstore_replica_timeouts_total",
      help: "Requests that did not get their quorum in time",
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
    storageGauge("flushes_total", "Memtable flushes since start", (s) => s.flushes);
    storageGauge("compactions_total", "Compactions since start", (s) => s.compactions);
    storageGauge(
      "write_amplification",
      "Bytes written to disk per byte written by users",
      (s) => s.writeAmplification,
    );
    storageGauge("user_bytes_written_total", "Bytes of keys and values written", (s) => s.userBytesWritten);
    storageGauge(
      "disk_bytes_written_total",
      "Bytes written to disk (WAL, tables, manifest)",
      (s) => s.diskBytesWritten,
    );
    storageGauge("sorted_runs", "Sorted runs (levels) on disk", (s) => s.levels.length);
    storageGauge("memtable_bytes", "Bytes in the active memtable", (s) => s.memtableBytes);
    storageGauge("block_cache_hits_total", "Block cache hits", (s) => s.blockCacheHits);
    storageGauge("block_cache_misses_total", "Block cache misses", (s) => s.blockCacheMisses);
    storageGauge("bloom_false_positives_total", "Bloom filter false positives", (s) => s.bloomFalsePositives);
    storageGauge("write_stalls_total", "Writes that waited for flush or compaction", (s) => s.writeStalls);
  }

  observeRequest(op: string, status: number, seconds: number): void {
    const labels = { op, status: String(status) };
    this.requests.inc(labels);
    this.latency.observe(labels, seconds);
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

  render(): Promise<string> {
    return this.registry.metrics();
  }
}

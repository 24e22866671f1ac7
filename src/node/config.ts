/**
 * The node's one validated configuration object. Every field has a unit in its name or a documented
 * meaning; `validateNodeConfig` turns user input into it or fails with a message naming the field.
 */
import { API_LIMIT_DEFAULTS, type ApiServerLimits } from "../api/limits.js";
import { type Durability, MIN_MEMORY_BUDGET_BYTES } from "../storage/lsm/options.js";

export interface HostPort {
  readonly host: string;
  readonly port: number;
}

export interface NodeConfig {
  readonly id: string;
  readonly api: HostPort;
  readonly peer: HostPort;
  readonly dataDir: string;
  readonly join: readonly HostPort[];
  /** Replication settings used only when this node creates a new cluster. */
  readonly n: number;
  readonly r: number;
  readonly w: number;
  readonly maxKeyBytes: number;
  readonly maxValueBytes: number;
  readonly maxSiblings: number;
  /** The handoff's throttle: bytes this node sends per second at most (`--handoff-rate`, MiB/s). */
  readonly handoffBytesPerSecond: number;
  readonly requestTimeoutMs: number;
  readonly maxRequestTimeoutMs: number;
  readonly durability: Durability;
  /**
   * The storage engine's memory budget in bytes (LsmOptions.memoryBudgetBytes: memtables, block cache
   * and write queue); 0 keeps the engine's default sizes.
   */
  readonly memoryBudgetBytes: number;
  /** Relative capacity: the node's share of partitions follows it. */
  readonly weight: number;
  readonly zone: string | undefined;
  /** Q, used only when this node creates a new cluster. */
  readonly partitions: number;
  readonly gossipIntervalMs: number;
  /** A member whose heartbeat has not moved for this long is down. */
  readonly downAfterMs: number;
  /** Anti-entropy on (the default) or off. */
  readonly antiEntropy: boolean;
  /** Anti-entropy: every co-replica is exchanged with once per this interval. */
  readonly antiEntropyIntervalMs: number;
  /** Anti-entropy: keys repaired per second at most. */
  readonly antiEntropyKeysPerSec: number;
  /** Sloppy quorum and hinted handoff on (the default), or strict quorums over a key's replicas alone. */
  readonly hintedHandoff: boolean;
  /** Hinted handoff: hints older than this are dropped (left to anti-entropy). */
  readonly hintWindowMs: number;
  /** Hinted handoff: bytes of hints kept for one target at most. */
  readonly hintMaxBytes: number;
  /** Hinted handoff: bytes of hints delivered per second at most. */
  readonly hintRateBytesPerSec: number;
  /** Tombstones are purged once every replica agrees (on, the default), or only counted. */
  readonly tombstonePurge: boolean;
  /**
   * Tombstones are kept at least this long after their delete, and a node away longer is refused at its
   * start (replication/tombstones.ts, node/start-plan.ts). Above the hint window.
   */
  readonly tombstoneGraceMs: number;
  /** Start even if away longer than the grace period (keeping the data). */
  readonly forceRejoin: boolean;
  /** The API serves https only, with this certificate and key (PEM files); undefined: plain http. */
  readonly apiTls: { readonly certFile: string; readonly keyFile: string } | undefined;
  /** The API requires bearer tokens from this file (`ringstore auth add-token`); undefined: open. */
  readonly apiAuthFile: string | undefined;
  /** The API's bounds on its clients (api/limits.ts: defaults and why). */
  readonly apiLimits: ApiServerLimits;
  /**
   * The cluster key file (--cluster-key-file, or RINGSTORE_CLUSTER_KEY_FILE); undefined: the one in the
   * data directory (`cluster.key`), written there by a node that creates a cluster.
   */
  readonly clusterKeyFile: string | undefined;
  /**
   * Peer traffic in TLS with the cluster key (true, always but for measurements), or in the clear and
   * unauthenticated (--insecure-peer-plaintext: anyone who reaches the peer port can read and write
   * every key).
   */
  readonly peerEncryption: boolean;
}

export const NODE_DEFAULTS = {
  weight: 1,
  partitions: 1024,
  gossipIntervalMs: 500,
  downAfterMs: 5000,
  n: 3,
  r: 2,
  w: 2,
  maxKeyBytes: 1024,
  maxValueBytes: 1024 * 1024,
  maxSiblings: 64,
  handoffRateMiB: 64,
  requestTimeoutMs: 5000,
  maxRequestTimeoutMs: 60_000,
  antiEntropyIntervalMs: 30_000,
  antiEntropyKeysPerSec: 2000,
  hintWindowMs: 3 * 60 * 60 * 1000,
  hintMaxBytes: 256 * 1024 * 1024,
  hintRateBytesPerSec: 16 * 1024 * 1024,
  tombstoneGraceMs: 24 * 60 * 60 * 1000,
  durability: "fsync" as Durability,
  memoryBudgetBytes: 0,
  apiMaxConnections: API_LIMIT_DEFAULTS.maxConnections,
  apiMaxInFlight: API_LIMIT_DEFAULTS.maxInFlight,
  apiHeadersTimeoutMs: API_LIMIT_DEFAULTS.headersTimeoutMs,
  apiBodyTimeoutMs: API_LIMIT_DEFAULTS.bodyTimeoutMs,
};

export class ConfigError extends Error {
  readonly code = "ERR_CONFIG";
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

/** The start is refused because this node left its cluster (or was removed): its directory is out of use. */
export class NodeLeftError extends ConfigError {
  constructor(message: string) {
    super(message);
    this.name = "NodeLeftError";
  }
}

/** Parses HOST:PORT (IPv6 as [::1]:PORT). Port 0 asks the OS for a free port. */
export function parseHostPort(v: string, what: string): HostPort {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([A-Za-z0-9.-]+)):([0-9]{1,5})$/.exec(v.trim());
  if (m === null) throw new ConfigError(`${what} must be HOST:PORT, got "${v}"`);
  const port = Number(m[3]);
  if (port > 65535) throw new ConfigError(`${what} port must be 0..65535, got ${port}`);
  return { host: (m[1] ?? m[2])!, port };
}

export function formatHostPort(h: HostPort): string {
  return h.host.includes(":") ? `[${h.host}]:${h.port}` : `${h.host}:${h.port}`;
}

const ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

function memoryBudget(v: unknown): number {
  const n = int(v, "--memory-budget", 0, 2 ** 50);
  if (n !== 0 && n < MIN_MEMORY_BUDGET_BYTES)
    throw new ConfigError(
      `--memory-budget must be 0 (the engine's defaults) or at least ${MIN_MEMORY_BUDGET_BYTES}, got ${n}`,
    );
  return n;
}

function int(v: unknown, what: string, min: number, max: number): number {
  const n = typeof v === "string" && /^[0-9]+$/.test(v) ? Number(v) : v;
  if (typeof n !== "number" || !Number.isSafeInteger(n) || n < min || n > max)
    throw new ConfigError(`${what} must be an integer ${min}..${max}, got ${JSON.stringify(v)}`);
  return n;
}

export interface NodeConfigInput {
  id: string;
  api: string;
  peer: string;
  data: string;
  join?: string | undefined;
  n?: string | number | undefined;
  r?: string | number | undefined;
  w?: string | number | undefined;
  maxKeyBytes?: string | number | undefined;
  maxValueBytes?: string | number | undefined;
  maxSiblings?: string | number | undefined;
  handoffRate?: string | number | undefined;
  timeoutMs?: string | number | undefined;
  durability?: string | undefined;
  memoryBudget?: string | number | undefined;
  weight?: string | number | undefined;
  zone?: string | undefined;
  partitions?: string | number | undefined;
  gossipIntervalMs?: string | number | undefined;
  downAfterMs?: string | number | undefined;
  antiEntropy?: string | boolean | undefined;
  antiEntropyIntervalMs?: string | number | undefined;
  antiEntropyRate?: string | number | undefined;
  hintedHandoff?: string | boolean | undefined;
  hintWindowMs?: string | number | undefined;
  hintMaxBytes?: string | number | undefined;
  hintRate?: string | number | undefined;
  tombstonePurge?: string | boolean | undefined;
  tombstoneGraceMs?: string | number | undefined;
  forceRejoin?: boolean | undefined;
  tlsCert?: string | undefined;
  tlsKey?: string | undefined;
  authFile?: string | undefined;
  apiMaxConnections?: string | number | undefined;
  apiMaxInFlight?: string | number | undefined;
  apiHeadersTimeoutMs?: string | number | undefined;
  apiBodyTimeoutMs?: string | number | undefined;
  clusterKeyFile?: string | undefined;
  insecurePeerPlaintext?: boolean | undefined;
}

export function validateNodeConfig(input: NodeConfigInput): NodeConfig {
  if (!ID.test(input.id))
    throw new ConfigError(`--id must be 1-64 characters of letters, digits, _ . -, got "${input.id}"`);
  if (!input.data) throw new ConfigError("--data is required");
  const n = int(input.n ?? NODE_DEFAULTS.n, "--n", 1, 16);
  const r = int(input.r ?? Math.min(NODE_DEFAULTS.r, n), "--r", 1, n);
  const w = int(input.w ?? Math.min(NODE_DEFAULTS.w, n), "--w", 1, n);
  const durability = input.durability ?? NODE_DEFAULTS.durability;
  if (!["fsync", "interval", "none"].includes(durability))
    throw new ConfigError(`--durability must be fsync, interval or none, got "${durability}"`);
  const hintWindowMs = int(
    input.hintWindowMs ?? NODE_DEFAULTS.hintWindowMs,
    "--hint-window",
    1000,
    7 * 24 * 3600_000,
  );
  const tombstoneGraceMs = int(
    input.tombstoneGraceMs ?? NODE_DEFAULTS.tombstoneGraceMs,
    "--tombstone-grace",
    1000,
    365 * 24 * 3600_000,
  );
  const hintedHandoff = onOff(input.hintedHandoff ?? true, "--hinted-handoff");
  // A hint of a version older than a delete must never be delivered after the delete's tombstone was
  // purged: hints are dropped past the window, so the window must end before the grace period does.
  if (hintedHandoff && hintWindowMs >= tombstoneGraceMs)
    throw new ConfigError(
      `--hint-window (${hintWindowMs} ms) must be shorter than --tombstone-grace (${tombstoneGraceMs} ms): a hint delivered after a tombstone was purged would bring a deleted key back`,
    );
  const join =
    input.join === undefined || input.join === ""
      ? []
      : input.join.split(",").map((s, i) => parseHostPort(s, `--join address ${i + 1}`));
  return {
    id: input.id,
    api: parseHostPort(input.api, "--api"),
    peer: parseHostPort(input.peer, "--peer"),
    dataDir: input.data,
    join,
    n,
    r,
    w,
    maxKeyBytes: int(input.maxKeyBytes ?? NODE_DEFAULTS.maxKeyBytes, "--max-key-bytes", 1, 65000),
    maxValueBytes: int(
      input.maxValueBytes ?? NODE_DEFAULTS.maxValueBytes,
      "--max-value-bytes",
      0,
      64 * 1024 * 1024,
    ),
    maxSiblings: int(input.maxSiblings ?? NODE_DEFAULTS.maxSiblings, "--max-siblings", 1, 10_000),
    handoffBytesPerSecond:
      int(input.handoffRate ?? NODE_DEFAULTS.handoffRateMiB, "--handoff-rate", 1, 1 << 20) * (1 << 20),
    requestTimeoutMs: int(
      input.timeoutMs ?? NODE_DEFAULTS.requestTimeoutMs,
      "--timeout",
      1,
      NODE_DEFAULTS.maxRequestTimeoutMs,
    ),
    maxRequestTimeoutMs: NODE_DEFAULTS.maxRequestTimeoutMs,
    durability: durability as Durability,
    memoryBudgetBytes: memoryBudget(input.memoryBudget ?? NODE_DEFAULTS.memoryBudgetBytes),
    weight: int(input.weight ?? NODE_DEFAULTS.weight, "--weight", 1, 1000),
    zone: input.zone === undefined || input.zone === "" ? undefined : zone(input.zone),
    partitions: partitionCount(input.partitions ?? NODE_DEFAULTS.partitions),
    gossipIntervalMs: int(
      input.gossipIntervalMs ?? NODE_DEFAULTS.gossipIntervalMs,
      "--gossip-interval",
      10,
      60_000,
    ),
    downAfterMs: int(input.downAfterMs ?? NODE_DEFAULTS.downAfterMs, "--down-after", 100, 600_000),
    antiEntropy: onOff(input.antiEntropy ?? true, "--anti-entropy"),
    antiEntropyIntervalMs: int(
      input.antiEntropyIntervalMs ?? NODE_DEFAULTS.antiEntropyIntervalMs,
      "--anti-entropy-interval",
      100,
      24 * 3600_000,
    ),
    antiEntropyKeysPerSec: int(
      input.antiEntropyRate ?? NODE_DEFAULTS.antiEntropyKeysPerSec,
      "--anti-entropy-rate",
      1,
      1_000_000,
    ),
    hintedHandoff,
    hintWindowMs,
    hintMaxBytes: int(input.hintMaxBytes ?? NODE_DEFAULTS.hintMaxBytes, "--hint-max-bytes", 0, 2 ** 50),
    hintRateBytesPerSec: int(
      input.hintRate ?? NODE_DEFAULTS.hintRateBytesPerSec,
      "--hint-rate",
      1024,
      2 ** 40,
    ),
    tombstonePurge: onOff(input.tombstonePurge ?? true, "--tombstone-purge"),
    tombstoneGraceMs,
    forceRejoin: input.forceRejoin === true,
    apiTls: apiTls(input.tlsCert, input.tlsKey),
    apiAuthFile: input.authFile === undefined || input.authFile === "" ? undefined : input.authFile,
    apiLimits: apiLimits(input),
    clusterKeyFile:
      input.clusterKeyFile === undefined || input.clusterKeyFile === "" ? undefined : input.clusterKeyFile,
    peerEncryption: input.insecurePeerPlaintext !== true,
  };
}

function apiTls(cert: string | undefined, key: string | undefined): NodeConfig["apiTls"] {
  const c = cert === "" ? undefined : cert;
  const k = key === "" ? undefined : key;
  if (c === undefined && k === undefined) return undefined;
  if (c === undefined || k === undefined)
    throw new ConfigError(
      "--tls-cert and --tls-key go together: give both (PEM files) for https, or neither",
    );
  return { certFile: c, keyFile: k };
}

function apiLimits(input: NodeConfigInput): ApiServerLimits {
  const headersTimeoutMs = int(
    input.apiHeadersTimeoutMs ?? NODE_DEFAULTS.apiHeadersTimeoutMs,
    "--api-headers-timeout",
    100,
    600_000,
  );
  const bodyTimeoutMs = int(
    input.apiBodyTimeoutMs ?? NODE_DEFAULTS.apiBodyTimeoutMs,
    "--api-body-timeout",
    100,
    3_600_000,
  );
  // Node's server refuses a whole-request deadline shorter than the headers' one.
  if (bodyTimeoutMs < headersTimeoutMs)
    throw new ConfigError(
      `--api-body-timeout (${bodyTimeoutMs} ms, for headers and body) must be at least --api-headers-timeout (${headersTimeoutMs} ms)`,
    );
  return {
    maxConnections: int(
      input.apiMaxConnections ?? NODE_DEFAULTS.apiMaxConnections,
      "--api-max-connections",
      1,
      1_000_000,
    ),
    maxInFlight: int(
      input.apiMaxInFlight ?? NODE_DEFAULTS.apiMaxInFlight,
      "--api-max-in-flight",
      1,
      1_000_000,
    ),
    headersTimeoutMs,
    bodyTimeoutMs,
  };
}

function onOff(v: string | boolean, what: string): boolean {
  if (v === true || v === "on") return true;
  if (v === false || v === "off") return false;
  throw new ConfigError(`${what} must be on or off, got ${JSON.stringify(v)}`);
}

function zone(v: string): string {
  if (!ID.test(v))
    throw new ConfigError(`--zone must be 1-64 characters of letters, digits, _ . -, got "${v}"`);
  return v;
}

function partitionCount(v: unknown): number {
  const q = int(v, "--partitions", 1, 1 << 20);
  if (!Number.isInteger(Math.log2(q))) throw new ConfigError(`--partitions must be a power of two, got ${q}`);
  return q;
}

/** `ringstore start`, and the key commands `get`, `put`, `delete` that talk to a node's API. */
import { readFileSync } from "node:fs";
import {
  BYTES_CONTENT_TYPE,
  type GetResult,
  RingstoreClient,
  RingstoreError,
  STRING_CONTENT_TYPE,
} from "../client/client.js";
import { onInvariantBroken } from "../core/assert.js";
import { ConfigError, formatHostPort, type NodeConfigInput, validateNodeConfig } from "../node/config.js";
import { startNode } from "../node/node.js";
import { createNodeLogger, isLogLevel, joinEndSentence, LOG_LEVELS } from "../node/node-log.js";
import { duration } from "../node/start-plan.js";
import { type ConnectionFlags, clientOptions, DEFAULT_NODE } from "./connection.js";
import { Progress } from "./progress.js";

export interface StartFlags
  extends Omit<
    NodeConfigInput,
    | "timeoutMs"
    | "gossipIntervalMs"
    | "downAfterMs"
    | "hintWindowMs"
    | "tombstoneGraceMs"
    | "antiEntropyIntervalMs"
    | "apiHeadersTimeoutMs"
    | "apiBodyTimeoutMs"
  > {
  hintWindow?: string;
  tombstoneGrace?: string;
  antiEntropyInterval?: string;
  timeout?: string;
  gossipInterval?: string;
  downAfter?: string;
  apiHeadersTimeout?: string;
  apiBodyTimeout?: string;
  logLevel?: string;
}

export async function startCommand(flags: StartFlags): Promise<void> {
  // A broken invariant stops the node at once: its state may be wrong, and nothing it would do next can
  // be trusted. The running marker stays, so the next start takes a new actor.
  const level = flags.logLevel ?? "info";
  if (!isLogLevel(level))
    throw new ConfigError(`--log-level must be one of ${LOG_LEVELS.join(", ")}, got "${level}"`);
  // On a terminal, a join's handoff is drawn as a bar below the log (the log's lines are written above
  // it, whole); elsewhere the log's own lines (event "join") are the progress (README, "A join's progress").
  const bar =
    process.stdout.isTTY === true ? new Progress({ stream: process.stdout, unit: "keys" }) : undefined;
  const log = createNodeLogger({
    id: flags.id ?? "",
    level,
    ...(bar === undefined ? {} : { stream: { write: (line: string) => bar.above(line) } }),
  });
  onInvariantBroken((err) => {
    log.fatal({ event: "stop", err: err.stack ?? err.message }, `stopping at once: ${err.message}`);
    process.exit(70);
  });
  const config = validateNodeConfig({
    ...flags,
    timeoutMs: flags.timeout,
    gossipIntervalMs: flags.gossipInterval,
    downAfterMs: flags.downAfter,
    hintWindowMs: flags.hintWindow,
    tombstoneGraceMs: flags.tombstoneGrace,
    antiEntropyIntervalMs: flags.antiEntropyInterval,
    apiHeadersTimeoutMs: flags.apiHeadersTimeout,
    apiBodyTimeoutMs: flags.apiBodyTimeout,
  });
  let stopFor: ((why: string) => void) | undefined;
  // The node may hear that it is out of the cluster before startNode returns: keep the reason till then.
  let outBeforeStart: string | undefined;
  const node = await startNode(config, {
    log,
    onJoinProgress: (p) => {
      if (bar === undefined) return;
      if (p.state === "waiting") bar.update("join: waiting for the ring to include this node:", 0, null);
      else if (p.state === "handing_off")
        bar.update(
          `join handoff (ring v${p.ringVersion}):`,
          p.keysScanned,
          p.keysTotal,
          `${p.keysSent} copies sent, ${p.keysReceived} received${p.storesFailed > 0 ? `, ${p.storesFailed} failed (retrying)` : ""}`,
        );
      else bar.finish(joinEndSentence(p));
    },
    explicit: { n: flags.n !== undefined, r: flags.r !== undefined, w: flags.w !== undefined },
    onLeft: (how) => {
      const why =
        how === "left"
          ? "left the cluster (its data is handed off)"
          : "removed from the cluster by an operator (cluster remove)";
      if (stopFor === undefined) outBeforeStart = why;
      else stopFor(why);
    },
  });
  const id = node.identity;
  if (node.forcedBackAfterMs !== undefined)
    log.warn(
      { event: "start", forcedBackAfterMs: node.forcedBackAfterMs },
      `started with --force-rejoin after ${duration(node.forcedBackAfterMs)} away, longer than the tombstone grace period; it keeps its data (under a new actor)`,
    );
  const scheme = config.apiTls === undefined ? "http" : "https";
  // Where the node serves is announced whatever --log-level: a user starting a node must learn its
  // addresses (and scripts wait for this line). It stays a log line of level info, so the output is JSON
  // lines still; at a level that keeps info it is the ordinary line.
  const announce = log.isLevelEnabled("info") ? log : log.child({}, { level: "info" });
  announce.info(
    {
      event: "start",
      api: `${scheme}://${formatHostPort(node.api)}`,
      peer: formatHostPort(node.peer),
      dataDir: config.dataDir,
      cluster: id.clusterId,
      newCluster: node.createdCluster,
      n: id.n,
      r: id.r,
      w: id.w,
    },
    `ringstore node ${node.id} serving the API on ${scheme}://${formatHostPort(node.api)} ` +
      `(peer ${formatHostPort(node.peer)}), data in ${config.dataDir}, ` +
      `${node.createdCluster ? "new cluster" : "cluster"} ${id.clusterId} with N=${id.n} R=${id.r} W=${id.w}`,
  );
  if (node.clusterKey === undefined)
    log.warn(
      { event: "security" },
      `--insecure-peer-plaintext: peer traffic on ${formatHostPort(node.peer)} is neither encrypted nor authenticated; anyone who reaches that port can read and overwrite every key, join the cluster, and remove its members. It exists to measure what peer encryption costs: never run a cluster this way.`,
    );
  else if (node.clusterKey.created)
    log.info(
      { event: "security", clusterKeyFile: node.clusterKey.path },
      `new cluster key in ${node.clusterKey.path} (mode 0600): every other node needs it, started with --cluster-key-file F (a copy of that file)`,
    );
  if (config.apiAuthFile !== undefined)
    log.info(
      { event: "security", authFile: config.apiAuthFile },
      `the API requires a token from ${config.apiAuthFile} on every request but GET /health (the file is re-read when it changes)`,
    );
  if (node.createdCluster && Math.max(id.r, id.w) > 1)
    log.info(
      { event: "start" },
      `note: a cluster of one node holds one replica of each key, so requests ` +
        `with the default R=${id.r} W=${id.w} get 503 until more nodes join (ringstore start ... --join ` +
        `${formatHostPort(node.peer)}); per request, r=1 and w=1 work now`,
    );
  let signals = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    signals++;
    if (signals > 1) {
      log.warn({ event: "stop", signal: sig }, `${sig} again, exiting without a clean stop`);
      process.exit(1);
    }
    stopFor?.(sig);
  };
  let stopping = false;
  stopFor = (why) => {
    if (stopping) return;
    stopping = true;
    bar?.finish(); // a join's bar, if drawn, stays where it was; the lines of the stop follow it
    log.info({ event: "stop", why }, `${why}, stopping (finishing requests, closing files)`);
    node.stop().then(
      () => {
        log.info({ event: "stop" }, "stopped cleanly");
        process.exit(0);
      },
      (err: unknown) => {
        log.error({ event: "stop", err: (err as Error).message }, `stop failed: ${(err as Error).message}`);
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
  if (outBeforeStart !== undefined) stopFor(outBeforeStart);
}

interface KeyFlags extends ConnectionFlags {
  r?: string;
  w?: string;
  timeout?: string;
  context?: string;
  json?: boolean;
}

function quorum(v: string | undefined): number | "one" | "quorum" | "all" | undefined {
  if (v === undefined) return undefined;
  if (v === "one" || v === "quorum" || v === "all") return v;
  if (!/^[0-9]+$/.test(v)) throw new ConfigError(`expected an integer, one, quorum or all, got "${v}"`);
  return Number(v);
}

function timeoutMs(v: string): number {
  if (!/^[0-9]+$/.test(v) || Number(v) < 1)
    throw new ConfigError(`--timeout must be a whole number of milliseconds >= 1, got "${v}"`);
  return Number(v);
}

function opts(f: KeyFlags) {
  return {
    ...(f.r !== undefined ? { r: quorum(f.r)! } : {}),
    ...(f.w !== undefined ? { w: quorum(f.w)! } : {}),
    ...(f.timeout !== undefined ? { timeoutMs: timeoutMs(f.timeout) } : {}),
  };
}

/** A word as a POSIX shell reads it back: as it is when it is safe, else in single quotes. */
export function shellQuote(w: string): string {
  return /^[A-Za-z0-9_.,:/@%+=-]+$/.test(w) ? w : `'${w.replace(/'/g, "'\\''")}'`;
}

/** The `ringstore` command line for `args`, with the --node given to this command when not the default. */
function rerun(args: string[], f: ConnectionFlags): string {
  const node = f.node !== DEFAULT_NODE ? ["--node", f.node] : [];
  return ["ringstore", ...args, ...node]
    .map((w, i) => (i === 0 || w === "VALUE" ? w : shellQuote(w)))
    .join(" ");
}

function printable(b: Buffer): boolean {
  return !b.includes(0) && Buffer.from(b.toString("utf8"), "utf8").equals(b);
}

async function withClient<T>(f: ConnectionFlags, fn: (c: RingstoreClient) => Promise<T>): Promise<T> {
  const node = f.node;
  const c = new RingstoreClient(node, { connections: 1, ...clientOptions(f) });
  try {
    return await fn(c);
  } catch (err) {
    if (err instanceof RingstoreError) {
      // status 0: no HTTP answer at all (the node could not be reached).
      const head = err.status === 0 ? `cannot reach ${node}` : `${err.status} ${err.code}`;
      process.stderr.write(`ringstore: ${head}: ${err.message}\n`);
      process.exitCode = 1;
      return undefined as T;
    }
    throw err;
  } finally {
    await c.close();
  }
}

export async function getCommand(key: string, f: KeyFlags): Promise<void> {
  await withClient(f, async (c) => {
    const res: GetResult = await c.get(key, opts(f));
    if (f.json) {
      const j =
        res.kind === "value"
          ? {
              status: 200,
              context: res.context,
              contentType: res.contentType,
              value: res.value.toString("base64"),
            }
          : res.kind === "siblings"
            ? {
                status: 300,
                context: res.context,
                siblings: res.siblings.map((s) => ({ ...s, value: s.value.toString("base64") })),
              }
            : { status: 404, context: res.context ?? null };
      process.stdout.write(`${JSON.stringify(j)}\n`);
      if (res.kind === "not_found") process.exitCode = 1;
      return;
    }
    if (res.kind === "value") {
      // A terminal gets the value and a newline, so that the prompt (or the context, on stderr) starts a
      // line of its own; a pipe or a file gets exactly the stored bytes.
      const tty = process.stdout.isTTY === true;
      process.stdout.write(tty ? Buffer.concat([res.value, Buffer.from("\n")]) : res.value);
      process.stderr.write(`${tty || process.stderr.isTTY !== true ? "" : "\n"}context: ${res.context}\n`);
    } else if (res.kind === "siblings") {
      process.stdout.write(`${res.siblings.length} concurrent versions (siblings):\n`);
      res.siblings.forEach((s, i) => {
        const shown = s.deleted
          ? "(deleted)"
          : printable(s.value)
            ? JSON.stringify(s.value.toString("utf8"))
            : `base64:${s.value.toString("base64")}`;
        process.stdout.write(`  [${i + 1}] ${shown}${s.deleted ? "" : `  (${s.contentType})`}\n`);
      });
      process.stdout.write(
        `context: ${res.context}\nResolve them and write back with: ${rerun(["put", key, "VALUE", "--context", res.context], f)}\n`,
      );
    } else {
      process.stderr.write(`not found${res.context ? ` (deleted; context: ${res.context})` : ""}\n`);
      process.exitCode = 1;
    }
  });
}

export async function putCommand(
  key: string,
  value: string | undefined,
  f: KeyFlags & { file?: string; contentType?: string },
): Promise<void> {
  if ((value === undefined) === (f.file === undefined))
    throw new ConfigError("give either VALUE or --file F");
  const body = f.file !== undefined ? readFileSync(f.file) : Buffer.from(value!, "utf8");
  await withClient(f, async (c) => {
    const ctx = await c.put(key, body, {
      ...opts(f),
      context: f.context,
      contentType: f.contentType ?? (f.file !== undefined ? BYTES_CONTENT_TYPE : STRING_CONTENT_TYPE),
    });
    if (ctx !== undefined) process.stdout.write(`ok, context: ${ctx}\n`);
  });
}

/**
 * Without --context, reads the key first and deletes exactly what it read (the client's delete: a delete
 * with no context would only add a tombstone beside the live versions). With --context, deletes what that
 * context covers. A key with nothing live is not an error: "not found: nothing to delete", exit 0.
 */
export async function deleteCommand(key: string, f: KeyFlags): Promise<void> {
  await withClient(f, async (c) => {
    const ctx = await c.delete(key, { ...opts(f), context: f.context });
    if (ctx === undefined) process.stderr.write("not found: nothing to delete\n");
    else process.stdout.write(`deleted, context: ${ctx}\n`);
  });
}

/**
 * The `ringstore` command line (the contract's forms: ../shared/spec/http-api.md), loaded by main.ts
 * once it has checked that this Node.js has what the node needs:
 * - nodes: `start` (one node in the foreground; a new cluster, or `--join` one), `dev` (a local cluster of
 *   N nodes on 127.0.0.1: what `npm start` runs);
 * - keys, through a node's HTTP API: `get`, `put`, `delete` (`--node HOST:PORT`);
 * - the cluster: `cluster status`, `cluster leave`, `cluster remove`, `cluster plan`, `cluster weight`;
 * - API tokens: `auth add-token`, `auth list`, `auth remove-token` (`--file F`, the node's --auth-file);
 * - the storage engine: `demo` (writes, reads, reopens, prints statistics), `storage stats --data DIR`
 *   (read-only), `storage compact --node HOST:PORT` or `--data DIR` (a full compaction).
 */
import { readFileSync } from "node:fs";
import * as path from "node:path";
import { Command, InvalidArgumentError, Option } from "commander";
import { addTokenCommand, listTokensCommand, removeTokenCommand } from "./auth-commands.js";
import { clusterLeaveCommand, clusterRemoveCommand, clusterStatusCommand } from "./cluster-commands.js";
import { applyConfigFile, checkRequired } from "./config-file.js";
import { type ConnectionFlags, connectionOptions } from "./connection.js";
import { runDemo } from "./demo.js";
import { devCommand } from "./dev.js";
import {
  keyAddCommand,
  keyDropCommand,
  keyGenerateCommand,
  keyShowCommand,
  keyUseCommand,
} from "./key-commands.js";
import { keysCommand } from "./keys-command.js";
import { deleteCommand, getCommand, putCommand, type StartFlags, startCommand } from "./node-commands.js";

import { clusterHandoffRateCommand, clusterPlanCommand, clusterWeightCommand } from "./plan-commands.js";
import { compactDataCommand, compactNodeCommand } from "./storage-compact.js";
import { printStorageStats } from "./storage-stats.js";

function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as {
    version: string;
  };
  return pkg.version;
}

function positiveInt(v: string): number {
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n <= 0)
    throw new InvalidArgumentError(`expected a positive integer, got "${v}"`);
  return n;
}

const program = new Command();
program
  .name("ringstore")
  .description("A leaderless, Dynamo-style distributed key-value store")
  .version(packageVersion());

program
  .command("demo")
  .description("write, read, reopen and print statistics of the storage engine, on data under --data")
  .option("--data <dir>", "data directory", "./data")
  .option("--keys <n>", "keys to write", positiveInt, 200_000)
  .action(async (opts: { data: string; keys: number }) => {
    await runDemo(path.join(opts.data, "demo"), opts.keys);
  });

program
  .command("start")
  .description("run one node in the foreground (a new cluster of one, or joining one with --join)")
  .option("--config <file>", "read flags from this TOML or JSON file (flags on the command line win)")
  // Required, from the command line or the config file (checked once the file is read).
  .option("--id <id>", "this node's id (letters, digits, _ . -); required")
  .option("--api <host:port>", "address of the client HTTP API; required")
  .option("--peer <host:port>", "address for node-to-node traffic; required")
  .option("--data <dir>", "data directory; required")
  .option("--join <host:port,...>", "peer address(es) of a member of the cluster to join")
  .option("--n <n>", "replicas per key (fixed when the cluster is created; default 3)")
  .option("--r <r>", "default read quorum (default 2)")
  .option("--w <w>", "default write quorum (default 2)")
  .option("--timeout <ms>", "default time the coordinator waits for replicas", "5000")
  .option("--durability <mode>", "fsync (default), interval or none", "fsync")
  .option(
    "--memory-budget <bytes>",
    "bound on the storage engine's memtables, block cache and write queue (0: the engine's defaults)",
    "0",
  )
  .option("--max-key-bytes <n>", "largest key accepted", "1024")
  .option("--max-value-bytes <n>", "largest value accepted", String(1024 * 1024))
  .option("--max-siblings <n>", "siblings a key may hold before writes are refused", "64")
  .option(
    "--handoff-rate <MiB/s>",
    "the handoff throttle: MiB this node sends per second at most when the ring changes (POST /cluster/handoff changes it at run time)",
    "64",
  )
  .option("--weight <w>", "relative capacity: the node's share of the ring follows it", "1")
  .option("--zone <zone>", "failure zone: a key's replicas go to distinct zones first")
  .option("--partitions <q>", "ring partitions, a power of two (fixed when the cluster is created)", "1024")
  .option("--gossip-interval <ms>", "time between gossip rounds", "500")
  .option("--down-after <ms>", "a member silent this long is down", "5000")
  .option("--anti-entropy <on|off>", "Merkle anti-entropy between replicas", "on")
  .option(
    "--anti-entropy-interval <ms>",
    "anti-entropy: each co-replica is exchanged with once per this",
    "30000",
  )
  .option("--anti-entropy-rate <keys/s>", "anti-entropy: keys repaired per second at most", "2000")
  .option("--hinted-handoff <on|off>", "sloppy quorum and hinted handoff (off: strict quorums)", "on")
  .option("--hint-window <ms>", "hinted handoff: hints older than this are dropped (default 3 h)", "10800000")
  .option(
    "--hint-max-bytes <n>",
    "hinted handoff: bytes of hints kept per unreachable node",
    String(256 * 1024 * 1024),
  )
  .option(
    "--hint-rate <bytes/s>",
    "hinted handoff: bytes of hints delivered per second at most",
    String(16 * 1024 * 1024),
  )
  .option("--tombstone-purge <on|off>", "purge deleted keys' tombstones once every replica agrees", "on")
  .option(
    "--tombstone-grace <ms>",
    "tombstones are kept at least this long (default 24 h; above --hint-window); a node away longer is refused",
    "86400000",
  )
  .option("--force-rejoin", "start a node away longer than --tombstone-grace with its data anyway")
  .option("--tls-cert <file>", "serve the API over https only, with this PEM certificate (and --tls-key)")
  .option("--tls-key <file>", "the PEM private key of --tls-cert (mode 0600)")
  .option(
    "--auth-file <file>",
    "require API tokens from this file (ringstore auth add-token); re-read on change",
  )
  .option("--api-max-connections <n>", "client connections open at once; more get 503", "1024")
  .option("--api-max-in-flight <n>", "client requests served at once; more get 503 overloaded", "256")
  .option("--api-headers-timeout <ms>", "a request's line and headers must arrive within this", "10000")
  .option("--api-body-timeout <ms>", "a request's headers and body must arrive within this", "30000")
  .option(
    "--log-level <level>",
    "log from this level up (JSON lines on stdout): trace, debug, info, warn, error, fatal or silent",
    "info",
  )
  .addOption(
    new Option(
      "--cluster-key-file <file>",
      "the cluster key peers authenticate and encrypt with (a joining node needs the cluster's; default: DATA/cluster.key, which a new cluster writes)",
    ).env("RINGSTORE_CLUSTER_KEY_FILE"),
  )
  // For measurements only (bench:cluster prices peer encryption with it): not offered in --help.
  .addOption(
    new Option("--insecure-peer-plaintext", "peer traffic unencrypted and unauthenticated").hideHelp(),
  )
  .action(async (_opts: unknown, cmd: Command) => {
    const flags = applyConfigFile(cmd);
    checkRequired(cmd, ["id", "api", "peer", "data"]);
    await startCommand(flags as unknown as StartFlags);
  });

program
  .command("dev")
  .description("run a local cluster on 127.0.0.1: node k serves its API on port 8000+k, peers on 9000+k")
  .option("--nodes <n>", "number of nodes", "3")
  .option("--data <dir>", "data directory (one folder per node)", "./data")
  .option("--base-port <port>", "API ports are base+k, peer ports base+1000+k", "8000")
  .option("--n <n>", "replicas per key (default 3, or the number of nodes if fewer)")
  .option("--r <r>", "default read quorum (default a majority of N)")
  .option("--w <w>", "default write quorum (default a majority of N)")
  .option("--durability <mode>", "fsync (default), interval or none, for every node")
  .action(devCommand);

const cluster = program.command("cluster").description("look at and operate the cluster");
connectionOptions(cluster.command("status").description("the members and their states, as a table"))
  .option("--json", "print the node's whole /status as JSON")
  .option("--all", "also list departed members (left or removed), until the cluster forgets them")
  .action(clusterStatusCommand);
connectionOptions(
  cluster
    .command("leave")
    .description("that node hands its data off to the nodes that take its partitions, then leaves and stops"),
  "API address of the node that leaves",
)
  .option("--force", "leave even if fewer than N members would remain")
  .option("--no-wait", "return once the leave has started, without following the handoff")
  .option("--wait-timeout <s>", "give up following the handoff after this many seconds", "3600")
  .action(clusterLeaveCommand);
connectionOptions(
  cluster
    .command("remove")
    .description("remove a member that is gone for good (down, its data lost or unreachable) on its behalf"),
  "API address of any live member",
)
  .requiredOption("--id <id>", "the id of the member to remove")
  .option("--force", "remove it even if it does not look down, or if fewer than N members would remain")
  .option("--no-wait", "return once removed, without following the other members' handoff")
  .option("--wait-timeout <s>", "give up following the handoff after this many seconds", "3600")
  .action(clusterRemoveCommand);
connectionOptions(
  cluster
    .command("plan <change> [weight]")
    .description(
      "what a change (join, leave, remove, or weight W) would move: partitions from where to where, keys, bytes, and the time at the handoff throttle; changes nothing",
    ),
  "API address of any live member (it computes the plan)",
)
  .requiredOption("--id <id>", "the member the change is about (a new id for join)")
  .option("--weight <w>", "join: the new member's weight (default 1); weight: the new weight")
  .option("--zone <zone>", "join: the new member's zone")
  .option("--all", "list every partition that moves (default: the first 40)")
  .option("--json", "print the whole plan as JSON")
  .action(clusterPlanCommand);
connectionOptions(
  cluster
    .command("weight <weight>")
    .description("change a member's weight (1..1000) online: its share of the ring follows, with handoff"),
  "API address of any live member",
)
  .requiredOption("--id <id>", "the member whose weight changes")
  .action(clusterWeightCommand);
connectionOptions(
  cluster
    .command("handoff-rate <MiB/s>")
    .description("set that node's handoff throttle at run time: MiB it sends per second at most"),
  "API address of the node",
).action(clusterHandoffRateCommand);

const keyOptions = (c: Command) =>
  connectionOptions(c).option("--timeout <ms>", "time the coordinator waits for replicas");

keyOptions(
  program.command("get <key>").description("read a key: its value, or its siblings and their context"),
)
  .option("--r <r>", "read quorum: 1..N, one, quorum or all")
  .option("--json", "print the result as JSON")
  .action(getCommand);
keyOptions(program.command("put <key> [value]").description("write a key (VALUE, or the contents of --file)"))
  .option("--file <f>", "read the value from a file")
  .option("--context <c>", "context of the versions this write replaces (from get)")
  .option("--content-type <type>", "content type to store with the value")
  .option("--w <w>", "write quorum: 1..N, one, quorum or all")
  .action(putCommand);
keyOptions(
  program
    .command("delete <key>")
    .description("delete a key: everything a read finds now, or what --context covers"),
)
  .option("--context <c>", "delete only the versions this context covers (default: read the key first)")
  .option("--w <w>", "write quorum: 1..N, one, quorum or all")
  .action(deleteCommand);

connectionOptions(
  program
    .command("keys")
    .description("list every live key of the cluster, one per line (unsorted; not a snapshot)"),
)
  .option("--limit <n>", "keys per page asked of the node (1..10000)")
  .option("--encoded", "print every key percent-encoded, as the API gives it")
  .option("--cursor <c>", "go on with a listing from this cursor (printed when a listing fails)")
  .action(keysCommand);

const auth = program.command("auth").description("API tokens: the file a node reads with --auth-file");
auth
  .command("add-token")
  .description("create a token with a role, print it once, and keep only its hash in --file (mode 0600)")
  .requiredOption(
    "--role <role>",
    "read (GET /kv/, /status, /ring, /metrics), write (+ PUT, DELETE) or admin (+ cluster leave, remove)",
  )
  .requiredOption("--file <file>", "the token file (created if missing)")
  .option("--name <name>", "a note kept with the token (who or what uses it)")
  .action(addTokenCommand);
auth
  .command("list")
  .description("the tokens of --file: id, role, creation time, name (never the tokens themselves)")
  .requiredOption("--file <file>", "the token file")
  .action(listTokensCommand);
auth
  .command("remove-token")
  .description("revoke a token: nodes using --file refuse it within 2 s")
  .requiredOption("--id <id>", "the token's id (the 12 hex digits after rs_; see auth list)")
  .requiredOption("--file <file>", "the token file")
  .action(removeTokenCommand);

const clusterKey = program
  .command("cluster-key")
  .description("the cluster key file: make one, and rotate keys without downtime (see the README)");
clusterKey
  .command("generate")
  .description("write a new key file (mode 0600) with a fresh random key; prints the key's id")
  .requiredOption("--file <file>", "the file to create (refused if it exists)")
  .action(keyGenerateCommand);
clusterKey
  .command("show")
  .description("the ids of a key file's keys (never the keys): the current one, and the one also accepted")
  .requiredOption("--file <file>", "a cluster key file")
  .action(keyShowCommand);
clusterKey
  .command("add")
  .description("rotation, step 1 (on every node): accept the current key of --from as well")
  .requiredOption("--file <file>", "the node's key file (its --cluster-key-file, or DATA/cluster.key)")
  .requiredOption("--from <file>", "a key file holding the new key (cluster-key generate)")
  .action(keyAddCommand);
clusterKey
  .command("use")
  .description(
    "rotation, step 2 (on every node, once all accept it): connect with key --id, still accepting the old one",
  )
  .requiredOption("--file <file>", "the node's key file")
  .requiredOption("--id <id>", "the id of the key to connect with (cluster-key show)")
  .action(keyUseCommand);
clusterKey
  .command("drop")
  .description("rotation, step 3 (on every node, once all connect with the new key): stop accepting key --id")
  .requiredOption("--file <file>", "the node's key file")
  .requiredOption("--id <id>", "the id of the key to drop (not the current one)")
  .action(keyDropCommand);

const storage = program.command("storage").description("inspect or compact a storage engine's data");
storage
  .command("stats")
  .description("print a stopped store's statistics, read-only (changes nothing; refuses a store in use)")
  .requiredOption("--data <dir>", "a node's data directory, or a store's directory")
  .action(async (opts: { data: string }) => {
    await printStorageStats(opts.data);
  });
connectionOptions(
  storage
    .command("compact")
    .description(
      "full compaction (every sorted run merged into one), followed to its end: a running node's (--node), or a stopped node's store (--data)",
    )
    .option("--data <dir>", "a stopped node's data directory, or a store's directory (instead of --node)"),
  "API address of the node whose store to compact",
).action(async (opts: ConnectionFlags & { data?: string }) => {
  if (opts.data !== undefined) await compactDataCommand(opts.data);
  else await compactNodeCommand(opts);
});

program.parseAsync(process.argv).catch((err: unknown) => {
  const e = err as { code?: string; message?: string };
  process.stderr.write(`ringstore: ${e.message ?? String(err)}${e.code ? ` (${e.code})` : ""}\n`);
  process.exitCode = 1;
});

/**
 * A real crash test: a child process (test/fixtures/crash-writer.ts) writes to an LsmEngine on the real
 * disk with durability "fsync" and several concurrent writers, and is SIGKILLed at a random moment. The
 * directory is then reopened here and checked against what the child reported:
 *
 * - every acknowledged write is present, unless a later write on the same key replaced it (writes are
 *   applied in the order they were issued, so an acknowledgement also covers every earlier write);
 * - for a key with writes in flight at the kill, a later (unacknowledged) value is accepted too;
 * - no key holds a value that was never written;
 * - the whole recovered state equals the state after some prefix of the issued writes that includes every
 *   acknowledged one (batches are atomic, order is kept).
 *
 * Several kill/reopen rounds run on the same directory, each continuing the write stream with fresh values.
 * The kill moments derive from a printed seed: rerun with CRASH_SEED=<seed> to replay them.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { after, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { LsmEngine, NodeFileSystem } from "../../src/storage/index.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const WRITER = "test/fixtures/crash-writer.ts";
const ROUNDS = Number(process.env.CRASH_ROUNDS ?? 5);
const KILL_MIN_MS = 300;
const KILL_MAX_MS = 1500;
/** The child stops by itself after this long (it is always killed well before). */
const CHILD_MAX_MS = 20_000;
/** Bound on waiting for the child to start or to go away. */
const CHILD_WAIT_MS = 15_000;

function makeRandom(s: number): () => number {
  let a = s >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The value the child writes for a put (see crash-writer.ts). */
const putValue = (tag: string, pad: number): string => `${tag}|${".".repeat(pad)}`;

/** One write as the child announced it: a put has a value, a delete has none. */
interface Op {
  readonly key: string;
  readonly value: string | undefined;
}

interface RoundOutput {
  /** Intents by id (ids are 0, 1, 2, ... in issue order). */
  readonly intents: Op[][];
  readonly acked: Set<number>;
  readonly ready: boolean;
  readonly done: boolean;
  readonly stats: { flushes: number; compactions: number } | undefined;
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly killed: boolean;
  readonly stderr: string;
}

let child: ChildProcess | undefined;
const dirs: string[] = [];

after(() => {
  // Runs on success and failure alike: no child outlives the test, no directory is left behind.
  if (child !== undefined && child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** Runs the child on `dir` and SIGKILLs it `killAfterMs` after its first acknowledged write. */
function runChild(dir: string, seed: number, killAfterMs: number): Promise<RoundOutput> {
  return new Promise((resolve, reject) => {
    const c = spawn(process.execPath, ["--import", "tsx", WRITER, dir, String(seed), String(CHILD_MAX_MS)], {
      cwd: ROOT,
      stdio: ["ignore", "pipe", "pipe"],
    });
    child = c;
    const intents: Op[][] = [];
    const acked = new Set<number>();
    let ready = false;
    let done = false;
    let killed = false;
    let stats: RoundOutput["stats"];
    let stderr = "";
    let pending = "";
    let killTimer: NodeJS.Timeout | undefined;
    const kill = () => {
      if (c.exitCode === null && c.signalCode === null) {
        killed = true;
        c.kill("SIGKILL");
      }
    };
    // Never wait forever: for the start, and (with the child's own limit) for the end.
    const guard = setTimeout(kill, CHILD_WAIT_MS + CHILD_MAX_MS);
    const startGuard = setTimeout(() => {
      if (!ready) kill();
    }, CHILD_WAIT_MS);

    const onLine = (line: string) => {
      const m = JSON.parse(line) as { t: string; id?: number; ops?: ([string, string, number] | [string])[] };
      switch (m.t) {
        case "ready":
          ready = true;
          break;
        case "i":
          assert.equal(m.id, intents.length, "intent ids are consecutive");
          intents.push(
            m.ops!.map((o) => ({ key: o[0], value: o.length === 3 ? putValue(o[1], o[2]) : undefined })),
          );
          break;
        case "a":
          assert.ok(m.id! < intents.length, `ack ${m.id} without an intent`);
          acked.add(m.id!);
          // The clock starts at the first acknowledgement, not at "ready": on a loaded machine the
          // first fsync can take long enough that a kill timed from the start finds nothing acked.
          killTimer ??= setTimeout(kill, killAfterMs);
          break;
        case "s":
          stats = m as unknown as RoundOutput["stats"];
          break;
        case "done":
          done = true;
          break;
        default:
          throw new Error(`unexpected line from the child: ${line}`);
      }
    };
    c.stdout!.setEncoding("utf8");
    c.stdout!.on("data", (chunk: string) => {
      pending += chunk;
      const lines = pending.split("\n");
      // The last piece has no newline yet: keep it. A line cut by the kill is never completed, and is
      // ignored (an intent cut short was not yet issued: the child issues a write after printing it).
      pending = lines.pop()!;
      try {
        for (const l of lines) if (l !== "") onLine(l);
      } catch (err) {
        kill();
        reject(err);
      }
    });
    c.stderr!.setEncoding("utf8");
    c.stderr!.on("data", (chunk: string) => {
      stderr += chunk;
    });
    c.on("error", (err) => {
      clearTimeout(guard);
      clearTimeout(startGuard);
      clearTimeout(killTimer);
      reject(err);
    });
    c.on("close", (code, signal) => {
      clearTimeout(guard);
      clearTimeout(startGuard);
      clearTimeout(killTimer);
      resolve({ intents, acked, ready, done, stats, code, signal, killed, stderr });
    });
  });
}

function applyOps(state: Map<string, string>, ops: readonly Op[]): void {
  for (const op of ops) {
    if (op.value === undefined) state.delete(op.key);
    else state.set(op.key, op.value);
  }
}

function sameState(a: ReadonlyMap<string, string>, b: ReadonlyMap<string, string>): boolean {
  if (a.size !== b.size) return false;
  for (const [k, v] of a) if (b.get(k) !== v) return false;
  return true;
}

const show = (v: string | undefined): string => (v === undefined ? "<absent>" : v.slice(0, v.indexOf("|")));

/** Reads the whole store, by iteration and by point reads of `keys`; checks that the two agree. */
async function readAll(engine: LsmEngine, keys: Iterable<string>): Promise<Map<string, string>> {
  const state = new Map<string, string>();
  let prev: string | undefined;
  for await (const e of engine.iterate()) {
    const k = Buffer.from(e.key).toString();
    if (prev !== undefined) assert.ok(prev < k, `iteration out of order: ${prev} then ${k}`);
    prev = k;
    state.set(k, Buffer.from(e.value).toString());
  }
  for (const k of new Set([...keys, ...state.keys()])) {
    const v = await engine.get(Buffer.from(k));
    const got = v === undefined ? undefined : Buffer.from(v).toString();
    assert.equal(show(got), show(state.get(k)), `get(${k}) disagrees with iterate`);
    assert.equal(got, state.get(k), `get(${k}) disagrees with iterate`);
  }
  return state;
}

/**
 * Checks the recovered state against the round's intents and acknowledgements, starting from `base` (the
 * state verified after the previous round). Returns a list of problems (empty when all is well).
 */
function check(base: ReadonlyMap<string, string>, out: RoundOutput, actual: ReadonlyMap<string, string>) {
  const problems: string[] = [];
  const n = out.intents.length;
  // Writes apply in issue order and resolve in that order: an ack covers every earlier intent.
  const floor = Math.max(-1, ...out.acked);

  // Per key: the values ever written (base and this round), and the ops in issue order.
  const written = new Map<string, Set<string>>();
  const opsByKey = new Map<string, { id: number; value: string | undefined }[]>();
  for (const [k, v] of base) written.set(k, new Set([v]));
  out.intents.forEach((ops, id) => {
    for (const op of ops) {
      if (op.value !== undefined) {
        const s = written.get(op.key) ?? new Set();
        s.add(op.value);
        written.set(op.key, s);
      }
      const list = opsByKey.get(op.key) ?? [];
      list.push({ id, value: op.value });
      opsByKey.set(op.key, list);
    }
  });

  // No value that was never written.
  for (const [k, v] of actual)
    if (!written.get(k)?.has(v)) problems.push(`key ${k} holds a value never written: ${JSON.stringify(v)}`);

  // Every acknowledged write is there, unless a later write on its key (possibly in flight) replaced it.
  const keys = new Set([...base.keys(), ...opsByKey.keys(), ...actual.keys()]);
  for (const k of keys) {
    const ops = opsByKey.get(k) ?? [];
    const allowed: (string | undefined)[] = [];
    let durable: string | undefined = base.get(k);
    for (const op of ops) if (op.id <= floor) durable = op.value;
    allowed.push(durable);
    for (const op of ops) if (op.id > floor) allowed.push(op.value);
    if (!allowed.includes(actual.get(k)))
      problems.push(
        `key ${k}: found ${show(actual.get(k))}, expected ${show(durable)} (last acknowledged)` +
          (allowed.length > 1 ? ` or one of the in-flight ${allowed.slice(1).map(show).join(", ")}` : ""),
      );
  }

  // The whole state is the state after some prefix of the intents that holds every acknowledged one.
  if (problems.length === 0) {
    const model = new Map(base);
    for (let id = 0; id <= floor; id++) applyOps(model, out.intents[id]!);
    let matched = sameState(model, actual);
    for (let id = floor + 1; id < n && !matched; id++) {
      applyOps(model, out.intents[id]!);
      matched = sameState(model, actual);
    }
    if (!matched)
      problems.push(
        `the state matches no prefix of the writes from #${floor} (last acknowledged) to #${n - 1}: ` +
          "a batch was applied in part, or writes out of order",
      );
  }
  return problems;
}

describe("LsmEngine survives SIGKILL of a writing process (NodeFileSystem, fsync)", () => {
  test(`${ROUNDS} kill/reopen rounds keep every acknowledged write and invent none`, {
    timeout: 60_000 + ROUNDS * 20_000,
  }, async (t) => {
    const masterSeed =
      process.env.CRASH_SEED !== undefined ? Number(process.env.CRASH_SEED) : Date.now() % 1e9;
    t.diagnostic(`seed ${masterSeed} (replay with CRASH_SEED=${masterSeed})`);
    const rnd = makeRandom(masterSeed);
    const dir = mkdtempSync(path.join(tmpdir(), "ringstore-crash-"));
    dirs.push(dir);

    let base = new Map<string, string>();
    for (let round = 0; round < ROUNDS; round++) {
      const killAfter = KILL_MIN_MS + Math.floor(rnd() * (KILL_MAX_MS - KILL_MIN_MS));
      const childSeed = (masterSeed * 31 + round * 7919 + 1) >>> 0;
      const out = await runChild(dir, childSeed, killAfter);
      child = undefined;

      assert.ok(out.ready, `round ${round}: the child did not start: ${out.stderr}`);
      assert.ok(
        out.killed ? out.signal === "SIGKILL" : out.code === 0 && out.done,
        `round ${round}: the child failed (code ${out.code}, signal ${out.signal}): ${out.stderr}`,
      );
      assert.ok(out.acked.size > 0, `round ${round}: no write was acknowledged`);
      t.diagnostic(
        `round ${round}: child seed ${childSeed}, killed ${killAfter} ms after its first acknowledgement, ${out.intents.length} writes ` +
          `issued, ${out.acked.size} acknowledged, flushes ${out.stats?.flushes ?? 0}, ` +
          `compactions ${out.stats?.compactions ?? 0}`,
      );

      const engine = await LsmEngine.open({
        dir,
        fs: new NodeFileSystem(),
        options: { memtableBytes: 256 * 1024, tableTargetBytes: 128 * 1024 },
      });
      let actual: Map<string, string>;
      try {
        const keys = new Set([...base.keys(), ...out.intents.flatMap((ops) => ops.map((o) => o.key))]);
        actual = await readAll(engine, keys);
      } finally {
        await engine.close();
      }
      const problems = check(base, out, actual);
      assert.deepEqual(
        problems.slice(0, 20),
        [],
        `round ${round} (seed ${masterSeed}): ${problems.length} problems`,
      );
      base = actual;
    }
  });
});

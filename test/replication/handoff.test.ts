/**
 * Handoff (src/replication/handoff.ts) on virtual time, with a real memory engine holding the sets and
 * peers that record (or refuse) the stores sent to them: who sends what on a join and on a leave, retries
 * with backoff until every store is acknowledged, and a stop or a failing scan that crash nothing.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { ReplicaPeer } from "../../src/replication/coordinator.js";
import { Handoff, type HandoffDeps, type HandoffRing } from "../../src/replication/handoff.js";
import { DATA } from "../../src/replication/keyspaces.js";
import { Replica } from "../../src/replication/replica.js";
import { claim, PreferenceTable, type RingMember } from "../../src/ring/ring.js";
import { VirtualScheduler } from "../../src/runtime/virtual-runtime.js";
import { MemoryEngine } from "../../src/storage/memory-engine.js";
import type { RingView } from "../../src/transport/messages.js";
import { update } from "../../src/versioning/dvv.js";
import { encodeSiblings, type StoredSibling } from "../../src/versioning/object-codec.js";

const Q = 64;
const N = 3;
const KEYS = 400;

function ringOf(ids: string[], prev?: ReturnType<typeof claim>) {
  const members: RingMember[] = ids.map((id) => ({ id, weight: 1 }));
  const r = claim(prev, members, Q, N);
  return { ring: r, table: new PreferenceTable(r, members, N) };
}

function viewOf(r: ReturnType<typeof claim>, version: number): RingView {
  return { version, partitions: r.partitions, owners: r.owners, members: [] };
}

/** A ring from ringOf as handoff sees it, at `version`. */
function at(r: ReturnType<typeof ringOf>, version: number): HandoffRing {
  return { ring: viewOf(r.ring, version), table: r.table, version };
}

/** The usual setting: a, b, c, and the ring after d joins; a scheduler and recording peers. */
function joinOfD() {
  const before = ringOf(["a", "b", "c"]);
  const after = ringOf(["a", "b", "c", "d"], before.ring);
  return { before, after, sched: new VirtualScheduler(), peers: new Peers() };
}

function set(i: number): StoredSibling[] {
  return update([], new Map(), "w1", {
    data: Buffer.from(`v${i}`),
    contentType: "text/plain",
    deleted: false,
    writtenAtMs: 0,
  }).set;
}

/** Holds every key whose old preference list has `self`, as a replica would. */
async function storeFor(self: string, table: PreferenceTable): Promise<MemoryEngine> {
  const e = new MemoryEngine();
  for (let i = 0; i < KEYS; i++) {
    const key = Buffer.from(`k${i}`);
    if (table.forKey(key).includes(self)) await e.put(DATA.encode(key), encodeSiblings(set(i)));
  }
  return e;
}

class Peers {
  readonly got = new Map<string, Set<string>>();
  down = new Set<string>();
  sends = 0;
  peer = (id: string): ReplicaPeer => ({
    nodeId: id,
    read: async () => [],
    store: async (key) => {
      this.sends++;
      if (this.down.has(id)) throw new Error(`${id} is down`);
      const s = this.got.get(id) ?? new Set<string>();
      s.add(Buffer.from(key).toString());
      this.got.set(id, s);
    },
  });
}

function handoff(
  sched: VirtualScheduler,
  self: string,
  storage: MemoryEngine,
  peers: Peers,
  current: () => HandoffRing,
  leaving = false,
  extra: Partial<HandoffDeps> = {},
): Handoff {
  return new Handoff({
    selfId: self,
    replica: new Replica(storage, self, 64),
    peer: peers.peer,
    timers: sched,
    clock: sched,
    current,
    leaving: () => leaving,
    pageKeys: 32,
    retryMs: 1000,
    ...extra,
  });
}

describe("handoff", () => {
  test("a join: each key the joiner takes arrives from the holders, at most two copies per key", async () => {
    const { before, after, sched, peers } = joinOfD();
    let cur = at(before, 1);
    const hs: Handoff[] = [];
    for (const id of ["a", "b", "c"]) {
      const h = handoff(sched, id, await storeFor(id, before.table), peers, () => cur);
      h.start();
      hs.push(h);
    }
    cur = at(after, 2);
    for (const h of hs) h.kick();
    assert.ok(await sched.runUntil(() => hs.every((h) => h.progress.passesCompleted === 1), 60_000));
    let expected = 0;
    for (let i = 0; i < KEYS; i++) {
      const key = Buffer.from(`k${i}`);
      if (!after.table.forKey(key).includes("d")) continue;
      expected++;
      assert.ok(peers.got.get("d")?.has(`k${i}`), `k${i} reached d`);
    }
    assert.ok(expected > KEYS / 2);
    assert.deepEqual([...peers.got.keys()], ["d"], "only the joiner gets stores");
    // With three holders per key, one loses it (sends) and one keeper sends: at most two copies per key.
    assert.ok(peers.sends <= 2 * expected, `${peers.sends} stores for ${expected} keys`);
    for (const h of hs) await h.stop();
  });

  test("a restart resumes from the ring saved as handed off for, not from the ring it starts with", async () => {
    const { before, after, sched, peers } = joinOfD();
    const storage = await storeFor("a", before.table);
    const cur = () => at(after, 2);
    // Without the saved ring, the node takes the current one as done: nothing to send.
    const fresh = handoff(sched, "a", storage, peers, cur);
    fresh.start();
    await sched.runFor(5000);
    assert.equal(peers.sends, 0);
    await fresh.stop();
    const h = handoff(sched, "a", storage, peers, cur);
    h.start(at(before, 1));
    assert.ok(await sched.runUntil(() => h.progress.passesCompleted === 1, 60_000));
    assert.ok(peers.sends > 0 && peers.got.has("d"));
    assert.equal(h.handedOffRing?.version, 2);
    await h.stop();
  });

  test("a cluster growing towards N: every keeper sends, so a keeper that missed writes costs nothing", async () => {
    const before = ringOf(["a", "b"]);
    const after = ringOf(["a", "b", "c"], before.ring);
    const sched = new VirtualScheduler();
    const peers = new Peers();
    let cur = at(before, 1);
    // a missed every write (it was down); b holds them all.
    const hs = [
      handoff(sched, "a", new MemoryEngine(), peers, () => cur),
      handoff(sched, "b", await storeFor("b", before.table), peers, () => cur),
    ];
    for (const h of hs) h.start();
    cur = at(after, 2);
    for (const h of hs) h.kick();
    assert.ok(await sched.runUntil(() => hs.every((h) => h.progress.passesCompleted === 1), 60_000));
    for (let i = 0; i < KEYS; i++) assert.ok(peers.got.get("c")?.has(`k${i}`), `k${i} reached c`);
    for (const h of hs) await h.stop();
  });

  test("a removed member's keys: every keeper sends, since the loser never will", async () => {
    const before = ringOf(["a", "b", "c", "x"]);
    const after = ringOf(["a", "b", "c"], before.ring);
    const sched = new VirtualScheduler();
    const peers = new Peers();
    let cur = at(before, 1);
    // The keepers: one holds every key, one missed every write. x (removed) sends nothing.
    const full = new Set(["a"]);
    const hs: Handoff[] = [];
    for (const id of ["a", "b", "c"]) {
      const storage = full.has(id) ? await storeFor(id, before.table) : new MemoryEngine();
      const h = handoff(sched, id, storage, peers, () => cur, false, { gone: (n) => n === "x" });
      h.start();
      hs.push(h);
    }
    cur = at(after, 2);
    for (const h of hs) h.kick();
    assert.ok(await sched.runUntil(() => hs.every((h) => h.progress.passesCompleted === 1), 60_000));
    for (let i = 0; i < KEYS; i++) {
      const k = Buffer.from(`k${i}`);
      const was = before.table.forKey(k);
      const now = after.table.forKey(k);
      if (!was.includes("a")) continue; // only a holds anything here
      for (const id of now)
        if (!was.includes(id) && id !== "a")
          assert.ok(peers.got.get(id)?.has(`k${i}`), `k${i} reached ${id}`);
    }
    for (const h of hs) await h.stop();
  });

  test("a newer ring during the wait for a retry starts a new pass at once; stop ends the wait", async () => {
    const r1 = ringOf(["a", "b", "c"]);
    const r2 = ringOf(["a", "b", "c", "d"], r1.ring);
    const r3 = ringOf(["a", "b", "c", "d", "e"], r2.ring);
    const sched = new VirtualScheduler();
    const peers = new Peers();
    peers.down.add("d");
    let cur = at(r1, 1);
    const h = handoff(sched, "a", await storeFor("a", r1.table), peers, () => cur, false, {
      retryMs: 60_000,
    });
    h.start();
    cur = at(r2, 2);
    h.kick();
    assert.ok(await sched.runUntil(() => h.progress.state === "retrying", 10_000));
    const t0 = sched.now();
    cur = at(r3, 3);
    peers.down.clear();
    h.kick();
    assert.ok(await sched.runUntil(() => h.progress.passesCompleted === 1, 10_000));
    assert.ok(sched.now() - t0 < 1000, "it did not wait out the 60 s retry");
    assert.equal(h.progress.ringVersion, 3);
    // A wait for a retry ends with stop().
    peers.down.add("b");
    cur = at(r1, 4);
    h.kick();
    assert.ok(await sched.runUntil(() => h.progress.state === "retrying", 10_000));
    const stopped = h.stop();
    await sched.runUntilSettled(stopped, 1000);
  });

  test("a leave: everything goes to the key's current replicas; what a replica down missed is retried with backoff until it is back", async () => {
    const before = ringOf(["a", "b", "c", "d"]);
    const after = ringOf(["b", "c", "d"], before.ring);
    const sched = new VirtualScheduler();
    const peers = new Peers();
    peers.down.add("c");
    const storage = await storeFor("a", before.table);
    let held = 0;
    for await (const _ of storage.iterate()) held++;
    // When stores to c are tried: after the pass, only what c missed is tried again, less and less often.
    const triedAt: number[] = [];
    const store = peers.peer;
    peers.peer = (id) => {
      const p = store(id);
      if (id !== "c") return p;
      return {
        ...p,
        store: (k, set) => {
          triedAt.push(sched.now());
          return p.store(k, set);
        },
      };
    };
    const h = handoff(sched, "a", storage, peers, () => at(after, 2), true);
    h.start();
    assert.ok(
      await sched.runUntil(() => h.progress.state === "retrying", 10_000),
      `state ${JSON.stringify(h.progress)}`,
    );
    const toOthers = () => peers.sends - triedAt.length;
    const afterPass = toOthers();
    const passEnd = sched.now();
    const retries = () => [...new Set(triedAt.filter((t) => t > passEnd))];
    assert.ok(
      await sched.runUntil(() => retries().length >= 4, 120_000),
      `retries ${retries()} state ${JSON.stringify(h.progress)}`,
    );
    const times = [passEnd, ...retries()];
    const gaps = times.slice(1).map((t, i) => t - times[i]!);
    assert.ok(
      gaps.every((g, i) => i === 0 || g > gaps[i - 1]!),
      `waits between retries grow: ${gaps}`,
    );
    assert.equal(h.progress.passesCompleted, 0);
    assert.match(h.progress.lastError ?? "", /c is down/);
    assert.equal(h.progress.keysScanned, held, "no second scan: only the missed stores are retried");
    assert.equal(toOthers(), afterPass, "the retries go to c alone");
    peers.down.clear();
    assert.ok(await sched.runUntil(() => h.progress.passesCompleted === 1, 60_000));
    for (let i = 0; i < KEYS; i++) {
      const key = Buffer.from(`k${i}`);
      if (!before.table.forKey(key).includes("a")) continue;
      for (const id of after.table.forKey(key)) assert.ok(peers.got.get(id)?.has(`k${i}`), `k${i} on ${id}`);
    }
    assert.ok(held > 0);
    await h.stop();
  });

  test("stop during a pass, or a scan that fails: no crash, no store after the stop", async () => {
    const { before, after, sched, peers } = joinOfD();
    const storage = await storeFor("a", before.table);
    let cur = at(before, 1);
    const h = handoff(sched, "a", storage, peers, () => cur);
    h.start();
    cur = at(after, 2);
    h.kick();
    assert.ok(await sched.runUntil(() => h.progress.keysScanned > 0, 10_000));
    const stopped = h.stop();
    await sched.runUntilSettled(stopped, 10_000);
    const sent = peers.sends;
    await sched.runFor(10_000);
    assert.equal(peers.sends, sent, "nothing is sent after stop");

    // A scan that throws (the engine failed) is recorded and retried, never unhandled.
    const broken = new MemoryEngine();
    broken.iterate = () => {
      throw new Error("disk on fire");
    };
    let cur2 = at(before, 1);
    const h2 = handoff(sched, "a", broken, peers, () => cur2);
    h2.start();
    cur2 = at(after, 2);
    h2.kick();
    assert.ok(await sched.runUntil(() => h2.progress.state === "retrying", 10_000));
    assert.match(h2.progress.lastError ?? "", /disk on fire/);
    await h2.stop();
  });
});

describe("handoff invariants", () => {
  /** The private steps of a pass, reached as a bug in the code that calls them would. */
  const internals = (h: Handoff) =>
    h as unknown as {
      send(sends: readonly { to: string; key: Uint8Array; value: Uint8Array }[]): Promise<void>;
      run(): Promise<void>;
    };

  test("a store to itself is caught before it is sent", async () => {
    const { before, sched, peers } = joinOfD();
    const storage = await storeFor("a", before.table);
    const h = handoff(sched, "a", storage, peers, () => at(before, 1));
    const set = encodeSiblings(
      update([], new Map(), "w1", {
        data: Buffer.from("v"),
        contentType: "t",
        deleted: false,
        writtenAtMs: 0,
      }).set,
    );
    await assert.rejects(internals(h).send([{ to: "a", key: Buffer.from("k"), value: set }]), {
      code: "ERR_INVARIANT",
      message: /send a key to itself \(a\)/,
    });
    assert.equal(peers.sends, 0);
  });

  test("a pass that would complete for an older ring than the last one is caught", async () => {
    const { before, after, sched, peers } = joinOfD();
    const storage = await storeFor("a", before.table);
    let cur: HandoffRing | undefined;
    const h = handoff(sched, "a", storage, peers, () => cur as HandoffRing);
    h.start(at(after, 5)); // the saved ring: a pass was completed for version 5
    cur = at(before, 4); // a current ring older than that: only a bug elsewhere could give it
    await assert.rejects(sched.runUntilSettled(internals(h).run(), 60_000), {
      code: "ERR_INVARIANT",
      message: /completed for ring 4 after one for ring 5/,
    });
    await h.stop();
  });
});

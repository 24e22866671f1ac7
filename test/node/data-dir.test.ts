/**
 * The data directory's small files (src/node/data-dir.ts) through the FileSystem interface, under
 * simulated power loss: a crash at any instant of a save leaves the old file or the new one, whole; the
 * running marker survives a crash and goes at a clean stop; damage is reported, never served.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { DataDir } from "../../src/node/data-dir.js";
import { encodeIdentity, type NodeIdentity } from "../../src/node/identity.js";
import { seededRandom } from "../../src/runtime/runtime.js";
import { VirtualScheduler } from "../../src/runtime/virtual-runtime.js";
import type { FileSystem, WritableFile } from "../../src/storage/fs/file-system.js";
import { MemoryFileSystem } from "../../src/storage/fs/memory-file-system.js";
import type { MemberView } from "../../src/transport/messages.js";

const ROOT = "/node";

function identity(actor: string): NodeIdentity {
  return {
    nodeId: "n1",
    actor,
    clusterId: "c0ffee",
    clusterSecret: "c2VjcmV0",
    n: 3,
    r: 2,
    w: 2,
    partitions: 64,
    createdAt: new Date(0).toISOString(),
  };
}

function member(id: string, incarnation: number): MemberView {
  return {
    id,
    api: `a:${id}`,
    peer: `p:${id}`,
    weight: 1,
    zone: undefined,
    status: "up",
    incarnation,
    heartbeat: 0,
  };
}

class PowerCut extends Error {}

/**
 * A FileSystem over `inner` that cuts the power just before its `at`-th change (create, append, sync,
 * close, rename, unlink, syncDir): the inner file system crashes and the operation fails.
 */
function cutAt(inner: MemoryFileSystem, at: number, unsynced: "drop" | "torn" | "zeroed"): FileSystem {
  let ops = 0;
  const random = seededRandom(at);
  const step = () => {
    if (++ops === at) {
      inner.crash({ unsynced, random: () => random.next() });
      throw new PowerCut(`power cut at change ${at}`);
    }
  };
  const wrapFile = (f: WritableFile): WritableFile => ({
    get path() {
      return f.path;
    },
    get size() {
      return f.size;
    },
    get zeroBytesWritten() {
      return f.zeroBytesWritten;
    },
    append: async (d) => {
      step();
      return f.append(d);
    },
    appendSync: (d) => {
      step();
      f.appendSync(d);
    },
    sync: async () => {
      step();
      return f.sync();
    },
    syncBlocking: () => {
      step();
      f.syncBlocking();
    },
    close: async () => {
      step();
      return f.close();
    },
  });
  return {
    mkdirp: (d) => inner.mkdirp(d),
    readdir: (d) => inner.readdir(d),
    exists: (p) => inner.exists(p),
    create: async (p, o) => {
      step();
      return wrapFile(await inner.create(p, o));
    },
    openRead: (p) => inner.openRead(p),
    readFile: (p) => inner.readFile(p),
    rename: async (a, b) => {
      step();
      return inner.rename(a, b);
    },
    unlink: async (p) => {
      step();
      return inner.unlink(p);
    },
    truncate: async (p, l) => {
      step();
      return inner.truncate(p, l);
    },
    syncDir: async (d) => {
      step();
      return inner.syncDir(d);
    },
    lock: (d) => inner.lock(d),
    lockShared: (d) => inner.lockShared(d),
    chmod: async (p, m) => {
      step();
      return inner.chmod(p, m);
    },
  };
}

describe("the data directory's files under power loss", () => {
  for (const unsynced of ["drop", "torn", "zeroed"] as const)
    test(`a crash at any instant of a save leaves the old identity and view or the new ones (${unsynced} tails)`, async () => {
      let sawOld = 0;
      let sawNew = 0;
      for (let at = 1; ; at++) {
        const mem = new MemoryFileSystem();
        await mem.mkdirp(ROOT);
        const before = new DataDir(mem, ROOT);
        await before.writeIdentity(identity("n1.old"));
        await before.writeView({ members: [member("n1", 1)], ring: null });
        const dir = new DataDir(cutAt(mem, at, unsynced), ROOT);
        let finished = false;
        try {
          await dir.writeIdentity(identity("n1.new"));
          await dir.writeView({ members: [member("n1", 2)], ring: null });
          finished = true;
        } catch (err) {
          if (!(err instanceof PowerCut)) throw err;
        }
        if (finished) mem.crash({ unsynced: "drop" });
        const after = new DataDir(mem, ROOT);
        const id = await after.readIdentity();
        const view = await after.readView();
        assert.ok(id !== undefined && view !== undefined, `crash at change ${at}: a file went missing`);
        assert.ok(["n1.old", "n1.new"].includes(id.actor), `crash at change ${at}: identity ${id.actor}`);
        assert.ok([1, 2].includes(view.members[0]!.incarnation), `crash at change ${at}`);
        if (id.actor === "n1.old") sawOld++;
        else sawNew++;
        if (finished) {
          // A save that returned is durable.
          assert.equal(id.actor, "n1.new");
          assert.equal(view.members[0]!.incarnation, 2);
          break;
        }
      }
      assert.ok(sawOld > 0 && sawNew > 0);
    });

  test("the cluster key: a crash at any instant of its write leaves none, the old one or the new one, whole", async () => {
    const keyA = { current: Buffer.alloc(32, 0xa), accept: undefined };
    const keyB = { current: Buffer.alloc(32, 0xb), accept: Buffer.alloc(32, 0xa) };
    for (const first of [true, false]) {
      const seen = new Set<string>();
      for (let at = 1; ; at++) {
        const mem = new MemoryFileSystem();
        await mem.mkdirp(ROOT);
        if (!first) await new DataDir(mem, ROOT).writeClusterKey(keyA);
        const dir = new DataDir(cutAt(mem, at, "torn"), ROOT);
        let finished = false;
        try {
          await dir.writeClusterKey(first ? keyA : keyB);
          finished = true;
        } catch (err) {
          if (!(err instanceof PowerCut)) throw err;
        }
        if (finished) mem.crash({ unsynced: "drop" });
        const k = await new DataDir(mem, ROOT).readClusterKey();
        const got = k === undefined ? "none" : Buffer.from(k.current).equals(keyA.current) ? "A" : "B";
        if (got === "B") assert.ok(k?.accept !== undefined && Buffer.from(k.accept).equals(keyA.current));
        seen.add(got);
        if (finished) {
          assert.equal(got, first ? "A" : "B", "a write that returned is durable");
          break;
        }
      }
      assert.deepEqual([...seen].sort(), first ? ["A", "none"] : ["A", "B"]);
    }
  });

  test("the running marker survives a crash and goes at a clean stop", async () => {
    const mem = new MemoryFileSystem();
    const dir = new DataDir(mem, ROOT);
    await dir.lock(new VirtualScheduler());
    assert.equal(await dir.uncleanStop(), false);
    await dir.markRunning();
    mem.crash();
    assert.equal(await dir.uncleanStop(), true);
    await dir.markStopped();
    mem.crash();
    assert.equal(await dir.uncleanStop(), false);
  });

  test("a damaged identity or view is reported, never served", async () => {
    const mem = new MemoryFileSystem();
    const dir = new DataDir(mem, ROOT);
    await dir.lock(new VirtualScheduler());
    await dir.writeIdentity(identity("n1.a"));
    await dir.writeView({ members: [member("n1", 1)], ring: null });
    for (const [file, pattern] of [
      ["node.json", /checksum mismatch/],
      ["members.json", /is damaged \(checksum mismatch\)/],
    ] as const) {
      const p = `${ROOT}/${file}`;
      const text = (await mem.readFile(p)).toString("utf8");
      mem.corruptByte(p, text.indexOf('"n1') + 2, 0x01); // n1 -> n0, valid JSON
      await assert.rejects(file === "node.json" ? dir.readIdentity() : dir.readView(), pattern);
    }
  });

  test("the heartbeat (alive): absent until written, durable, and reported when damaged", async () => {
    const mem = new MemoryFileSystem();
    const dir = new DataDir(mem, ROOT);
    await dir.lock(new VirtualScheduler());
    assert.equal(await dir.readAlive(), undefined);
    // Clock readings may be fractional (a drifting clock): whole milliseconds are kept.
    await dir.writeAlive({ atMs: 1_700_000_000_123.75, contactMs: 1_699_999_999_000.5 });
    mem.crash();
    assert.deepEqual(await dir.readAlive(), { atMs: 1_700_000_000_123, contactMs: 1_699_999_999_000 });
    const p = `${ROOT}/alive`;
    const text = (await mem.readFile(p)).toString("utf8");
    mem.corruptByte(p, text.indexOf('"atMs":1') + 8, 0x01); // a digit changes: still valid JSON
    await assert.rejects(dir.readAlive(), /alive is damaged \(checksum mismatch\).*grace period/);
  });

  test("a second lock of the directory is refused while the first is held, after a short wait", async () => {
    const mem = new MemoryFileSystem();
    const sched = new VirtualScheduler();
    const release = await new DataDir(mem, ROOT).lock(sched);
    const start = sched.now();
    await assert.rejects(sched.runUntilSettled(new DataDir(mem, ROOT).lock(sched), 5000), {
      code: "ERR_LOCKED",
    });
    assert.ok(sched.now() - start >= 1000, "it waited for a holder that was going away");
    // A holder that lets go within the wait (a process the kernel is still tearing down): taken.
    const second = new DataDir(mem, ROOT).lock(sched);
    sched.after(200, () => void release());
    await (await sched.runUntilSettled(second, 5000))();
  });

  test("the identity format round-trips and refuses another format", async () => {
    const mem = new MemoryFileSystem();
    const dir = new DataDir(mem, ROOT);
    await dir.lock(new VirtualScheduler());
    await dir.writeIdentity(identity("n1.x"));
    assert.deepEqual(await dir.readIdentity(), identity("n1.x"));
    const other = encodeIdentity(identity("n1.x")).replace('"version": 1', '"version": 2');
    const f = await mem.create(`${ROOT}/node.json.tmp`);
    await f.append(Buffer.from(other));
    await f.close();
    await mem.rename(`${ROOT}/node.json.tmp`, `${ROOT}/node.json`);
    await assert.rejects(dir.readIdentity(), /unknown identity file format/);
  });
});

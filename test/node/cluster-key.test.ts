/**
 * The cluster key file (src/node/cluster-key-file.ts), the choice of a node's key at start and its
 * watcher (src/node/cluster-key.ts), on a memory file system and virtual time:
 * - the format round-trips; damage is named with its line (a mistyped key fails its checksum), and a
 *   file that is not one, or holds too many keys, is refused;
 * - the key a start uses: the file given wins; else the data directory's; else a fresh one for a new
 *   cluster only; a joiner or a restarted node without one is refused with a sentence saying what to
 *   pass (and the two sentences differ);
 * - the watcher takes a changed file with usable keys, keeps the keys in use when a change cannot be
 *   used (and says so once), and ignores a rewrite with the same keys.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { chooseClusterKey, peerKeysOf, watchClusterKey } from "../../src/node/cluster-key.js";
import { decodeKeyFile, encodeKey, encodeKeyFile } from "../../src/node/cluster-key-file.js";
import { DataDir } from "../../src/node/data-dir.js";
import type { NodeIdentity } from "../../src/node/identity.js";
import { VirtualScheduler } from "../../src/runtime/virtual-runtime.js";
import { MemoryFileSystem } from "../../src/storage/fs/memory-file-system.js";
import { derivePeerKey, type PeerKeys } from "../../src/transport/peer-keys.js";

const A = Buffer.alloc(32, 0xa1);
const B = Buffer.alloc(32, 0xb2);

describe("the key file format", () => {
  test("round-trips a current key and an accepted one; comments and blank lines are ignored", () => {
    const text = encodeKeyFile({ current: A, accept: B });
    assert.match(text, /^# ringstore cluster key/);
    assert.match(
      text,
      /\nringstore-cluster-key 1\ncurrent rck1_[A-Za-z0-9_-]{48}\naccept rck1_[A-Za-z0-9_-]{48}\n$/,
    );
    const k = decodeKeyFile(`\n# a note\n${text}\n\n`, "f");
    assert.ok(Buffer.from(k.current).equals(A) && Buffer.from(k.accept!).equals(B));
    assert.equal(decodeKeyFile(encodeKeyFile({ current: A, accept: undefined }), "f").accept, undefined);
  });

  test("damage is refused, naming the file and the line", () => {
    const good = encodeKey(A);
    const typo = `${good.slice(0, 20)}${good[20] === "x" ? "y" : "x"}${good.slice(21)}`;
    const cases: [string, RegExp][] = [
      ["", /f: empty: no cluster key in it/],
      ["current abc\n", /f, line 1: not a cluster key file/],
      ["ringstore-cluster-key 2\n", /f, line 1: format 2 is not 1/],
      ["ringstore-cluster-key 1\n", /f: no current key/],
      [`ringstore-cluster-key 1\ncurrent ${typo}\n`, /f, line 2: the key's checksum does not match/],
      [`ringstore-cluster-key 1\ncurrent ${good.slice(0, 30)}\n`, /f, line 2: a key holds 36 bytes/],
      [`ringstore-cluster-key 1\ncurrent key1_abc\n`, /line 2: a key starts with rck1_/],
      [`ringstore-cluster-key 1\ncurrent ${good}\ncurrent ${good}\n`, /line 3: a second current key/],
      [
        `ringstore-cluster-key 1\ncurrent ${good}\naccept ${good}\naccept ${good}\n`,
        /line 4: a second accept key/,
      ],
      [`ringstore-cluster-key 1\nnext ${good}\n`, /line 2: expected "current KEY" or "accept KEY"/],
    ];
    for (const [text, re] of cases) assert.throws(() => decodeKeyFile(text, "f"), re, JSON.stringify(text));
  });
});

function identity(): NodeIdentity {
  return {
    nodeId: "n2",
    actor: "n2.00000001",
    clusterId: "c0ffee",
    clusterSecret: "c2VjcmV0",
    n: 3,
    r: 2,
    w: 2,
    partitions: 64,
    createdAt: new Date(0).toISOString(),
  };
}

describe("the key a node starts with", () => {
  const create = { kind: "create" } as const;
  const join = { kind: "join", seeds: ["p:1"] } as const;
  const rejoin = { kind: "rejoin", identity: identity(), renewActor: false, checkSeeds: [] } as const;
  const entropy = (n: number) => Buffer.alloc(n, 0xee);

  test("a new cluster without a key file makes one (written later, by the start); with one, uses it", async () => {
    const fs = new MemoryFileSystem();
    const dir = new DataDir(fs, "/d");
    const fresh = await chooseClusterKey(dir, undefined, create, "n1", entropy);
    assert.equal(fresh.fresh, true);
    assert.equal(fresh.path, "/d/cluster.key");
    assert.equal(await fs.exists("/d/cluster.key"), false, "nothing written by the choice");
    await fs.mkdirp("/etc");
    await (await fs.create("/etc/k")).append(Buffer.from(encodeKeyFile({ current: A, accept: undefined })));
    const given = await chooseClusterKey(dir, "/etc/k", create, "n1", entropy);
    assert.deepEqual(
      [given.fresh, given.path, Buffer.from(given.keys.current).equals(A)],
      [false, "/etc/k", true],
    );
  });

  test("the file given wins over the data directory's; the data directory's serves a restart", async () => {
    const fs = new MemoryFileSystem();
    const dir = new DataDir(fs, "/d");
    await fs.mkdirp("/d");
    await dir.writeClusterKey({ current: B, accept: undefined });
    await fs.mkdirp("/etc");
    await (await fs.create("/etc/k")).append(Buffer.from(encodeKeyFile({ current: A, accept: undefined })));
    for (const plan of [create, join, rejoin]) {
      assert.ok(
        Buffer.from((await chooseClusterKey(dir, "/etc/k", plan, "n2", entropy)).keys.current).equals(A),
      );
      const own = await chooseClusterKey(dir, undefined, plan, "n2", entropy);
      assert.deepEqual(
        [own.path, own.fresh, Buffer.from(own.keys.current).equals(B)],
        ["/d/cluster.key", false, true],
      );
    }
  });

  test("a joiner or a restarted node without a key is refused, each with its sentence; a missing file is named", async () => {
    const dir = new DataDir(new MemoryFileSystem(), "/d");
    await assert.rejects(chooseClusterKey(dir, undefined, join, "n2", entropy), {
      code: "ERR_CONFIG",
      message:
        /^no cluster key given: node n2 joins a cluster, .*pass --cluster-key-file F \(or set RINGSTORE_CLUSTER_KEY_FILE=F\)/,
    });
    await assert.rejects(chooseClusterKey(dir, undefined, rejoin, "n2", entropy), {
      code: "ERR_CONFIG",
      message:
        /^no cluster key given: node n2 belongs to cluster c0ffee, and only the node that created a cluster keeps its key in its data directory \(\/d\/cluster\.key\); pass --cluster-key-file F/,
    });
    await assert.rejects(chooseClusterKey(dir, "/nowhere/k", join, "n2", entropy), {
      message:
        /the cluster key file \/nowhere\/k \(--cluster-key-file or RINGSTORE_CLUSTER_KEY_FILE\) does not exist/,
    });
  });
});

describe("the key file watcher", () => {
  test("takes usable changes, keeps the keys in use on a bad one (said once), ignores a rewrite of the same keys", async () => {
    const fs = new MemoryFileSystem();
    const sched = new VirtualScheduler();
    await fs.mkdirp("/d");
    const dir = new DataDir(fs, "/d");
    await dir.writeClusterKey({ current: A, accept: undefined });
    const taken: PeerKeys[] = [];
    const errors: string[] = [];
    const stop = watchClusterKey({
      fs,
      timers: sched,
      file: dir.clusterKeyFile,
      keys: peerKeysOf({ current: A, accept: undefined }),
      onChange: (k) => taken.push(k),
      onError: (m) => errors.push(m),
      intervalMs: 100,
    });
    await sched.runFor(300);
    assert.equal(taken.length, 0, "the file read at start is not a change");
    await dir.writeClusterKey({ current: A, accept: B });
    await sched.runFor(150);
    assert.deepEqual(
      taken.map((k) => k.accepted.map((x) => x.id)),
      [[derivePeerKey(A).id, derivePeerKey(B).id]],
    );
    await fs.unlink(dir.clusterKeyFile);
    await (await fs.create(dir.clusterKeyFile)).append(
      Buffer.from("ringstore-cluster-key 1\ncurrent rck1_broken\n"),
    );
    await sched.runFor(500);
    assert.equal(errors.length, 1, errors.join("\n"));
    assert.match(
      errors[0]!,
      /the changed cluster key file is not used, the keys in use stay \(key [0-9a-f]{16}, also accepting/,
    );
    await dir.writeClusterKey({ current: B, accept: A });
    await sched.runFor(150);
    assert.equal(taken.at(-1)?.current.id, derivePeerKey(B).id);
    await dir.writeClusterKey({ current: B, accept: A }); // rewritten, same keys
    await sched.runFor(300);
    assert.equal(taken.length, 2);
    stop();
  });
});

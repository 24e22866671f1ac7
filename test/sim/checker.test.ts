/**
 * The checkers (src/sim/checker.ts) on hand-made histories: each must pass a correct history and must
 * catch the anomaly it exists for, so that a passing simulation means something.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  ancestors,
  checkAcknowledgedAdds,
  checkAcknowledgedWrites,
  checkHintedHandoff,
  checkHistory,
  checkHistoryShape,
  checkHistoryWithoutRepair,
  checkNoPhantoms,
  checkNoResurrection,
  checkReplicasAgree,
  checkSiblingsConcurrent,
  checkUniqueDots,
} from "../../src/sim/checker.js";
import type { FinalSibling, History, Outcome, WriteRecord } from "../../src/sim/history.js";

const K = "cart:1";

let clock = 0;
function write(
  id: string,
  kind: WriteRecord["kind"],
  o: {
    element?: string;
    observed?: string[];
    observedItems?: string[];
    items?: string[];
    outcome?: Outcome;
    key?: string;
  } = {},
): WriteRecord {
  clock += 10;
  const observedItems = o.observedItems ?? [];
  const items =
    o.items ??
    (kind === "add"
      ? [...new Set([...observedItems, o.element!])].sort()
      : kind === "remove"
        ? observedItems.filter((x) => x !== o.element)
        : kind === "blind"
          ? [`b-${id}`]
          : undefined);
  return {
    id,
    client: "c1",
    key: o.key ?? K,
    kind,
    element: o.element,
    observed: o.observed ?? [],
    observedItems,
    items,
    outcome: o.outcome ?? "ok",
    invokedAt: clock,
    completedAt: clock + 5,
  };
}

const sib = (w: string | undefined, items: string[], dot?: string, deleted = false): FinalSibling => ({
  w,
  items,
  deleted,
  dot: dot ?? (w === undefined ? undefined : `1@${w}`),
});

function history(
  writes: WriteRecord[],
  replicas: Record<string, FinalSibling[]>,
  key = K,
  more: [string, Record<string, FinalSibling[]>][] = [],
): History {
  const keys = new Map<string, Map<string, FinalSibling[]>>();
  keys.set(key, new Map(Object.entries(replicas)));
  for (const [k, r] of more) keys.set(k, new Map(Object.entries(r)));
  return { writes, final: { keys } };
}

/** The same siblings at three replicas. */
const everywhere = (sibs: FinalSibling[]) => ({ n1: sibs, n2: sibs, n3: sibs });

// A correct little history: two concurrent adds, then an add that read both (merging them), then a remove.
const a1 = write("a1", "add", { element: "e1" });
const a2 = write("a2", "add", { element: "e2" });
const a3 = write("a3", "add", {
  element: "e3",
  observed: ["a1", "a2"],
  observedItems: ["e1", "e2"],
});
const r1 = write("r1", "remove", { element: "e1", observed: ["a3"], observedItems: ["e1", "e2", "e3"] });
const good = history([a1, a2, a3, r1], everywhere([sib("r1", ["e2", "e3"])]));

describe("checkers on a correct history", () => {
  test("every checker passes", () => {
    assert.deepEqual(checkHistory(good, { tombstonesNamed: true }), []);
    assert.deepEqual(checkHistory(good), []);
  });

  test("ancestors follow observed lists transitively", () => {
    assert.deepEqual([...ancestors("r1", good)].sort(), ["a1", "a2", "a3"]);
    assert.deepEqual([...ancestors("a1", good)], []);
  });

  test("concurrent siblings are fine, and their union holds every add", () => {
    const h = history([a1, a2], everywhere([sib("a1", ["e1"]), sib("a2", ["e2"])]));
    assert.deepEqual(checkHistory(h, { tombstonesNamed: true }), []);
  });

  test("unknown and failed writes need not survive", () => {
    const u = write("u", "add", { element: "eu", outcome: "unknown" });
    const f = write("f", "blind", { outcome: "failed" });
    const h = history([a1, u, f], everywhere([sib("a1", ["e1"])]));
    assert.deepEqual(checkHistory(h), []);
  });
});

describe("1. acknowledged adds", () => {
  test("catches an acknowledged add missing from the final value", () => {
    // a3's element e3 vanished: the final value is a2's alone.
    const h = history([a1, a2, a3], everywhere([sib("a2", ["e2"])]));
    const found = checkAcknowledgedAdds(h);
    assert.ok(
      found.some((a) => a.message.includes("e3")),
      JSON.stringify(found),
    );
    assert.ok(found.every((a) => a.checker === "acknowledged-adds"));
  });

  test("catches it at one replica only", () => {
    const h = history([a1], { n1: [sib("a1", ["e1"])], n2: [sib("a1", ["e1"])], n3: [] });
    const found = checkAcknowledgedAdds(h);
    assert.equal(found.length, 1);
    assert.match(found[0]!.message, /n3/);
  });

  test("an applied (or maybe applied) remove that saw the element excuses it", () => {
    for (const outcome of ["ok", "unknown"] as const) {
      const r = write("r", "remove", { element: "e1", observed: ["a1"], observedItems: ["e1"], outcome });
      const h = history([a1, r], everywhere(outcome === "ok" ? [sib("r", [])] : []));
      assert.deepEqual(checkAcknowledgedAdds(h), [], outcome);
    }
  });

  test("a failed remove, or one that never saw the element, does not", () => {
    const failed = write("rf", "remove", {
      element: "e1",
      observed: ["a1"],
      observedItems: ["e1"],
      outcome: "failed",
    });
    const blindRemove = write("rb", "remove", { element: "e1", observed: [], observedItems: [] });
    for (const r of [failed, blindRemove]) {
      const h = history([a1, r], everywhere([]));
      assert.equal(checkAcknowledgedAdds(h).length, 1, r.id);
    }
  });

  test("a delete that saw the element excuses it", () => {
    const d = write("d", "delete", { observed: ["a1"], observedItems: ["e1"] });
    const h = history([a1, d], everywhere([sib("d", [], "1@d", true)]));
    assert.deepEqual(checkAcknowledgedAdds(h), []);
  });

  test("a key absent from the final state loses its adds", () => {
    const h = history([a1], {}, "other");
    assert.equal(checkAcknowledgedAdds(h).length, 1);
  });
});

describe("2. acknowledged writes", () => {
  test("catches an acknowledged blind write that vanished", () => {
    const b = write("b", "blind");
    const h = history([a1, b], everywhere([sib("a1", ["e1"])]));
    const found = checkAcknowledgedWrites(h);
    assert.equal(found.length, 1);
    assert.match(found[0]!.message, /blind b/);
  });

  test("a write survives as an ancestor of a final sibling", () => {
    const b = write("b", "blind");
    const a = write("a", "add", { element: "x", observed: ["b"], observedItems: ["b-b"] });
    const h = history([b, a], everywhere([sib("a", ["b-b", "x"])]));
    assert.deepEqual(checkAcknowledgedWrites(h), []);
  });

  test("named tombstones: a delete must be a final sibling or an ancestor of one", () => {
    const d = write("d", "delete", { observed: ["a1"], observedItems: ["e1"] });
    const kept = history([a1, d], everywhere([sib("d", [], "2@x", true)]));
    assert.deepEqual(checkAcknowledgedWrites(kept, { tombstonesNamed: true }), []);
    const after = write("a9", "add", { element: "e9", observed: ["d"], observedItems: [] });
    const superseded = history([a1, d, after], everywhere([sib("a9", ["e9"])]));
    assert.deepEqual(checkAcknowledgedWrites(superseded, { tombstonesNamed: true }), []);
    // Lost: neither there nor followed (a concurrent add is all that remains).
    const c = write("c", "add", { element: "ec" });
    const lost = history([a1, d, c], everywhere([sib("c", ["ec"])]));
    const found = checkAcknowledgedWrites(lost, { tombstonesNamed: true });
    assert.deepEqual(found.map((a) => a.message.split(" ").slice(0, 2).join(" ")).sort(), [
      "add a1", // superseded by nothing that remains: lost with the delete
      "delete d",
    ]);
  });

  test("unnamed tombstones: a delete holds while what it superseded stays gone", () => {
    const d = write("d", "delete", { observed: ["a1"], observedItems: ["e1"] });
    // A later add read only the (unnamed) tombstone: it observed nothing it could name.
    const after = write("a9", "add", { element: "e9", observed: [], observedItems: [] });
    const fine = history([a1, d, after], everywhere([sib("a9", ["e9"])]));
    assert.deepEqual(checkAcknowledgedWrites(fine), []);
    const tomb = history([a1, d], everywhere([sib(undefined, [], "2@x", true)]));
    assert.deepEqual(checkAcknowledgedWrites(tomb), []);
    // a1 is back (or never left): the delete was lost.
    const lost = history([a1, d], everywhere([sib("a1", ["e1"])]));
    const found = checkAcknowledgedWrites(lost);
    assert.equal(found.length, 1);
    assert.match(found[0]!.message, /delete d .* still there: a1/);
  });
});

describe("3. replicas agree", () => {
  test("catches replicas holding different versions", () => {
    const h = history([a1, a2], {
      n1: [sib("a1", ["e1"]), sib("a2", ["e2"])],
      n2: [sib("a1", ["e1"]), sib("a2", ["e2"])],
      n3: [sib("a1", ["e1"])],
    });
    const found = checkReplicasAgree(h);
    assert.equal(found.length, 1);
    assert.match(found[0]!.message, /n3/);
  });

  test("compares dots: the same write under two dots is a disagreement", () => {
    const h = history([a1], { n1: [sib("a1", ["e1"], "1@A")], n2: [sib("a1", ["e1"], "2@A")] });
    assert.equal(checkReplicasAgree(h).length, 1);
  });

  test("an empty replica disagrees with a full one", () => {
    const h = history([a1], { n1: [sib("a1", ["e1"])], n2: [] });
    assert.equal(checkReplicasAgree(h).length, 1);
  });
});

describe("4. siblings are concurrent", () => {
  test("catches a sibling that an other sibling followed", () => {
    // a3 read a1 and a2; a1 should be gone, yet it sits next to a3.
    const h = history([a1, a2, a3], everywhere([sib("a1", ["e1"]), sib("a3", ["e1", "e2", "e3"])]));
    const found = checkSiblingsConcurrent(h);
    assert.equal(found.length, 3); // once per replica
    assert.match(found[0]!.message, /a3 causally follows siblings a1/);
  });

  test("catches one write applied twice (two dots)", () => {
    const h = history([a1], everywhere([sib("a1", ["e1"], "1@A"), sib("a1", ["e1"], "2@A")]));
    const found = checkSiblingsConcurrent(h);
    assert.equal(found.length, 3);
    assert.match(found[0]!.message, /appears as 2 siblings/);
  });
});

describe("5. no phantoms, and the history's shape", () => {
  test("catches a failed write that was applied, an unknown write id, and wrong items", () => {
    const f = write("f", "blind", { outcome: "failed" });
    const h = history(
      [a1, f],
      everywhere([sib("f", ["b-f"]), sib("zz", ["?"]), sib("a1", ["e1", "extra"], "3@A")]),
    );
    const found = checkNoPhantoms(h).filter((a) => a.message.includes("n1"));
    assert.equal(found.length, 3);
  });

  test("catches a repeated write id and a cross-key observation", () => {
    const x = write("a1", "blind");
    const y = write("y", "add", { element: "ey", observed: ["a1"], key: "cart:2" });
    const found = checkHistoryShape(history([a1, x, y], everywhere([])));
    assert.equal(found.length, 2);
  });
});

describe("6. unique dots", () => {
  const withDot = (w: WriteRecord, dot: string): WriteRecord => ({ ...w, dot });

  test("distinct dots, and final siblings holding the writes acknowledged under them, pass", () => {
    const b1 = withDot(write("b1", "blind"), "1@A");
    const b2 = withDot(write("b2", "blind"), "2@A");
    const h = history([b1, b2], everywhere([sib("b1", ["b-b1"], "1@A"), sib("b2", ["b-b2"], "2@A")]));
    assert.deepEqual(checkUniqueDots(h), []);
  });

  test("catches two acknowledged writes under one dot", () => {
    const b1 = withDot(write("b1", "blind"), "1@A");
    const b2 = withDot(write("b2", "blind"), "1@A");
    const found = checkUniqueDots(history([b1, b2], everywhere([sib("b1", ["b-b1"], "1@A")])));
    assert.ok(found.some((a) => /b1 and b2 were both acknowledged as version 1@A/.test(a.message)));
  });

  test("catches a replica whose version under an acknowledged dot holds another write", () => {
    const b1 = withDot(write("b1", "blind"), "1@A");
    const b2 = write("b2", "blind", { outcome: "unknown" });
    const h = history([b1, b2], { n1: [sib("b1", ["b-b1"], "1@A")], n2: [sib("b2", ["b-b2"], "1@A")] });
    const found = checkUniqueDots(h);
    assert.equal(found.length, 1);
    assert.match(found[0]!.message, /version 1@A at n2 holds write b2, but write b1 was acknowledged as 1@A/);
  });

  test("writes without a recorded dot (the HTTP suite) give it nothing to judge", () => {
    assert.deepEqual(checkUniqueDots(good), []);
  });
});

describe("7. hinted handoff delivered (every acknowledged write on all N primaries)", () => {
  const withDot = (w: WriteRecord, dot: string): WriteRecord => ({ ...w, dot });
  const at = (
    w: string,
    items: string[],
    dot: string,
    context: Record<string, number> = {},
    deleted = false,
  ): FinalSibling => ({ w, items, deleted, dot, context });
  // b1 (1@A) acknowledged; b2 (1@B) read it and superseded it (its context covers 1@A).
  const b1 = withDot(write("b1", "blind"), "1@A");
  const b2 = withDot(write("b2", "add", { element: "e", observed: ["b1"], observedItems: ["b-b1"] }), "1@B");

  test("a write held at every primary, by its dot or by a sibling whose context covers it, passes", () => {
    const h = history([b1, b2], {
      n1: [at("b1", ["b-b1"], "1@A"), at("x", ["x"], "1@C")],
      n2: [at("b2", ["b-b1", "e"], "1@B", { A: 1 })],
      n3: [at("b2", ["b-b1", "e"], "1@B", { A: 3 })],
    });
    // b2 itself is missing from n1: it is acknowledged too.
    const found = checkHintedHandoff(h);
    assert.equal(found.length, 1);
    assert.match(found[0]!.message, /add b2 \(acknowledged at \d+ ms as version 1@B\) is not on primary n1/);
  });

  test("catches a write missing from a primary, naming every primary that lacks it", () => {
    const h = history([b1], { n1: [at("b1", ["b-b1"], "1@A")], n2: [], n3: [at("y", ["y"], "2@A")] });
    const found = checkHintedHandoff(h);
    assert.equal(found.length, 1);
    assert.equal(found[0]!.checker, "hinted-handoff");
    // 2@A is another version of the same actor, not one that superseded 1@A: no context covers it.
    assert.match(found[0]!.message, /blind b1 .* is not on primaries n2, n3/);
  });

  test("a context covering a lower counter of the actor does not cover the write", () => {
    const b = withDot(write("b", "blind"), "2@A");
    const h = history([b], everywhere([at("z", ["z"], "1@Z", { A: 1 })]));
    assert.equal(checkHintedHandoff(h).length, 1);
  });

  test("a tombstone that superseded the write holds it", () => {
    const d = withDot(write("d", "delete", { observed: ["b1"], observedItems: ["b-b1"] }), "1@D");
    const h = history([b1, d], everywhere([at("d", [], "1@D", { A: 1 }, true)]));
    assert.deepEqual(checkHintedHandoff(h), []);
  });

  test("unknown and failed writes, and writes without a dot, are not judged", () => {
    const u = withDot(write("u", "blind", { outcome: "unknown" }), "5@A");
    const f = withDot(write("f", "blind", { outcome: "failed" }), "6@A");
    const nodot = write("n", "blind");
    assert.deepEqual(checkHintedHandoff(history([u, f, nodot], everywhere([]))), []);
  });

  test("a copy the caller excuses is not reported; the others are", () => {
    const h = history([b1], { n1: [at("b1", ["b-b1"], "1@A")], n2: [], n3: [] });
    const asked: string[] = [];
    const found = checkHintedHandoff(h, (w, primary) => {
      asked.push(`${w.id}@${primary}`);
      return primary === "n2" ? "its coordinator crashed" : undefined;
    });
    assert.deepEqual(asked, ["b1@n2", "b1@n3"]);
    assert.equal(found.length, 1);
    assert.match(found[0]!.message, /is not on primary n3:/);
  });

  test("without repair, replicas may disagree; the per-replica checkers still run", () => {
    // b3 (unknown) reached n1 only; b1 is everywhere: no anomaly, though the replicas differ.
    const b3 = withDot(write("b3", "blind", { outcome: "unknown" }), "2@A");
    const h = history([b1, b3], {
      n1: [at("b1", ["b-b1"], "1@A"), at("b3", ["b-b3"], "2@A")],
      n2: [at("b1", ["b-b1"], "1@A")],
      n3: [at("b1", ["b-b1"], "1@A")],
    });
    assert.deepEqual(checkHistoryWithoutRepair(h), []);
    assert.ok(checkReplicasAgree(h).length > 0);
    // A phantom is still caught.
    const phantom = history([b1], everywhere([at("b1", ["b-b1"], "1@A"), at("nobody", ["?"], "9@Q")]));
    assert.ok(checkHistoryWithoutRepair(phantom).some((a) => a.checker === "no-phantoms"));
  });
});

describe("deletes stay deleted, tombstones may be purged", () => {
  // v1 then v2 (which read v1), then a delete that read v2: it follows every write of the key.
  const v1 = write("v1", "add", { element: "x" });
  const v2 = write("v2", "add", { element: "y", observed: ["v1"], observedItems: ["x"] });
  const d = write("d", "delete", { observed: ["v2"], observedItems: ["x", "y"] });
  const tomb = sib("d", [], "3@n1", true);

  test("the delete's tombstone, or nothing once it is purged: both pass with purging on", () => {
    assert.deepEqual(checkHistory(history([v1, v2, d], everywhere([tomb])), { tombstonesNamed: true }), []);
    const purged = history([v1, v2, d], everywhere([]));
    assert.deepEqual(checkHistory(purged, { tombstonesNamed: true, tombstonesPurged: true }), []);
    // Without purging, a named tombstone that vanished is a lost delete.
    assert.ok(
      checkAcknowledgedWrites(purged, { tombstonesNamed: true }).some((a) => a.message.includes("delete d")),
    );
  });

  test("no-resurrection: a version the delete superseded, back after the purge, is caught", () => {
    const back = history([v1, v2, d], { n1: [sib("v2", ["x", "y"])], n2: [], n3: [] });
    const found = checkNoResurrection(back);
    assert.equal(found.length, 1, JSON.stringify(found));
    assert.match(
      found[0]!.message,
      /delete d .* followed every write of the key, yet n1 holds live version v2/,
    );
    // The purge-aware rule of checker 2 sees it too: what the delete superseded is still there.
    assert.ok(
      checkAcknowledgedWrites(back, { tombstonesNamed: true, tombstonesPurged: true }).some((a) =>
        a.message.includes("delete d"),
      ),
    );
  });

  test("no-resurrection judges only a delete that followed every write that may have been applied", () => {
    // An unknown write the delete did not see may legitimately survive beside (or after) it.
    const u = write("u", "blind", { outcome: "unknown" });
    const h = history([v1, v2, d, u], everywhere([tomb, sib("u", ["b-u"])]));
    assert.deepEqual(checkNoResurrection(h), []);
    // A write after the delete, that read it, makes the key live again: nothing to judge.
    const again = write("v3", "add", { element: "z", observed: ["d"] });
    assert.deepEqual(checkNoResurrection(history([v1, v2, d, again], everywhere([sib("v3", ["z"])]))), []);
  });

  test("with purging, a purged delete hides its ancestors only where none of them came back", () => {
    // v1 lost at n3 while the delete's tombstone is gone: fine, the delete superseded it.
    const h = history([v1, v2, d], { n1: [], n2: [], n3: [] });
    assert.deepEqual(checkAcknowledgedWrites(h, { tombstonesNamed: true, tombstonesPurged: true }), []);
    // A blind write the delete did not see, lost: still reported.
    const b = write("b", "blind");
    const lost = history([v1, v2, d, b], { n1: [], n2: [], n3: [] });
    const found = checkAcknowledgedWrites(lost, { tombstonesNamed: true, tombstonesPurged: true });
    assert.ok(
      found.some((a) => a.message.includes("blind b")),
      JSON.stringify(found),
    );
  });
});

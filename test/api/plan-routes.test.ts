/**
 * `GET /cluster/plan` and `POST /cluster/weight`: their parameters are checked before anything is asked
 * of the node, a refusal is a 409 with its reason, and the node's answer is passed on as it is.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import type { Plan, RingChange } from "../../src/ring/plan.js";
import { withServer } from "./api-support.js";

test("plan: the change is parsed and passed on; bad parameters are 400, a refusal 409", async () => {
  const asked: RingChange[] = [];
  const plan = async (change: RingChange) => {
    asked.push(change);
    return change.id === "zz"
      ? { refused: "zz is not in the ring" }
      : ({ moves: [], keys: 7 } as unknown as Plan);
  };
  await withServer({ deps: { plan } }, async (port) => {
    const get = (q: string) => fetch(`http://127.0.0.1:${port}/cluster/plan${q}`);
    const ok = await get("?change=join&id=d&weight=2&zone=z1");
    assert.equal(ok.status, 200);
    assert.deepEqual(await ok.json(), { moves: [], keys: 7 });
    assert.equal((await get("?change=leave&id=b")).status, 200);
    assert.equal((await get("?change=weight&id=b&weight=5")).status, 200);
    const refused = await get("?change=remove&id=zz");
    assert.equal(refused.status, 409);
    assert.equal(((await refused.json()) as { error: string }).error, "plan_refused");
    for (const q of [
      "",
      "?change=join",
      "?change=grow&id=d",
      "?change=weight&id=d",
      "?change=join&id=d&weight=0",
      "?change=join&id=d&weight=x",
    ])
      assert.equal((await get(q)).status, 400, q);
  });
  assert.deepEqual(asked, [
    { kind: "join", id: "d", weight: 2, zone: "z1" },
    { kind: "leave", id: "b" },
    { kind: "weight", id: "b", weight: 5 },
    { kind: "remove", id: "zz" },
  ]);
});

test("weight: POST only, a weight 1..1000, the node's refusal is 409", async () => {
  const calls: [string | undefined, number][] = [];
  const setWeight = async (id: string | undefined, weight: number) => {
    calls.push([id, weight]);
    return id === "b" ? { refused: "this is a: send it to b" } : { node: "a", weight, was: 1 };
  };
  await withServer({ deps: { setWeight } }, async (port) => {
    const post = (q: string) => fetch(`http://127.0.0.1:${port}/cluster/weight${q}`, { method: "POST" });
    const ok = await post("?weight=3");
    assert.equal(ok.status, 200);
    assert.deepEqual(await ok.json(), { node: "a", weight: 3, was: 1 });
    assert.equal((await post("?weight=2&id=a")).status, 200);
    assert.equal((await post("?weight=2&id=b")).status, 409);
    for (const q of ["", "?weight=0", "?weight=1001", "?weight=1.5", "?weight=2&id="])
      assert.equal((await post(q)).status, 400, q);
    assert.equal((await fetch(`http://127.0.0.1:${port}/cluster/weight?weight=2`)).status, 405);
  });
  assert.deepEqual(calls, [
    [undefined, 3],
    ["a", 2],
    ["b", 2],
  ]);
});

/**
 * The claimant's rules for departures (src/membership/departure.ts), as a pure function of a view, the
 * approvals it holds and the time.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  type ClaimantView,
  checkLeave,
  checkRemove,
  DEPARTURE_APPROVAL_MS,
  decideDeparture,
} from "../../src/membership/departure.js";
import type { MemberView } from "../../src/transport/messages.js";

function member(id: string, status: MemberView["status"] = "up"): MemberView {
  return {
    id,
    api: `api:${id}`,
    peer: `peer:${id}`,
    weight: 1,
    zone: undefined,
    status,
    incarnation: 1,
    heartbeat: 1,
  };
}

/** A view as `self` sees it: these members, all up and alive unless listed in `down`. */
function view(self: string, members: MemberView[], n = 3, down: string[] = []): ClaimantView {
  const byId = new Map(members.map((m) => [m.id, m]));
  const up = members.filter((m) => m.status === "up" && !down.includes(m.id)).map((m) => m.id);
  return { selfId: self, claimant: [...up].sort()[0], member: (id) => byId.get(id), upAndAlive: up, n };
}

const five = () => ["a", "b", "c", "d", "e"].map((id) => member(id));

describe("decideDeparture", () => {
  test("the claimant approves a departure that leaves at least N members, and remembers it", () => {
    const out = decideDeparture(view("a", five()), new Map(), { id: "c", how: "leave", force: false }, 1000);
    assert.deepEqual(out.verdict, { refused: null, retry: false, forceable: false, remaining: 4 });
    assert.equal(out.approvals.get("c"), 1000 + DEPARTURE_APPROVAL_MS);
  });

  test("approved departures count: the next one that would leave fewer than N is refused, forceably", () => {
    let approvals = new Map<string, number>();
    const v = view("a", five());
    for (const id of ["b", "c"]) {
      const out = decideDeparture(v, approvals, { id, how: "leave", force: false }, 0);
      assert.equal(out.verdict.refused, null, id);
      approvals = out.approvals;
    }
    const third = decideDeparture(v, approvals, { id: "d", how: "remove", force: false }, 0);
    assert.match(
      third.verdict.refused ?? "",
      /after this removal the cluster would have 2 member\(s\), fewer than N=3 \(counting the departure of b, c/,
    );
    assert.equal(third.verdict.forceable, true);
    assert.equal(third.verdict.retry, false);
    assert.equal(third.approvals.has("d"), false);
    // Forced, it passes; and an approval lapses after DEPARTURE_APPROVAL_MS.
    assert.equal(
      decideDeparture(v, approvals, { id: "d", how: "remove", force: true }, 0).verdict.refused,
      null,
    );
    assert.equal(
      decideDeparture(v, approvals, { id: "d", how: "remove", force: false }, DEPARTURE_APPROVAL_MS).verdict
        .refused,
      null,
    );
  });

  test("an approval ends once the member's own status moved on (it shows in the count instead)", () => {
    const members = five();
    const approvals = new Map([["b", 10_000]]);
    members[1] = member("b", "leaving");
    const out = decideDeparture(view("a", members), approvals, { id: "c", how: "leave", force: false }, 0);
    assert.equal(out.approvals.has("b"), false);
    assert.equal(out.verdict.remaining, 3);
  });

  test("a node that is not the claimant says try again", () => {
    const out = decideDeparture(view("b", five()), new Map(), { id: "c", how: "leave", force: false }, 0);
    assert.equal(out.verdict.retry, true);
    assert.match(out.verdict.refused ?? "", /^b is not the claimant \(a is, as b sees the cluster\)/);
  });

  test("the claimant's own leave waits while departures it approved have not started", () => {
    const approvals = new Map([["c", 10_000]]);
    const out = decideDeparture(view("a", five()), approvals, { id: "a", how: "leave", force: false }, 0);
    assert.equal(out.verdict.retry, true);
    assert.match(out.verdict.refused ?? "", /approved the departure of c, which has not started yet/);
  });

  test("unknown, departed, and last-member departures are refused for good", () => {
    const members = [member("a"), member("b"), member("x", "left")];
    const v = view("a", members);
    const ask = (id: string, force = true) =>
      decideDeparture(v, new Map(), { id, how: "remove", force }, 0).verdict;
    assert.match(ask("zz").refused ?? "", /no member zz/);
    assert.match(ask("x").refused ?? "", /member x has already left/);
    const alone = view("a", [member("a"), member("b", "leaving")]);
    const last = decideDeparture(alone, new Map(), { id: "a", how: "leave", force: true }, 0).verdict;
    assert.match(last.refused ?? "", /no other member would remain up/);
    assert.equal(last.forceable, false);
  });

  test("at most three pending departures are named", () => {
    const members = ["a", "b", "c", "d", "e", "f", "g", "h"].map((id) => member(id));
    const approvals = new Map(["b", "c", "d", "e", "f"].map((id) => [id, 10_000]));
    const out = decideDeparture(view("a", members, 5), approvals, { id: "g", how: "leave", force: false }, 0);
    assert.match(out.verdict.refused ?? "", /counting the departure of b, c, d and 2 more/);
  });
});

describe("the asked node's own checks", () => {
  test("leave: left, already leaving, alone, joining, below N", () => {
    assert.match(
      (checkLeave(member("a", "left"), 3, 3, false) as { message: string }).message,
      /already left/,
    );
    assert.equal(checkLeave(member("a", "leaving"), 3, 3, false), "already");
    assert.match(
      (checkLeave(member("a"), 0, 3, true) as { message: string }).message,
      /no other member is up/,
    );
    assert.match(
      (checkLeave(member("a", "joining"), 3, 3, false) as { message: string }).message,
      /still joining/,
    );
    assert.match(
      (checkLeave(member("a"), 2, 3, false) as { message: string }).message,
      /fewer than N=3.*--force/,
    );
    assert.equal(checkLeave(member("a"), 2, 3, true), undefined);
    assert.equal(checkLeave(member("a"), 3, 3, false), undefined);
  });

  test("remove: itself, unknown, left, not down (before and after asking), below N", () => {
    const msg = (r: ReturnType<typeof checkRemove>) => r?.message ?? "";
    assert.match(msg(checkRemove("a", member("a"), "a", "up", 3, 3, true)), /does not remove itself/);
    assert.match(msg(checkRemove("a", undefined, "z", "down", 3, 3, true)), /no member z/);
    assert.match(msg(checkRemove("a", member("b", "left"), "b", "down", 3, 3, true)), /already left/);
    assert.match(msg(checkRemove("a", member("b"), "b", "suspect", 3, 3, false)), /is suspect, not down/);
    assert.match(msg(checkRemove("a", member("b"), "b", "up", 3, 3, false, true)), /is up again, not down/);
    assert.match(msg(checkRemove("a", member("b"), "b", "down", 2, 3, false)), /fewer than N=3/);
    assert.equal(checkRemove("a", member("b"), "b", "down", 2, 3, false, true), undefined);
    assert.equal(checkRemove("a", member("b"), "b", "up", 2, 3, true), undefined);
  });
});

/**
 * Absences' own contact bookkeeping: when a node cut off for longer than the tombstone grace period is
 * unsure of its membership, and what makes it sure again (node/absences.ts).
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Absences } from "../../src/node/absences.js";
import { memberView } from "../support/member-views.js";

const GRACE = 10_000;
const view = ["a", "b", "c"].map((id) => memberView(id, "up"));

describe("Absences: a node cut off for longer than the grace period", () => {
  test("is sure while in contact, and unsure once a sample finds it cut off past the grace period", () => {
    const a = new Absences(view, 0, 0, GRACE);
    a.sample(true, 1000);
    a.sample(false, 5000);
    assert.equal(a.unsureSince, undefined);
    assert.equal(a.cutOffTooLong(5000), false);
    a.sample(false, 11_001);
    assert.equal(a.unsureSince, 11_001);
    assert.equal(a.cutOffTooLong(11_001), true);
  });

  test("stays unsure when contact resumes, and keeps saving its old contact (a restart stays unsure)", () => {
    const a = new Absences(view, 0, 0, GRACE);
    a.sample(false, 20_000);
    a.sample(true, 21_000);
    assert.equal(a.cutOffFor(21_000), 0);
    assert.equal(a.unsureSince, 20_000);
    assert.equal(a.cutOffTooLong(21_000), true, "cut off too long although in contact again");
    assert.equal(a.lastContactAtMs, 0, "the contact saved is the one before it became unsure");
    const restarted = new Absences(view, a.lastContactAtMs, 22_000, GRACE);
    assert.equal(restarted.unsureSince, 22_000);
  });

  test("is sure again once an exchange of its own completed with every member up (and in contact from then on)", () => {
    const a = new Absences(view, 0, 20_000, GRACE);
    assert.equal(a.unsureSince, 20_000, "unsure from the start: its last contact is too old");
    a.sample(true, 21_000);
    assert.deepEqual(a.settle(["b", "c"], 2, undefined), ["b", "c"]);
    a.exchanged("b");
    assert.deepEqual(a.settle(["b", "c"], 2, undefined), ["c"]);
    a.exchanged("c");
    assert.equal(a.settle(["b", "c"], 2, undefined), undefined);
    assert.equal(a.unsureSince, undefined);
    assert.equal(a.lastContactAtMs, 21_000);
    assert.equal(a.cutOffTooLong(21_500), false);
  });

  test("stays unsure while no other member is up, or while a claim that it left waits for its approver", () => {
    const a = new Absences(view, 0, 20_000, GRACE);
    assert.deepEqual(a.settle([], 2, undefined), [], "nobody up: nobody to hear from, still unsure");
    a.exchanged("b");
    a.exchanged("c");
    assert.deepEqual(a.settle(["b", "c"], 2, 20_500), [], "a claim of its removal heard since");
    assert.equal(a.unsureSince, 20_000);
    assert.equal(a.settle(["b", "c"], 2, 19_000), undefined, "a claim from before it became unsure");
  });

  test("exchanges before it became unsure do not count", () => {
    const a = new Absences(view, 0, 0, GRACE);
    a.exchanged("b");
    a.exchanged("c");
    a.sample(false, 30_000);
    assert.deepEqual(a.settle(["b", "c"], 2, undefined), ["b", "c"]);
  });

  test("alone (no other member that has not left), it is sure at once; without purging, never unsure", () => {
    const alone = new Absences(view, 0, 20_000, GRACE);
    assert.equal(alone.settle([], 0, undefined), undefined);
    const noPurge = new Absences(view, 0, 1_000_000, undefined);
    noPurge.sample(false, 2_000_000);
    assert.equal(noPurge.unsureSince, undefined);
    assert.equal(noPurge.cutOffTooLong(2_000_000), false);
  });
});

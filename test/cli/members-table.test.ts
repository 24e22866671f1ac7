/**
 * `cluster status`'s members table (src/cli/cluster-commands.ts, membersTable): departed members (state
 * `left`) are listed only with --all; without it a line says how many are hidden.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { membersTable, type StatusMember } from "../../src/cli/cluster-commands.js";

const row = (id: string, state: string): StatusMember => ({
  id,
  state,
  api: `127.0.0.1:800${id.length}`,
  peer: `127.0.0.1:900${id.length}`,
  partitions: 8,
  weight: 1,
  zone: null,
});

test("departed members only with --all", () => {
  const members = [row("a", "up"), row("b", "left"), row("c", "down"), row("d", "left")];
  const plain = membersTable(members, false).split("\n");
  assert.deepEqual(
    plain.slice(1, -1).map((l) => l.split(/\s+/).slice(0, 2).join(" ")),
    ["a up", "c down"],
  );
  assert.equal(plain.at(-1), "(2 departed members not shown: --all shows them)");
  const all = membersTable(members, true).split("\n");
  assert.deepEqual(
    all.slice(1).map((l) => l.split(/\s+/)[0]),
    ["a", "b", "c", "d"],
  );
  assert.ok(!membersTable([row("a", "up")], false).includes("not shown"));
});

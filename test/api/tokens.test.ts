/**
 * API tokens (api/tokens.ts) and who may do what (api/access.ts): the token file keeps hashes only and
 * refuses damage; a token is accepted only whole and with its own secret; each route needs its role.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { checkAccess, requiredRole } from "../../src/api/access.js";
import {
  decodeTokenFile,
  encodeTokenFile,
  newToken,
  roleAllows,
  TokenFileError,
  TokenSet,
} from "../../src/api/tokens.js";

test("a new token is rs_<12 hex>_<43 base64url>; the file keeps its hash and salt, never the token", () => {
  const { token, entry } = newToken("write", "app", 0);
  assert.match(token, /^rs_[0-9a-f]{12}_[A-Za-z0-9_-]{43}$/);
  assert.equal(token.slice(3, 15), entry.id);
  const text = encodeTokenFile([entry]);
  assert.ok(!text.includes(token.slice(16)), "the secret is not in the file");
  assert.deepEqual(decodeTokenFile(text, "f"), [entry]);
  assert.equal(entry.createdAt, "1970-01-01T00:00:00.000Z");
  // Two tokens never share a salt or a hash.
  const other = newToken("write", "app", 0).entry;
  assert.notEqual(other.salt, entry.salt);
  assert.notEqual(other.sha256, entry.sha256);
});

test("a token is valid whole, with its own secret, and only while its entry is in the set", () => {
  const a = newToken("read", "", 0);
  const b = newToken("admin", "", 0);
  const set = new TokenSet([a.entry, b.entry]);
  assert.deepEqual(set.check(a.token), { kind: "valid", id: a.entry.id, role: "read" });
  assert.deepEqual(set.check(b.token), { kind: "valid", id: b.entry.id, role: "admin" });
  // a's id with b's secret; a mistyped secret; a truncated one; garbage; an empty string.
  const swapped = `rs_${a.entry.id}_${b.token.slice(16)}`;
  const typo = `${a.token.slice(0, -1)}${a.token.endsWith("A") ? "B" : "A"}`;
  for (const t of [swapped, typo, a.token.slice(0, -1), "hello", "", `${a.token} `])
    assert.deepEqual(set.check(t), { kind: "invalid" }, JSON.stringify(t));
  assert.deepEqual(new TokenSet([b.entry]).check(a.token), { kind: "invalid" }, "revoked");
});

test("a damaged or foreign token file is refused with a sentence naming it", () => {
  const { entry } = newToken("read", "", 0);
  const good = encodeTokenFile([entry]);
  const cases: [string, RegExp][] = [
    ["{", /not valid JSON/],
    ['{"format":"other"}', /not a ringstore token file/],
    [good.replace('"version": 1', '"version": 2'), /version 2 is unknown/],
    [good.replace('"role": "read"', '"role": "admin"'), /checksum mismatch/],
    [encodeTokenFile([entry, entry]), /appears twice/],
  ];
  for (const [text, re] of cases)
    assert.throws(
      () => decodeTokenFile(text, "tokens.json"),
      (e: unknown) => e instanceof TokenFileError && re.test(e.message) && e.message.includes("tokens.json"),
      text.slice(0, 40),
    );
  // A bad role is refused even with a matching checksum.
  const bad = encodeTokenFile([{ ...entry, role: "root" as "read" }]);
  assert.throws(() => decodeTokenFile(bad, "f"), /role must be read, write or admin/);
});

test("roles: each includes the one before it", () => {
  assert.ok(roleAllows("admin", "write") && roleAllows("admin", "read") && roleAllows("write", "read"));
  assert.ok(!roleAllows("read", "write") && !roleAllows("write", "admin") && !roleAllows("read", "admin"));
});

test("the role each request needs: /health open, reads read, writes write, membership admin", () => {
  const table: [string, string, string | undefined][] = [
    ["GET", "/health", undefined],
    ["HEAD", "/health", undefined],
    ["POST", "/health", "read"],
    ["GET", "/kv/k", "read"],
    ["HEAD", "/kv/k", "read"],
    ["GET", "/kv/", "read"],
    ["PUT", "/kv/k", "write"],
    ["DELETE", "/kv/k", "write"],
    ["GET", "/status", "read"],
    ["GET", "/ring", "read"],
    ["GET", "/metrics", "read"],
    ["GET", "/ui", "read"],
    ["POST", "/cluster/leave", "admin"],
    ["POST", "/cluster/remove", "admin"],
    ["POST", "/storage/compact", "admin"],
    ["GET", "/nowhere", "read"],
  ];
  for (const [method, path, role] of table)
    assert.equal(requiredRole(path, method), role, `${method} ${path}`);
});

test("checkAccess: no header or a bad one is unauthorized, a weaker role forbidden, the right one allowed", () => {
  const r = newToken("read", "", 0);
  const w = newToken("write", "", 0);
  const a = newToken("admin", "", 0);
  const set = new TokenSet([r.entry, w.entry, a.entry]);
  const check = (auth: string | undefined, method: string, path: string) =>
    checkAccess(set, auth, path, method);
  assert.equal(check(undefined, "GET", "/health").kind, "allowed");
  const none = check(undefined, "GET", "/kv/k");
  assert.equal(none.kind, "unauthorized");
  assert.equal(none.kind === "unauthorized" && none.presented, false);
  for (const h of [`Basic ${r.token}`, `Bearer`, `Bearer rs_000000000000_${"A".repeat(43)}`, r.token]) {
    const out = check(h, "GET", "/kv/k");
    assert.equal(out.kind, "unauthorized", h);
    assert.equal(out.kind === "unauthorized" && out.presented, true);
  }
  assert.equal(check(`Bearer ${r.token}`, "GET", "/kv/k").kind, "allowed");
  assert.equal(check(`bearer  ${r.token}`, "GET", "/kv/k").kind, "allowed", "the scheme is case-insensitive");
  const denied = check(`Bearer ${r.token}`, "PUT", "/kv/k");
  assert.deepEqual(
    denied.kind === "forbidden" && [denied.role, denied.needs],
    ["read", "write"],
    JSON.stringify(denied),
  );
  assert.equal(check(`Bearer ${w.token}`, "PUT", "/kv/k").kind, "allowed");
  assert.equal(check(`Bearer ${w.token}`, "POST", "/cluster/leave").kind, "forbidden");
  assert.equal(check(`Bearer ${a.token}`, "POST", "/cluster/leave").kind, "allowed");
  assert.equal(check(`Bearer ${a.token}`, "DELETE", "/kv/k").kind, "allowed");
});

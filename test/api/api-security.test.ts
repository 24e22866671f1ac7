/**
 * The API's secret files (api/api-security.ts): modes checked (others may read: refused; group may
 * read: a warning), a token file or TLS pair that cannot be used stops the start, and a change is taken
 * within the poll while a change that cannot be used leaves the files in use in place.
 */
import assert from "node:assert/strict";
import { chmodSync, mkdtempSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { after, test } from "node:test";
import { type ApiSecurity, loadApiSecurity, SecretFileError } from "../../src/api/api-security.js";
import { encodeTokenFile, newToken, TokenFileError } from "../../src/api/tokens.js";
import { makeTestPki, opensslMissing } from "./tls-fixture.js";

const dir = mkdtempSync(path.join(tmpdir(), "ringstore-apisec-"));
after(() => rmSync(dir, { recursive: true, force: true }));

/** Writes a file of mode `mode` by a rename, as `ringstore auth` does. */
function put(file: string, text: string | Buffer, mode = 0o600): void {
  writeFileSync(`${file}.new`, text, { mode });
  chmodSync(`${file}.new`, mode);
  renameSync(`${file}.new`, file);
}

async function until(what: string, fn: () => boolean): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (fn()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  assert.fail(`timed out waiting for ${what}`);
}

test("a token file others may read or write is refused; one its group may read is used, with a warning", async () => {
  const f = path.join(dir, "modes.json");
  const { entry } = newToken("read", "", 0);
  for (const mode of [0o644, 0o604, 0o620, 0o602]) {
    put(f, encodeTokenFile([entry]), mode);
    await assert.rejects(
      loadApiSecurity({ authFile: f, warn: () => undefined }),
      (e: unknown) => e instanceof SecretFileError && /chmod 600/.test(e.message) && e.message.includes(f),
      mode.toString(8),
    );
  }
  put(f, encodeTokenFile([entry]), 0o640);
  const warnings: string[] = [];
  const s = await loadApiSecurity({ authFile: f, warn: (m) => warnings.push(m) });
  s.close();
  assert.equal(s.tokens?.size, 1);
  assert.equal(warnings.length, 1);
  assert.match(warnings[0]!, /its group may read it \(mode 0640\)/);
});

test("a missing or damaged token file stops the start with a sentence", async () => {
  await assert.rejects(
    loadApiSecurity({ authFile: path.join(dir, "absent.json"), warn: () => undefined }),
    (e: unknown) => e instanceof SecretFileError && /cannot read .*absent\.json/.test(e.message),
  );
  const f = path.join(dir, "damaged.json");
  put(f, "{ not json");
  await assert.rejects(loadApiSecurity({ authFile: f, warn: () => undefined }), TokenFileError);
});

test("the token file is re-read when it changes; a change that cannot be used keeps the tokens in use", async () => {
  const f = path.join(dir, "reload.json");
  const a = newToken("read", "", 0);
  const b = newToken("write", "", 0);
  put(f, encodeTokenFile([a.entry]));
  const warnings: string[] = [];
  const reloads: string[] = [];
  let s: ApiSecurity | undefined;
  try {
    s = await loadApiSecurity({
      authFile: f,
      reloadIntervalMs: 20,
      warn: (m) => warnings.push(m),
      onReload: (file) => reloads.push(file),
    });
    const tokens = s.tokens!;
    assert.equal(tokens.check(a.token).kind, "valid");
    assert.equal(tokens.check(b.token).kind, "invalid");
    // b added, a revoked.
    put(f, encodeTokenFile([b.entry]));
    await until("b to be accepted", () => tokens.check(b.token).kind === "valid");
    assert.equal(tokens.check(a.token).kind, "invalid", "a is revoked");
    assert.deepEqual(reloads, [f]);
    // A damaged file: reported, b stays valid; then a world-readable one: the same.
    put(f, "{");
    await until("a warning", () => warnings.length === 1);
    assert.match(warnings[0]!, /not used, the tokens read before stay/);
    put(f, encodeTokenFile([a.entry]), 0o644);
    await until("a second warning", () => warnings.length === 2);
    assert.match(warnings[1]!, /chmod 600/);
    assert.equal(tokens.check(b.token).kind, "valid");
    assert.equal(tokens.check(a.token).kind, "invalid");
    // Fixed: taken.
    put(f, encodeTokenFile([a.entry]));
    await until("a to be accepted again", () => tokens.check(a.token).kind === "valid");
  } finally {
    s?.close();
  }
});

const noOpenssl = opensslMissing();

test("TLS: a key others may read is refused; a key that is not the certificate's too; a renewed pair is taken", {
  skip: noOpenssl,
}, async () => {
  const one = makeTestPki(dir, "one");
  const two = makeTestPki(dir, "two");
  chmodSync(one.keyFile, 0o644);
  await assert.rejects(
    loadApiSecurity({ tls: { certFile: one.certFile, keyFile: one.keyFile }, warn: () => undefined }),
    /mode is 0644 \(every user may read it\)/,
  );
  chmodSync(one.keyFile, 0o600);
  await assert.rejects(
    loadApiSecurity({ tls: { certFile: one.certFile, keyFile: two.keyFile }, warn: () => undefined }),
    /not a usable PEM certificate and its private key/,
  );
  // The certificate may be world-readable (it is public).
  chmodSync(one.certFile, 0o644);
  const certFile = path.join(dir, "live.pem");
  const keyFile = path.join(dir, "live.key");
  put(certFile, one.cert, 0o644);
  put(keyFile, one.key);
  const warnings: string[] = [];
  const renewed: Buffer[] = [];
  const s = await loadApiSecurity({
    tls: { certFile, keyFile },
    reloadIntervalMs: 20,
    warn: (m) => warnings.push(m),
  });
  try {
    assert.deepEqual(s.tls, { cert: one.cert, key: one.key });
    s.onTlsChange((m) => renewed.push(m.cert));
    // The certificate first, its key a moment later: the mismatched pair in between is not taken.
    put(certFile, two.cert, 0o644);
    await until("the mismatch to be reported", () => warnings.length >= 1);
    assert.deepEqual(renewed, []);
    put(keyFile, two.key);
    await until("the renewed pair", () => renewed.length === 1);
    assert.deepEqual(renewed, [two.cert]);
  } finally {
    s.close();
  }
});

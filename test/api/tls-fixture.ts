/**
 * A throwaway PKI for tests and benchmarks, made at run time with the `openssl` command (never a key in
 * the repository): a CA, and a server certificate it signs for 127.0.0.1 and localhost, EC P-256, valid
 * two days. Node's crypto cannot issue X.509 certificates; `openssl` (OpenSSL 3 here) can.
 *
 * The keys are written mode 0600 (openssl's default for -keyout; made sure of here).
 */
import { execFileSync } from "node:child_process";
import { chmodSync, readFileSync, writeFileSync } from "node:fs";
import * as path from "node:path";

export interface TestPki {
  readonly caFile: string;
  readonly certFile: string;
  readonly keyFile: string;
  readonly ca: Buffer;
  readonly cert: Buffer;
  readonly key: Buffer;
}

/** Why TLS tests cannot run here (no openssl command), or undefined when they can. */
export function opensslMissing(): string | undefined {
  try {
    execFileSync("openssl", ["version"], { stdio: "ignore" });
    return undefined;
  } catch {
    return "the openssl command is not installed: the TLS tests make their certificates with it";
  }
}

const run = (args: string[]) => execFileSync("openssl", args, { stdio: ["ignore", "ignore", "pipe"] });

/** A CA and a certificate it signed for 127.0.0.1 and localhost, in `dir` (prefix names the files). */
export function makeTestPki(dir: string, prefix = "api"): TestPki {
  const f = (name: string) => path.join(dir, `${prefix}-${name}`);
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  run([
    "req",
    "-x509",
    ...ec,
    "-keyout",
    f("ca.key"),
    "-out",
    f("ca.pem"),
    "-days",
    "2",
    "-subj",
    "/CN=ringstore test CA",
  ]);
  run(["req", ...ec, "-keyout", f("server.key"), "-out", f("server.csr"), "-subj", "/CN=localhost"]);
  writeFileSync(
    f("ext.cnf"),
    "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
  );
  run([
    "x509",
    "-req",
    "-in",
    f("server.csr"),
    "-CA",
    f("ca.pem"),
    "-CAkey",
    f("ca.key"),
    "-set_serial",
    "1",
    "-out",
    f("server.pem"),
    "-days",
    "2",
    "-extfile",
    f("ext.cnf"),
  ]);
  chmodSync(f("ca.key"), 0o600);
  chmodSync(f("server.key"), 0o600);
  return {
    caFile: f("ca.pem"),
    certFile: f("server.pem"),
    keyFile: f("server.key"),
    ca: readFileSync(f("ca.pem")),
    cert: readFileSync(f("server.pem")),
    key: readFileSync(f("server.key")),
  };
}

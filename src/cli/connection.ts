/**
 * How the commands that talk to a node's API reach it: `--node` (`HOST:PORT`, `http://HOST:PORT` or
 * `https://HOST:PORT`), `--token` (or RINGSTORE_TOKEN) and `--ca-file` (or RINGSTORE_CA_FILE), turned
 * into the client library's options.
 */
import { readFileSync } from "node:fs";
import { type Command, Option } from "commander";
import type { ClientOptions } from "../client/client.js";

export const DEFAULT_NODE = "127.0.0.1:8001";

export interface ConnectionFlags {
  node: string;
  token?: string;
  caFile?: string;
}

/** Adds --node, --token and --ca-file to a command. */
export function connectionOptions(c: Command, nodeHelp = "API address of any node"): Command {
  return c
    .option("--node <address>", `${nodeHelp} (HOST:PORT, or https://HOST:PORT)`, DEFAULT_NODE)
    .addOption(
      new Option(
        "--token <token>",
        "API token, for a node started with --auth-file (the environment keeps it out of ps: prefer RINGSTORE_TOKEN)",
      ).env("RINGSTORE_TOKEN"),
    )
    .addOption(
      new Option("--ca-file <file>", "PEM file of the CA that signed the nodes' certificates (https)").env(
        "RINGSTORE_CA_FILE",
      ),
    );
}

/**
 * `--node` checked before anything is sent: `HOST:PORT`, `http://HOST:PORT` or `https://HOST:PORT`, with
 * a port 1..65535 (a host name, an IPv4 address, or an IPv6 one in brackets). Anything else is refused
 * with one sentence that says what to give, rather than the HTTP library's error about a URL.
 */
export function checkNodeAddress(node: string, flag = "--node"): string {
  const m =
    /^(?:(?:https?):\/\/)?(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?):([0-9]{1,5})\/?$/i.exec(
      node,
    );
  const port = m === null ? 0 : Number(m[1]);
  if (port < 1 || port > 65535)
    throw new Error(
      `${flag} ${JSON.stringify(node)} is not a node's API address: give HOST:PORT (such as 127.0.0.1:8001), or https://HOST:PORT for a node that serves https`,
    );
  return node;
}

/**
 * The client library's options for these flags (the CA file read here: an error names it). Checks
 * `--node` first.
 */
export function clientOptions(f: ConnectionFlags): Pick<ClientOptions, "token" | "ca"> {
  checkNodeAddress(f.node);
  let ca: Buffer | undefined;
  if (f.caFile !== undefined && f.caFile !== "") {
    try {
      ca = readFileSync(f.caFile);
    } catch (err) {
      throw new Error(`cannot read the CA file ${f.caFile}: ${(err as Error).message}`);
    }
  }
  return {
    ...(f.token !== undefined && f.token !== "" ? { token: f.token } : {}),
    ...(ca !== undefined ? { ca } : {}),
  };
}

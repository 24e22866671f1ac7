/**
 * `ringstore keys`: every live key of the cluster, one per line (`client.keys()`: the pages of
 * `GET /kv/?limit=N&cursor=C`). A key that is printable UTF-8 without a newline is printed as it is,
 * any other percent-encoded (`--encoded` prints every key so, as the API gives it). Keys come in no
 * particular order; the listing is not a snapshot.
 */
import { percentEncode } from "../api/list-route.js";
import { RingstoreClient, RingstoreError } from "../client/client.js";
import { ConfigError } from "../node/config.js";
import { type ConnectionFlags, clientOptions } from "./connection.js";
import { Progress } from "./progress.js";

export interface KeysFlags extends ConnectionFlags {
  limit?: string;
  encoded?: boolean;
  cursor?: string;
}

/** A key that prints as itself: valid UTF-8, no control characters, no leading or trailing '%'. */
function shown(key: Buffer, encoded: boolean): string {
  if (encoded) return percentEncode(key);
  const text = key.toString("utf8");
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what it looks for
  const plain = Buffer.from(text, "utf8").equals(key) && !/[\u0000-\u001f\u007f%]/.test(text);
  return plain ? text : percentEncode(key);
}

export async function keysCommand(f: KeysFlags): Promise<void> {
  let pageSize: number | undefined;
  if (f.limit !== undefined) {
    if (!/^[0-9]+$/.test(f.limit) || Number(f.limit) < 1 || Number(f.limit) > 10_000)
      throw new ConfigError(`--limit must be an integer 1..10000, got "${f.limit}"`);
    pageSize = Number(f.limit);
  }
  const c = new RingstoreClient(f.node, { connections: 1, ...clientOptions(f) });
  let cursor: string | null | undefined = f.cursor;
  let count = 0;
  // On a terminal, the count so far on stderr, redrawn in place (never in a pipe: stdout is the keys).
  const progress = process.stderr.isTTY === true ? new Progress({ unit: "keys" }) : undefined;
  try {
    for await (const key of c.keys({
      pageSize,
      cursor: f.cursor,
      onPage: (p) => {
        cursor = p.cursor;
      },
    })) {
      count++;
      progress?.update("listing:", count, null);
      if (!process.stdout.write(`${shown(key, f.encoded === true)}\n`))
        await new Promise((resolve) => process.stdout.once("drain", resolve));
    }
    progress?.finish(`${count} keys`);
  } catch (err) {
    progress?.finish();
    if (!(err instanceof RingstoreError)) throw err;
    const head = err.status === 0 ? `cannot reach ${f.node}` : `${err.status} ${err.code}`;
    process.stderr.write(`ringstore: ${head}: ${err.message}\n`);
    if (typeof cursor === "string")
      process.stderr.write(
        `ringstore: ${count} keys listed; go on with: ringstore keys --cursor ${cursor}\n`,
      );
    process.exitCode = 1;
  } finally {
    await c.close();
  }
}

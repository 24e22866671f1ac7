/**
 * Runs an exchange (exchange.ts) and answers a peer's requests (responder.ts) over the outside world
 * given as functions: the peer's answers (`ask`), the pause between the two looks (`pause`), a scan of
 * the local sets and a way to yield between pages. The node passes the transport and its timers; tests
 * and the benchmark pass another replica in the same process. No I/O of its own.
 */
import type { Exchange, ExchangeResult } from "./exchange.js";
import type { AeHashesAnswer, AeKeyDiffsAnswer, AeKeysRequest, AeTreeRequest } from "./messages.js";
import type { RebuildPaging, ScannedEntry, ScanSource } from "./rebuild.js";
import { answerTreeRequest, KeyDiffer } from "./responder.js";
import type { TreeSource } from "./tree.js";

/** Reading all of a replica's sets, a page at a time (`yieldNow` between pages). */
export async function scanEach(
  source: ScanSource,
  paging: RebuildPaging,
  each: (entry: ScannedEntry) => void,
): Promise<number> {
  let after: Uint8Array | undefined;
  let n = 0;
  for (;;) {
    const page = await source.scan(after, paging.pageKeys, paging.pageBytes);
    if (page.length === 0) return n;
    for (const e of page) each(e);
    n += page.length;
    after = Buffer.from(page[page.length - 1]!.key);
    await paging.yieldNow();
  }
}

export interface ExchangeIo {
  /** This node's trees. */
  readonly trees: TreeSource;
  /** This node's sets. */
  readonly data: ScanSource;
  readonly paging: RebuildPaging;
  /** The peer's answer to a tree request (its answerTreeRequest). */
  askTrees(request: AeTreeRequest): Promise<AeHashesAnswer>;
  /** The peer's answer to an ae_keys request (its answerKeysRequest). */
  askKeys(request: AeKeysRequest): Promise<AeKeyDiffsAnswer>;
  /** The pause between the two looks at the segments. */
  pause(): Promise<void>;
}

/** Runs `exchange` to its end. A failed `ask` or scan rejects (the exchange is then dropped). */
export async function driveExchange(exchange: Exchange, io: ExchangeIo): Promise<ExchangeResult> {
  for (;;) {
    const step = exchange.step;
    switch (step.kind) {
      case "compare": {
        const remote = await io.askTrees(step.request);
        exchange.compared(answerTreeRequest(io.trees, step.request), remote);
        break;
      }
      case "pause":
        await io.pause();
        exchange.resumed();
        break;
      case "list":
        await scanEach(io.data, io.paging, (e) => step.listing.offer(e.key, e.value));
        exchange.listed();
        break;
      case "ask":
        exchange.answered(await io.askKeys(step.request));
        break;
      case "done":
        return step.result;
    }
  }
}

/** The responder's answer to ae_keys: its sets scanned against the request (throws on a bad request). */
export async function answerKeysRequest(
  request: AeKeysRequest,
  data: ScanSource,
  partitionOf: (key: Uint8Array) => number,
  paging: RebuildPaging,
): Promise<AeKeyDiffsAnswer> {
  const differ = new KeyDiffer(request, partitionOf);
  await scanEach(data, paging, (e) => differ.offer(e.key, e.value));
  return differ.answer();
}

/**
 * Shared by the anti-entropy tests: a storage engine that calls a TreeSet's write hook around every
 * write of the data keyspace exactly as tree-set.ts's contract asks of the integration (synchronously
 * right before the engine write is issued, under the replica's key lock since the Replica holds it while
 * it writes, and its end once the write settles), optionally slowed down and failing; and trees built
 * from scratch from what an engine holds, to compare against.
 *
 * The hook needs the set a write replaces. The Replica has it in hand when it writes; here the engine
 * keeps the set of the last write issued per key (writes of one key are serialized by the key lock, so
 * that is the set the next one replaces).
 */
import { keyStateHash } from "../../src/anti-entropy/key-state.js";
import { PartitionTree } from "../../src/anti-entropy/tree.js";
import type { TreeSet } from "../../src/anti-entropy/tree-set.js";
import { DATA } from "../../src/replication/keyspaces.js";
import type {
  EngineStats,
  Entry,
  ManualCompactionProgress,
  ManualCompactionStart,
  RangeOptions,
  StorageEngine,
  WriteOp,
} from "../../src/storage/engine.js";
import { decodeSiblings, type StoredSibling, type StoredValue } from "../../src/versioning/object-codec.js";

export interface HookOptions {
  /** Awaited before the write becomes visible and again before it resolves (a slow disk). */
  readonly delay?: () => Promise<void>;
  /** Decides whether this write fails (rejected without being applied). */
  readonly fails?: (key: Uint8Array, set: readonly StoredSibling[]) => boolean;
}

export class HookedEngine implements StorageEngine {
  readonly kind: "memory" | "lsm";
  private readonly current = new Map<string, StoredSibling[]>();
  /** Writes whose hook began, by outcome so far. */
  readonly counts = { begun: 0, failed: 0 };

  constructor(
    private readonly inner: StorageEngine,
    private trees: TreeSet | undefined,
    private readonly options: HookOptions = {},
  ) {
    this.kind = inner.kind;
  }

  /** Points the hook at another TreeSet (or none: writes then reach no tree, a planted skipped update). */
  hook(trees: TreeSet | undefined): void {
    this.trees = trees;
  }

  get failure() {
    return this.inner.failure;
  }

  get(key: Uint8Array): Promise<Uint8Array | undefined> {
    return this.inner.get(key);
  }

  compactAll(): ManualCompactionStart {
    return this.inner.compactAll();
  }

  compactionProgress(): ManualCompactionProgress {
    return this.inner.compactionProgress();
  }

  put(key: Uint8Array, value: Uint8Array): Promise<void> {
    return this.change(key, value);
  }

  delete(key: Uint8Array): Promise<void> {
    return this.change(key, undefined);
  }

  write(ops: readonly WriteOp[]): Promise<void> {
    if (ops.length === 1) {
      const op = ops[0]!;
      return this.change(op.key, op.kind === "put" ? op.value : undefined);
    }
    for (const op of ops)
      if (DATA.contains(op.key)) throw new Error("HookedEngine: a batch that writes the data keyspace");
    return this.inner.write(ops);
  }

  private change(engineKey: Uint8Array, value: Uint8Array | undefined): Promise<void> {
    if (!DATA.contains(engineKey))
      return value === undefined ? this.inner.delete(engineKey) : this.inner.put(engineKey, value);
    const key = Buffer.from(DATA.decode(engineKey));
    const id = key.toString("latin1");
    const old = this.current.get(id) ?? [];
    const next = value === undefined ? [] : decodeSiblings(value);
    // The hook: synchronously, before the engine write is issued.
    const w = this.trees?.writeBegins(key, old, next);
    const trees = this.trees;
    this.counts.begun++;
    this.current.set(id, next);
    const fail = this.options.fails?.(key, next) === true;
    const run = async () => {
      try {
        await this.options.delay?.();
        if (fail) throw new Error("injected write failure");
        if (value === undefined) await this.inner.delete(engineKey);
        else await this.inner.put(engineKey, value);
        await this.options.delay?.();
      } catch (err) {
        this.current.set(id, old);
        this.counts.failed++;
        trees?.writeEnds(w, false);
        throw err;
      }
      trees?.writeEnds(w, true);
    };
    return run();
  }

  iterate(range?: RangeOptions): AsyncIterableIterator<Entry> {
    return this.inner.iterate(range);
  }

  stats(): EngineStats {
    return this.inner.stats();
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

/** The trees of `partitions` computed from scratch from every set `engine` holds now. */
export async function treesFromScratch(
  engine: StorageEngine,
  partitionOf: (key: Uint8Array) => number,
  partitions: Iterable<number>,
): Promise<Map<number, PartitionTree>> {
  const out = new Map<number, PartitionTree>();
  for (const p of partitions) out.set(p, new PartitionTree(p));
  for await (const e of engine.iterate(DATA.range)) {
    const key = DATA.decode(e.key);
    const t = out.get(partitionOf(key));
    if (t !== undefined) t.update(key, 0, keyStateHash(key, decodeSiblings(e.value)));
  }
  return out;
}

export const storedValue = (text: string, deleted = false): StoredValue => ({
  data: Buffer.from(text),
  contentType: "text/plain",
  deleted,
  writtenAtMs: 1_700_000_000_000,
});

export const SEED = process.env.FC_SEED !== undefined ? Number(process.env.FC_SEED) : 0xae_2026;
export const FC_PARAMS = { seed: SEED, includeErrorInReport: true } as const;

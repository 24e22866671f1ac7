/**
 * Where a node keeps its anti-entropy trees across a clean stop: the storage engine's `trees` keyspace,
 * one record per partition (tree.ts `encodeTree`), and a marker in the `meta` keyspace saying the saved
 * trees match the data.
 *
 * - A clean stop writes every tree and the marker in one batch (atomic in the engine), after the last
 *   write to the data.
 * - A start that finds the marker deletes it durably first, then loads the trees: a crash from then on
 *   finds no marker, and the next start rebuilds the trees from the data rather than trust copies that
 *   writes since have made stale.
 * - No marker (an unclean stop, a first start, a damaged record): the caller rebuilds.
 * - A start with anti-entropy off deletes the marker too (`forgetTrees`): the writes of that run do not
 *   update the trees, so the saved ones would no longer match the data when it is on again.
 */
import { KEYSPACES } from "../replication/keyspaces.js";
import type { StorageEngine, WriteOp } from "../storage/engine.js";
import { decodeTree, encodeTree, type PartitionTree, TreeDecodeError, treeRecordKey } from "./tree.js";

const TREES = KEYSPACES.trees;
const MARKER = KEYSPACES.meta.encode(Buffer.from("anti-entropy-trees-saved"));

/** Saves `trees` (every partition's) and the marker that says they match the data, in one batch. */
export async function saveTrees(storage: StorageEngine, trees: readonly PartitionTree[]): Promise<void> {
  const ops: WriteOp[] = [];
  for await (const e of storage.iterate(TREES.range)) ops.push({ kind: "delete", key: Buffer.from(e.key) });
  for (const t of trees)
    ops.push({ kind: "put", key: TREES.encode(treeRecordKey(t.partition)), value: encodeTree(t) });
  ops.push({ kind: "put", key: MARKER, value: Uint8Array.of(1) });
  await storage.write(ops);
}

/**
 * Forgets the saved trees (deletes the marker, durably): for a start with anti-entropy off, whose writes
 * would not reach them, so that the next start with it on rebuilds them from the data.
 */
export async function forgetTrees(storage: StorageEngine): Promise<void> {
  if ((await storage.get(MARKER)) !== undefined) await storage.delete(MARKER);
}

/**
 * The saved trees, if the last stop saved them (and none is damaged); undefined otherwise. The marker is
 * deleted durably before anything is returned.
 */
export async function loadTrees(
  storage: StorageEngine,
): Promise<{ trees: PartitionTree[] } | { trees: undefined; why: string }> {
  const marker = await storage.get(MARKER);
  if (marker === undefined) return { trees: undefined, why: "no trees were saved at the last stop" };
  await storage.delete(MARKER);
  const trees: PartitionTree[] = [];
  try {
    for await (const e of storage.iterate(TREES.range)) {
      const k = TREES.decode(e.key);
      const partition = Buffer.from(k.buffer, k.byteOffset, k.byteLength).readUInt32BE(0);
      trees.push(decodeTree(e.value, partition));
    }
  } catch (err) {
    if (!(err instanceof TreeDecodeError)) throw err;
    return { trees: undefined, why: `a saved tree is damaged (${err.message})` };
  }
  return { trees };
}

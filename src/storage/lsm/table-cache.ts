/**
 * Open table readers, at most `capacity` of them, least recently used closed first.
 *
 * A reader is pinned while a lookup or iterator uses it across an await; pinned readers are never closed.
 * Opening a table checks its footer, index and filter (table-reader.ts).
 */
import * as path from "node:path";
import type { FileSystem } from "../fs/file-system.js";
import type { BlockCache } from "./block-cache.js";
import { type ReadStats, TableReader } from "./table-reader.js";
import type { TableMeta } from "./version.js";

export function tableFileName(n: number): string {
  return `${String(n).padStart(6, "0")}.sst`;
}

interface Slot {
  reader: TableReader | undefined;
  opening: Promise<TableReader> | undefined;
  pins: number;
  obsolete: boolean;
  /** The cache's clock at the last use: eviction closes the least recently used first. */
  lastUse: number;
}

export class TableCache {
  private readonly slots = new Map<number, Slot>();
  /**
   * Recency is a counter stamped on each use, not Map order: re-inserting on every use would leave a hole
   * in the Map per lookup. Eviction, rare, scans for the oldest stamp.
   */
  private clock = 0;

  constructor(
    private readonly fs: FileSystem,
    private readonly dir: string,
    private readonly blockCache: BlockCache,
    private readonly stats: ReadStats,
    private readonly capacity: number,
    private readonly syncReads = true,
  ) {}

  get openTables(): number {
    return this.slots.size;
  }

  /** The reader if it is open (pinned; release it), without waiting. */
  tryAcquire(meta: TableMeta): TableReader | undefined {
    const s = this.slots.get(meta.fileNumber);
    if (s?.reader === undefined) return undefined;
    s.pins++;
    s.lastUse = ++this.clock;
    return s.reader;
  }

  /**
   * The reader if it is open, not pinned: for a caller that uses it synchronously and lets go before
   * returning (nothing can close it meanwhile: closing happens in other tasks).
   */
  peekOpen(fileNumber: number): TableReader | undefined {
    const s = this.slots.get(fileNumber);
    if (s === undefined) return undefined;
    s.lastUse = ++this.clock;
    return s.reader;
  }

  async acquire(meta: TableMeta): Promise<TableReader> {
    const fast = this.tryAcquire(meta);
    if (fast !== undefined) return fast;
    let s = this.slots.get(meta.fileNumber);
    if (s === undefined) {
      const slot: Slot = {
        reader: undefined,
        opening: undefined,
        pins: 0,
        obsolete: false,
        lastUse: ++this.clock,
      };
      s = slot;
      slot.opening = (async () => {
        const file = await this.fs.openRead(path.join(this.dir, tableFileName(meta.fileNumber)));
        try {
          return await TableReader.open(file, meta.fileNumber, this.blockCache, this.stats, this.syncReads);
        } catch (err) {
          await file.close();
          throw err;
        }
      })();
      this.slots.set(meta.fileNumber, slot);
      try {
        slot.reader = await slot.opening;
      } catch (err) {
        this.slots.delete(meta.fileNumber);
        throw err;
      } finally {
        slot.opening = undefined;
      }
      await this.evictIfNeeded();
    } else if (s.opening !== undefined) {
      await s.opening;
    }
    s.pins++;
    return s.reader!;
  }

  release(fileNumber: number): void {
    const s = this.slots.get(fileNumber);
    if (s === undefined) return;
    s.pins--;
    if (s.pins === 0 && s.obsolete) void this.closeSlot(fileNumber, s);
  }

  private async evictIfNeeded(): Promise<void> {
    while (this.slots.size > this.capacity) {
      let victim: number | undefined;
      let oldest = Number.POSITIVE_INFINITY;
      for (const [n, s] of this.slots)
        if (s.pins === 0 && s.reader !== undefined && s.lastUse < oldest) {
          oldest = s.lastUse;
          victim = n;
        }
      if (victim === undefined) return;
      await this.closeSlot(victim, this.slots.get(victim)!);
    }
  }

  private async closeSlot(n: number, s: Slot): Promise<void> {
    if (this.slots.get(n) !== s) return;
    this.slots.delete(n);
    const r = s.reader!;
    // Its cached blocks go with the reader (a reopened table starts cold, as in LevelDB).
    this.blockCache.evictOwner(r);
    await r.close();
  }

  /** The table was deleted: drop its reader (now, or when its last user releases it) and cached blocks. */
  async forget(fileNumber: number): Promise<void> {
    const s = this.slots.get(fileNumber);
    if (s === undefined) return;
    s.obsolete = true;
    if (s.opening !== undefined) await s.opening.catch(() => undefined);
    if (s.pins === 0 && s.reader !== undefined) await this.closeSlot(fileNumber, s);
  }

  async closeAll(): Promise<void> {
    for (const [n, s] of [...this.slots]) {
      if (s.opening !== undefined) await s.opening.catch(() => undefined);
      this.slots.delete(n);
      if (s.reader !== undefined) {
        this.blockCache.evictOwner(s.reader);
        await s.reader.close();
      }
    }
  }
}

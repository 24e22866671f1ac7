/**
 * Iterators over the layers of the tree, and their merge.
 *
 * Every source yields at most one entry per key (memtable iterators yield each key's newest version
 * visible at the snapshot; a run holds each key once), in ascending key order. The merge takes, for each
 * key, the entry of the newest source (the lowest index): sources are ordered newest first. `seek` and
 * `next` return a promise only when some source had to load a block.
 */
import { compareBytes } from "../bytes.js";
import type { TableCache } from "./table-cache.js";
import type { TableIterator, TableReader } from "./table-reader.js";
import { findTableIndex, type Run } from "./version.js";

export interface SourceIterator {
  readonly valid: boolean;
  readonly key: Uint8Array;
  readonly value: Uint8Array;
  readonly kind: number;
  seek(target: Uint8Array | undefined): void | Promise<void>;
  next(): void | Promise<void>;
  close?(): void;
}

/** Iterates one sorted run, moving from table to table; pins the table it is in. */
export class RunIterator implements SourceIterator {
  private idx = 0;
  private reader: TableReader | undefined;
  private it: TableIterator | undefined;

  constructor(
    private readonly run: Run,
    private readonly tables: TableCache,
    private readonly fillCache: boolean,
  ) {}

  get valid(): boolean {
    return this.it?.valid === true;
  }
  get key(): Uint8Array {
    return this.it!.key;
  }
  get value(): Uint8Array {
    return this.it!.value;
  }
  get kind(): number {
    return this.it!.kind;
  }

  seek(target: Uint8Array | undefined): Promise<void> {
    return this.openAt(target === undefined ? 0 : findTableIndex(this.run, target), target);
  }

  private async openAt(idx: number, target: Uint8Array | undefined): Promise<void> {
    for (; idx < this.run.files.length; idx++, target = undefined) {
      this.unpin();
      const meta = this.run.files[idx]!;
      this.reader = await this.tables.acquire(meta);
      this.idx = idx;
      this.it = this.reader.iterator(this.fillCache);
      const r = this.it.seek(target);
      if (r !== undefined) await r;
      if (this.it.valid) return;
    }
    this.unpin();
    this.it = undefined;
  }

  next(): void | Promise<void> {
    const r = this.it!.next();
    if (r !== undefined) return r.then(() => this.afterNext());
    return this.afterNext();
  }

  private afterNext(): void | Promise<void> {
    if (!this.it!.valid) return this.openAt(this.idx + 1, undefined);
  }

  private unpin(): void {
    if (this.reader !== undefined) {
      this.tables.release(this.reader.fileNumber);
      this.reader = undefined;
    }
  }

  close(): void {
    this.unpin();
    this.it = undefined;
  }
}

export class MergingIterator implements SourceIterator {
  private cur = -1;
  /** Entries of the sources passed so far, shadowed versions included (a merge's progress). */
  consumed = 0;

  constructor(private readonly sources: SourceIterator[]) {}

  get valid(): boolean {
    return this.cur >= 0;
  }
  get key(): Uint8Array {
    return this.sources[this.cur]!.key;
  }
  get value(): Uint8Array {
    return this.sources[this.cur]!.value;
  }
  get kind(): number {
    return this.sources[this.cur]!.kind;
  }

  private findSmallest(): void {
    let best = -1;
    let bestKey: Uint8Array | undefined;
    const s = this.sources;
    for (let i = 0; i < s.length; i++) {
      const src = s[i]!;
      if (!src.valid) continue;
      // Strictly smaller: on equal keys the earlier (newer) source stays the winner.
      if (bestKey === undefined || compareBytes(src.key, bestKey) < 0) {
        best = i;
        bestKey = src.key;
      }
    }
    this.cur = best;
  }

  async seek(target: Uint8Array | undefined): Promise<void> {
    for (const s of this.sources) {
      const r = s.seek(target);
      if (r !== undefined) await r;
    }
    this.findSmallest();
  }

  next(): void | Promise<void> {
    const key = this.sources[this.cur]!.key;
    const s = this.sources;
    for (let i = 0; i < s.length; i++) {
      const src = s[i]!;
      if (src.valid && compareBytes(src.key, key) === 0) {
        this.consumed++;
        const r = src.next();
        if (r !== undefined) return r.then(() => this.continueNext(i + 1, key));
      }
    }
    this.findSmallest();
  }

  private async continueNext(from: number, key: Uint8Array): Promise<void> {
    const s = this.sources;
    for (let i = from; i < s.length; i++) {
      const src = s[i]!;
      if (src.valid && compareBytes(src.key, key) === 0) {
        this.consumed++;
        const r = src.next();
        if (r !== undefined) await r;
      }
    }
    this.findSmallest();
  }

  close(): void {
    for (const s of this.sources) s.close?.();
  }
}

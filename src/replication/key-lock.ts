/**
 * Per-key mutual exclusion for read-modify-write of a key's sibling set on one node. Two writes of the
 * same key through the same node must not both read the old set and then overwrite each other's result.
 * The map holds only keys with a holder or a waiter, so its size is bounded by the requests in flight.
 */
export class KeyLock {
  private readonly tails = new Map<string, Promise<void>>();

  get size(): number {
    return this.tails.size;
  }

  /** Waits for the key, then holds it until the returned release is called (once). */
  async acquire(key: Uint8Array): Promise<() => void> {
    const k = Buffer.from(key.buffer, key.byteOffset, key.byteLength).toString("latin1");
    const prev = this.tails.get(k);
    let unblock!: () => void;
    const mine = new Promise<void>((r) => {
      unblock = r;
    });
    const tail = prev === undefined ? mine : prev.then(() => mine);
    this.tails.set(k, tail);
    if (prev !== undefined) await prev;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      unblock();
      if (this.tails.get(k) === tail) this.tails.delete(k);
    };
  }

  async run<T>(key: Uint8Array, fn: () => Promise<T>): Promise<T> {
    const release = await this.acquire(key);
    try {
      return await fn();
    } finally {
      release();
    }
  }
}

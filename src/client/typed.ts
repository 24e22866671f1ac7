/**
 * Values as the application means them, over the client's bytes: `client.json` (any JSON value, stored
 * as `application/json`) and `client.string` (text, stored as `text/plain; charset=utf-8`), each with
 * `get`, `put`, `delete` and `update`.
 *
 * `update(key, fn, { merge })` is the optimistic read-modify-write loop:
 * 1. read the key; siblings (concurrent versions) are resolved by `merge` into one value, or refused
 *    with a `siblings` error when no merge function is given (a deleted sibling counts as nothing);
 * 2. `fn(current)` gives the new value (`undefined`: delete the key); it is written with the read's
 *    context, so it supersedes exactly what was read;
 * 3. the key is read again: if a write by someone else landed between our read and our write, it is a
 *    sibling of ours now (dotted version vectors keep both). Then ours lost the race: `fn` is applied
 *    again to *their* value (merged, if they are several) and written with the new context, which
 *    supersedes both, theirs and our first attempt. So `fn` takes effect once on the final value, as
 *    with a compare-and-swap retry; at most `maxAttempts` cycles (default 5), then `conflict`.
 * A 409 `too_many_siblings`, a 503 or an unreachable cluster starts the cycle again (bounded the same).
 * The check costs one more read per update; `verify: false` skips it (a concurrent write then stays as
 * a sibling, for the next update's `merge`).
 */
import type { RequestOptions, RingstoreClient, Sibling } from "./client.js";
import { RingstoreError } from "./client.js";
import { JSON_CONTENT_TYPE, STRING_CONTENT_TYPE } from "./content-types.js";

/** How values of type T become bytes and back. */
export interface Codec<T> {
  /** What the name says in errors ("JSON", "UTF-8 text"). */
  readonly name: string;
  /** The content type the value is stored with. */
  readonly contentType: string;
  encode(value: T): Uint8Array;
  /** Throws (any error) on bytes that are not a T. */
  decode(bytes: Buffer): T;
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** Any JSON value; `undefined` cannot be stored (it means delete in `update`). */
export const jsonCodec: Codec<unknown> = {
  name: "JSON",
  contentType: JSON_CONTENT_TYPE,
  encode: (v) => {
    const text = JSON.stringify(v);
    if (text === undefined) throw new TypeError(`${typeof v} is not a JSON value`);
    return Buffer.from(text, "utf8");
  },
  decode: (b) => JSON.parse(utf8.decode(b)) as unknown,
};

export const stringCodec: Codec<string> = {
  name: "UTF-8 text",
  contentType: STRING_CONTENT_TYPE,
  encode: (v) => {
    if (typeof v !== "string") throw new TypeError(`expected a string, got ${typeof v}`);
    return Buffer.from(v, "utf8");
  },
  decode: (b) => utf8.decode(b),
};

export type TypedGetResult<T> =
  | { readonly kind: "value"; readonly value: T; readonly context: string }
  /** `values`: the live siblings; `deleted`: a delete is among them (concurrent with a write). */
  | { readonly kind: "siblings"; readonly values: T[]; readonly deleted: boolean; readonly context: string }
  | { readonly kind: "not_found"; readonly context: string | undefined };

export interface TypedUpdateOptions<T> extends RequestOptions {
  /** Resolves concurrent versions (two or more live siblings) into one; without it they are refused. */
  readonly merge?: (values: T[]) => T;
  /** Read-modify-write cycles at most (concurrent writes lost to and retryable errors). Default 5. */
  readonly maxAttempts?: number;
  /** First backoff after a retryable error; doubled each time, with jitter. Default 20 ms. */
  readonly retryDelayMs?: number;
  /** Read back after the write to catch a concurrent write (default true). */
  readonly verify?: boolean;
}

export interface TypedUpdateResult<T> {
  /** What was written; undefined for a delete (or nothing to delete). */
  readonly value: T | undefined;
  /** The written version's context (undefined when nothing had to be written). */
  readonly context: string | undefined;
  /** Cycles it took (1 without a concurrent write or a retry). */
  readonly attempts: number;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export class TypedKeys<T> {
  constructor(
    private readonly client: RingstoreClient,
    readonly codec: Codec<T>,
  ) {}

  private decode(key: string | Uint8Array, b: Buffer, contentType: string): T {
    try {
      return this.codec.decode(b);
    } catch (err) {
      throw new RingstoreError(
        0,
        "bad_value",
        `the value of ${JSON.stringify(typeof key === "string" ? key : Buffer.from(key).toString("hex"))} is not ${this.codec.name} (stored as ${contentType || "no type"}): ${(err as Error).message}`,
        { error: "bad_value" },
        { cause: err },
      );
    }
  }

  private encode(v: T): Uint8Array {
    try {
      return this.codec.encode(v);
    } catch (err) {
      throw new RingstoreError(
        0,
        "bad_argument",
        `cannot store it as ${this.codec.name}: ${(err as Error).message}`,
        {
          error: "bad_argument",
        },
      );
    }
  }

  private live(key: string | Uint8Array, siblings: readonly Sibling[]): T[] {
    return siblings.filter((s) => !s.deleted).map((s) => this.decode(key, s.value, s.contentType));
  }

  async get(key: string | Uint8Array, options: RequestOptions = {}): Promise<TypedGetResult<T>> {
    const r = await this.client.get(key, options);
    if (r.kind === "value")
      return { kind: "value", value: this.decode(key, r.value, r.contentType), context: r.context };
    if (r.kind === "siblings")
      return {
        kind: "siblings",
        values: this.live(key, r.siblings),
        deleted: r.siblings.some((s) => s.deleted),
        context: r.context,
      };
    return r;
  }

  /** Writes `value` (stored with the codec's content type); returns the new version's context. */
  async put(
    key: string | Uint8Array,
    value: T,
    options: RequestOptions & { readonly context?: string | undefined } = {},
  ): Promise<string> {
    return this.client.put(key, this.encode(value), { ...options, contentType: this.codec.contentType });
  }

  /** As the client's `delete`: reads first unless given a context; undefined when nothing was live. */
  async delete(
    key: string | Uint8Array,
    options: RequestOptions & { readonly context?: string | undefined } = {},
  ): Promise<string | undefined> {
    return this.client.delete(key, options);
  }

  /** One value from live values: the single one, `merge` of several, or `siblings` refused. */
  private resolve(key: string | Uint8Array, values: T[], merge: ((v: T[]) => T) | undefined): T | undefined {
    if (values.length <= 1) return values[0];
    if (merge === undefined)
      throw new RingstoreError(
        0,
        "siblings",
        `${JSON.stringify(typeof key === "string" ? key : Buffer.from(key).toString("hex"))} holds ${values.length} concurrent versions: pass a merge function (options.merge) to resolve them`,
        { error: "siblings", count: values.length },
      );
    return merge(values);
  }

  /**
   * Reads the key, applies `fn` to its value (undefined when it has none), writes the result (undefined:
   * deletes the key) with the read's context, and checks that no concurrent write slipped in between;
   * see the file's comment. `fn` may run more than once.
   */
  async update(
    key: string | Uint8Array,
    fn: (current: T | undefined) => T | undefined | Promise<T | undefined>,
    options: TypedUpdateOptions<T> = {},
  ): Promise<TypedUpdateResult<T>> {
    const maxAttempts = Math.max(1, options.maxAttempts ?? 5);
    const rw: RequestOptions = {
      ...(options.r !== undefined ? { r: options.r } : {}),
      ...(options.w !== undefined ? { w: options.w } : {}),
      ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
      ...(options.signal !== undefined ? { signal: options.signal } : {}),
    };
    // What the next cycle starts from: the value to apply fn to, and the context to write with.
    let base: { current: T | undefined; context: string | undefined; live: boolean } | undefined;
    let mine: Uint8Array | undefined;
    for (let attempt = 1; attempt <= maxAttempts; attempt++) {
      try {
        if (base === undefined) {
          const cur = await this.client.get(key, rw);
          const siblings =
            cur.kind === "value"
              ? [{ value: cur.value, contentType: cur.contentType, deleted: false }]
              : cur.kind === "siblings"
                ? cur.siblings
                : [];
          const values = this.live(key, siblings);
          base = {
            current: this.resolve(key, values, options.merge),
            context: cur.context,
            live: cur.kind !== "not_found",
          };
        }
        const next = await fn(base.current);
        let context: string | undefined;
        if (next === undefined) {
          mine = undefined;
          context = base.live ? await this.client.delete(key, { ...rw, context: base.context }) : undefined;
          if (context === undefined) return { value: undefined, context: undefined, attempts: attempt };
        } else {
          mine = this.encode(next);
          context = await this.client.put(key, mine, {
            ...rw,
            context: base.context,
            contentType: this.codec.contentType,
          });
        }
        if (options.verify === false) return { value: next, context, attempts: attempt };
        // Did a write by someone else land between our read and our write? It is our sibling now.
        const after = await this.client.get(key, rw);
        if (after.kind !== "siblings") return { value: next, context, attempts: attempt };
        const theirs = [...after.siblings];
        const own = theirs.findIndex((s) =>
          mine === undefined ? s.deleted : !s.deleted && Buffer.from(mine).equals(s.value),
        );
        if (own < 0) return { value: next, context, attempts: attempt }; // ours is already superseded
        theirs.splice(own, 1);
        if (attempt === maxAttempts)
          throw new RingstoreError(
            0,
            "conflict",
            `concurrent writes to the key kept winning: after ${attempt} attempts it holds ${after.siblings.length} versions (ours among them)`,
            { error: "conflict" },
          );
        // Ours lost the race: apply fn again to theirs, written over both.
        const values = this.live(key, theirs);
        base = { current: this.resolve(key, values, options.merge), context: after.context, live: true };
      } catch (err) {
        const retryable =
          err instanceof RingstoreError &&
          (err.code === "too_many_siblings" || err.code === "unavailable" || err.code === "unreachable");
        if (!retryable || attempt === maxAttempts) throw err;
        base = undefined; // start again from a fresh read
        await sleep(
          Math.min(1000, (options.retryDelayMs ?? 20) * 2 ** (attempt - 1)) * (0.5 + Math.random()),
        );
        if (options.signal?.aborted === true)
          throw new RingstoreError(
            0,
            "aborted",
            "the update was aborted",
            { error: "aborted" },
            {
              cause: options.signal.reason,
            },
          );
      }
    }
    throw new Error("unreachable: the loop returns or throws");
  }
}

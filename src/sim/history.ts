/**
 * What a test run records, for the checkers (checker.ts): the writes clients made, what each had read
 * before writing, how each ended, and the final state of every key at every replica. The simulator
 * (src/sim) and the real-fault suite (test/faults) both record this shape, so one set of checkers judges
 * both.
 *
 * Every value written in a checked run is a `CartValue` serialised as JSON: a write id unique in the run
 * (so a stored sibling names the write that made it) and the cart's items. Element names are unique per
 * add in the run, so an item names the add that put it there.
 */

/** The value of a cart key, as JSON in the stored value. */
export interface CartValue {
  /** The write that produced this value (unique in the run). */
  readonly w: string;
  /** The cart's items (a set: sorted, no repeats). */
  readonly items: readonly string[];
}

/**
 * How a client request ended:
 * - `ok`: acknowledged (2xx; a quorum replied);
 * - `failed`: definitely not applied anywhere (refused before any replica stored it, e.g. a 400 or a
 *   connection refused before the request was sent);
 * - `unknown`: may or may not have been applied (timeout, 503 after a partial write, connection lost).
 */
export type Outcome = "ok" | "failed" | "unknown";

export type WriteKind =
  /** A read-modify-write that adds `element` to the union of the siblings it read. */
  | "add"
  /** A read-modify-write that removes `element` (which it saw) from the union of the siblings it read. */
  | "remove"
  /** A write without a context (it observes nothing). */
  | "blind"
  /** A delete with the context of the read before it. */
  | "delete";

export interface WriteRecord {
  /** The write id, as in the value it wrote (deletes too have one, for the record only). */
  readonly id: string;
  readonly client: string;
  readonly key: string;
  readonly kind: WriteKind;
  /** For add and remove: the element. */
  readonly element?: string;
  /** The write ids of the siblings read before this write (its context covers exactly these). */
  readonly observed: readonly string[];
  /** The union of the items of the siblings read before this write. */
  readonly observedItems: readonly string[];
  /** The items this write stored (absent for delete). */
  readonly items?: readonly string[];
  readonly outcome: Outcome;
  /** The dot the coordinator gave the write ("counter@actor"), where its answer says (the simulator). */
  readonly dot?: string;
  /** Times (run clock, ms) when the request was sent and when its outcome was known. */
  readonly invokedAt: number;
  readonly completedAt: number;
}

/** One sibling as a replica holds it: the write it came from, or a tombstone of a delete. */
export interface FinalSibling {
  /** Write id of the value (for a tombstone: undefined unless known). */
  readonly w: string | undefined;
  readonly items: readonly string[];
  readonly deleted: boolean;
  /** The version's dot, "counter@actor": equal dots mean the same version. */
  readonly dot?: string;
  /**
   * The version's context (actor -> counter): the versions its writer had seen, which it supersedes.
   * Where known (the simulator).
   */
  readonly context?: Readonly<Record<string, number>>;
}

/** The final state: for each key, each replica's sibling set (replica id -> siblings). */
export interface FinalState {
  readonly keys: ReadonlyMap<string, ReadonlyMap<string, readonly FinalSibling[]>>;
}

export interface History {
  readonly writes: readonly WriteRecord[];
  readonly final: FinalState;
}

/** One violation a checker found, with what it takes to understand it. */
export interface Anomaly {
  readonly checker: string;
  readonly key: string;
  readonly message: string;
}

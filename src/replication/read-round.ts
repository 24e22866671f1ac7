/**
 * One read's round of requests (the coordinator's `get`): asks the first `first` of its targets (in
 * order), a target that fails is replaced at once by the next, and if the round has not finished within
 * `hedgeMs` the rest are asked too (a speculative retry: one slow replica costs `hedgeMs`, not the
 * timeout). It finishes once `needed` answered, `neededPrimaries` of them from primaries (pr), or when
 * that can no longer happen and no target asked is still to answer (so that a 503 says truly how many
 * replied), or at `timeoutMs`. Answers that come later are left to `asked` (read repair waits for them).
 */
import type { TimerHandle, Timers } from "../runtime/runtime.js";
import type { StoredSibling } from "../versioning/object-codec.js";
import type { ReplicaPeer } from "./coordinator.js";

/** A node a read asks: a primary, or a stand-in asked for the hint it holds for `hintFor`. */
export interface ReadTarget {
  readonly peer: ReplicaPeer;
  readonly hintFor: string | undefined;
}

/** A target the round asked, and its answer. */
export interface Asked {
  readonly target: ReadTarget;
  readonly answer: Promise<StoredSibling[]>;
}

export interface ReadRound {
  readonly ok: { readonly target: ReadTarget; readonly set: StoredSibling[] }[];
  readonly asked: Asked[];
}

/**
 * Once a quorum is out of reach, how long the coordinator still waits for the nodes it already asked
 * (its own disk included), so that the 503 says how many truly answered: long enough for a local fsync
 * or a live replica, short enough that a 503 stays fast when replicas are known to be down.
 */
export const TRUE_COUNT_GRACE_MS = 50;

export function readRound(
  targets: readonly ReadTarget[],
  key: Uint8Array,
  needed: number,
  neededPrimaries: number,
  first: number,
  hedgeMs: number,
  timeoutMs: number,
  timers: Timers,
): Promise<ReadRound> {
  const isPrimary = (t: ReadTarget) => t.hintFor === undefined;
  const primaries = targets.filter(isPrimary).length;
  return new Promise((resolve) => {
    const ok: { target: ReadTarget; set: StoredSibling[] }[] = [];
    const asked: Asked[] = [];
    let failed = 0;
    let failedPrimaries = 0;
    let okPrimaries = 0;
    let done = false;
    let grace: TimerHandle | undefined;
    const finish = () => {
      if (done) return;
      done = true;
      deadline.cancel();
      hedge?.cancel();
      grace?.cancel();
      resolve({ ok: [...ok], asked });
    };
    // Asking stops once r is out of reach; with only pr out of reach the targets are still asked, so
    // that the 503 says truly how many replied.
    const rImpossible = () => targets.length - failed < needed;
    const impossible = () => rImpossible() || primaries - failedPrimaries < neededPrimaries;
    const check = () => {
      const allIn = asked.length === ok.length + failed;
      if (ok.length >= needed && okPrimaries >= neededPrimaries) finish();
      else if (impossible() && allIn && (rImpossible() || asked.length === targets.length)) finish();
      // Out of reach: the targets still to answer get a short grace, so that the count is true.
      else if (impossible() && !allIn) grace ??= timers.after(TRUE_COUNT_GRACE_MS, finish);
    };
    const ask = () => {
      if (done || asked.length >= targets.length || rImpossible()) return;
      const target = targets[asked.length]!;
      const answer = target.peer.read(key, target.hintFor);
      asked.push({ target, answer });
      answer.then(
        (set) => {
          if (done) return;
          ok.push({ target, set });
          if (isPrimary(target)) okPrimaries++;
          check();
        },
        () => {
          if (done) return;
          failed++;
          if (isPrimary(target)) failedPrimaries++;
          ask();
          check();
        },
      );
    };
    const deadline = timers.after(timeoutMs, finish);
    const hedge =
      first < targets.length
        ? timers.after(Math.min(hedgeMs, timeoutMs), () => {
            while (!done && asked.length < targets.length && !rImpossible()) ask();
          })
        : undefined;
    for (let i = 0; i < first; i++) ask();
    check();
  });
}

/**
 * One write's round of stores (the coordinator's `write`), over the slots of a sloppy quorum (sloppy.ts):
 * one copy per primary, sent to the primary or to a stand-in for it. A store that fails (not one that is
 * merely slow) is sent at once to the next spare stand-in, for the same primary, while the deadline
 * allows. The round answers once `w` copies are acknowledged, `pw` of them by primaries themselves, or
 * once that can no longer happen (after a short grace for the stores still running, so that a 503 says
 * truly how many acknowledged), or at the deadline. It goes on in the background until every slot's
 * copy is acknowledged or the deadline passes: `settled` then says which primaries got no copy, for the
 * coordinator to keep a hint for them.
 */
import type { TimerHandle, Timers } from "../runtime/runtime.js";
import { TRUE_COUNT_GRACE_MS } from "./read-round.js";
import { replaceInSlot, type Slot, type SlotPlan } from "./sloppy.js";

export interface WriteRoundCount {
  /** Copies acknowledged, and of those, by primaries themselves. */
  readonly acked: number;
  readonly primaryAcked: number;
}

export interface WriteRound {
  /** When the request can be answered. */
  readonly answered: Promise<WriteRoundCount>;
  /** When every slot is acknowledged, or the deadline passed: the slots that got no acknowledged copy. */
  readonly settled: Promise<Slot[]>;
}

/** A deadline as the round needs it: expired yet, and a way to be told when it passes. */
export interface RoundDeadline {
  readonly expired: boolean;
  onExpire(fn: () => void): void;
}

export function writeRound(
  plan: SlotPlan,
  send: (slot: Slot) => Promise<void>,
  w: number,
  pw: number,
  deadline: RoundDeadline,
  timers: Timers,
): WriteRound {
  const acked = new Set<Slot>();
  let primaryAcked = 0;
  let running = 0;
  let runningPrimaries = 0;
  let answered = false;
  let settledAll = false;
  let grace: TimerHandle | undefined;
  let answer!: (c: WriteRoundCount) => void;
  let settle!: (s: Slot[]) => void;
  const answeredP = new Promise<WriteRoundCount>((r) => {
    answer = r;
  });
  const settledP = new Promise<Slot[]>((r) => {
    settle = r;
  });
  const count = (): WriteRoundCount => ({ acked: acked.size, primaryAcked });
  const finishAnswer = () => {
    if (answered) return;
    answered = true;
    grace?.cancel();
    answer(count());
  };
  const finishSettle = () => {
    if (settledAll) return;
    settledAll = true;
    finishAnswer();
    settle(plan.slots.filter((s) => !acked.has(s)));
  };
  const check = () => {
    if (running === 0 || acked.size === plan.slots.length) finishSettle();
    if (answered) return;
    if (acked.size >= w && primaryAcked >= pw) return finishAnswer();
    const impossible = acked.size + running < w || primaryAcked + runningPrimaries < pw;
    if (impossible) grace ??= timers.after(TRUE_COUNT_GRACE_MS, finishAnswer);
  };
  const launch = (slot: Slot) => {
    const toPrimary = slot.node === slot.primary;
    running++;
    if (toPrimary) runningPrimaries++;
    send(slot).then(
      () => {
        running--;
        if (toPrimary) runningPrimaries--;
        if (settledAll) return;
        acked.add(slot);
        if (toPrimary) primaryAcked++;
        check();
      },
      () => {
        running--;
        if (toPrimary) runningPrimaries--;
        if (settledAll) return;
        if (!deadline.expired && replaceInSlot(plan, slot)) launch(slot);
        check();
      },
    );
  };
  for (const slot of plan.slots) if (slot.node !== undefined) launch(slot);
  check();
  deadline.onExpire(finishSettle);
  return { answered: answeredP, settled: settledP };
}

/**
 * The checkers: what must hold of a run's history (history.ts) once the faults have healed and the
 * cluster has gone quiet. The simulator (src/sim) and the real-process fault suite (test/faults) both
 * judge their runs with `checkHistory`. Pure functions of the history: no clock, no I/O.
 *
 * Vocabulary. Every write has an id (the `w` of the CartValue it stored). `observed(x)` are the ids of
 * the siblings x read before writing; its context covered exactly those versions, so x supersedes them.
 * `ancestors(x)` = the union over o in observed(x) of {o} ∪ ancestors(o): everything x causally follows.
 * "Final siblings" are what one replica holds for a key at the end (`FinalState`).
 *
 * The checkers (each returns Anomaly[], empty when the property holds):
 *
 * 1. `checkAcknowledgedAdds` (no lost acknowledged add): every add with outcome `ok` has its element in
 *    the union of the items of the key's non-tombstone final siblings, at every replica of the key,
 *    unless a remove of that element, or a delete, whose read had seen the element (its observedItems
 *    hold it) has outcome `ok` or `unknown` (an unknown one may have been applied). A delete counts as a
 *    remove of everything it saw. Elements are unique per add, so "saw the element" means "followed the
 *    add".
 *
 * 2. `checkAcknowledgedWrites` (no lost acknowledged write): every write with outcome `ok` is, at every
 *    replica of its key, a final sibling or an ancestor of one. Deletes need care, because a tombstone
 *    may not name its write (over HTTP a delete stores no value, so its sibling has `w` undefined, and a
 *    later write that read the tombstone cannot list it in `observed`). The rule for an `ok` delete D:
 *    - D is a final sibling (a tombstone whose `w` is D's id) or an ancestor of one: satisfied, exactly
 *      as for any write;
 *    - otherwise, when tombstones are named (`tombstonesNamed`: the simulator stores the delete's id in
 *      its tombstone, so every later write that read it lists it): D is lost;
 *    - otherwise (tombstones unnamed): D is satisfied when none of the writes it observed is still a
 *      final sibling. This is exact for what a delete promises: D's context covers each observed
 *      version's dot, and a covered dot never comes back (a merge drops every sibling another sibling's
 *      context covers, and anything that later supersedes D's tombstone has a context at least D's).
 *      So a superseded version that "comes back" can only mean D was lost. It cannot see the loss of a
 *      delete that observed nothing (a delete of an absent key): that one is vacuously satisfied.
 *    With unnamed tombstones the chain of ancestors breaks at every delete, so a write that a delete
 *    (outcome ok or unknown) observed, directly or through ancestors, counts as possibly superseded by
 *    it. That is weaker: the loss of such a write together with an unknown delete that was never applied
 *    goes unseen. The same "observed versions stay gone" rule holds for every write, not only deletes;
 *    for the others it is already implied by checkers 2 and 4 together.
 *
 *    Purged tombstones (`tombstonesPurged`): a delete D that is neither a final sibling nor an ancestor
 *    of one at a replica may have had its tombstone purged there. D is then satisfied when none of its
 *    ancestors is a final sibling at that replica (what it superseded stayed gone), and it hides its
 *    ancestors as an unnamed tombstone would, but only then: a delete whose superseded versions are
 *    still there hides nothing (so the loss of a write it followed still shows).
 *
 * 2b. `checkNoResurrection` (deletes stay deleted): a key whose acknowledged delete followed every write
 *    of it that may have been applied holds no live version at any replica at the end.
 *
 * 3. `checkReplicasAgree`: every replica of a key holds the same set of versions (by dot; by write id,
 *    tombstone flag and items where dots are unknown). Replicas that hold nothing count as holding [].
 *
 * 4. `checkSiblingsConcurrent`: no final sibling is an ancestor of another final sibling of the same
 *    replica (the older one should have been superseded), and one write never appears twice (two dots
 *    for one client write: the write was applied twice).
 *
 * 5. `checkNoPhantoms`: every final sibling that names a write names one in the history that did not
 *    `fail` (failed means "applied nowhere"), and holds the items that write stored.
 *
 * 6. `checkUniqueDots` (a dot names one write, the invariant dotted version vectors rest on): no two
 *    writes were acknowledged under the same dot, and a final sibling whose dot an acknowledged write was
 *    given holds that write. Writes carry their dot only where the coordinator's answer gives it (the
 *    simulator); elsewhere this checker has nothing to judge.
 *
 * 7. `checkHintedHandoff` (every acknowledged write reached all N primaries without repair): see its
 *    comment; the simulator runs it (`hintCheck`) in place of checker 3, with read repair off.
 *
 * Per replica, not per key: after the quiet phase every replica must hold every acknowledged write, so
 * checkers 1 and 2 judge each replica's set; a write missing from one replica is reported once, listing
 * the replicas that lack it.
 */
import type { Anomaly, FinalSibling, History, WriteRecord } from "./history.js";

export interface CheckOptions {
  /**
   * Tombstones carry the id of the delete that made them (the simulator stores it), so a later write
   * that read a tombstone lists it in `observed`. Default false (HTTP deletes store no value).
   */
  readonly tombstonesNamed?: boolean;
  /**
   * Tombstones may have been purged (replication/tombstones.ts): a delete whose tombstone is gone is
   * judged by what it superseded (none of it may be a final sibling), as with unnamed tombstones, but
   * only where it left no trace (see checkAcknowledgedWrites).
   */
  readonly tombstonesPurged?: boolean;
}

/** Writes by id (the first record wins if an id repeats; `checkHistoryShape` reports repeats). */
function indexWrites(h: History): Map<string, WriteRecord> {
  const out = new Map<string, WriteRecord>();
  for (const w of h.writes) if (!out.has(w.id)) out.set(w.id, w);
  return out;
}

/** Every id reachable from `start` along `observed` edges (start itself excluded unless on a cycle). */
function reachableFrom(start: readonly string[], byId: ReadonlyMap<string, WriteRecord>): Set<string> {
  const seen = new Set<string>();
  const stack: string[] = [];
  for (const id of start) for (const o of byId.get(id)?.observed ?? []) stack.push(o);
  while (stack.length > 0) {
    const id = stack.pop()!;
    if (seen.has(id)) continue;
    seen.add(id);
    for (const o of byId.get(id)?.observed ?? []) if (!seen.has(o)) stack.push(o);
  }
  return seen;
}

/** ancestors(id): every write `id` causally follows, through the observed lists. */
export function ancestors(id: string, h: History): Set<string> {
  return reachableFrom([id], indexWrites(h));
}

const namedIds = (sibs: readonly FinalSibling[]): string[] =>
  sibs.flatMap((s) => (s.w === undefined ? [] : [s.w]));

/** The keys written in the history, plus the keys of the final state, sorted (stable reports). */
function allKeys(h: History): string[] {
  const keys = new Set<string>(h.final.keys.keys());
  for (const w of h.writes) keys.add(w.key);
  return [...keys].sort();
}

function replicasOf(h: History, key: string): [string, readonly FinalSibling[]][] {
  const m = h.final.keys.get(key);
  return m === undefined ? [] : [...m.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

function writesByKey(h: History): Map<string, WriteRecord[]> {
  const out = new Map<string, WriteRecord[]>();
  for (const w of h.writes) {
    const l = out.get(w.key);
    if (l === undefined) out.set(w.key, [w]);
    else l.push(w);
  }
  return out;
}

// ------------------------------------------------------------------ 1. no lost acknowledged add

export function checkAcknowledgedAdds(h: History): Anomaly[] {
  const out: Anomaly[] = [];
  for (const [key, writes] of writesByKey(h)) {
    // Elements some applied-or-maybe-applied remove or delete had seen: they may legitimately be gone.
    const removable = new Set<string>();
    for (const w of writes) {
      if (w.outcome === "failed") continue;
      if (w.kind === "remove" && w.element !== undefined && w.observedItems.includes(w.element))
        removable.add(w.element);
      if (w.kind === "delete") for (const e of w.observedItems) removable.add(e);
    }
    const replicas = replicasOf(h, key);
    for (const w of writes) {
      if (w.kind !== "add" || w.outcome !== "ok" || w.element === undefined || removable.has(w.element))
        continue;
      if (replicas.length === 0) {
        out.push({
          checker: "acknowledged-adds",
          key,
          message: `add ${w.id} of ${w.element} (acknowledged) is lost: no replica holds the key`,
        });
        continue;
      }
      const lacking = replicas
        .filter(([, sibs]) => !sibs.some((s) => !s.deleted && s.items.includes(w.element!)))
        .map(([r]) => r);
      if (lacking.length > 0)
        out.push({
          checker: "acknowledged-adds",
          key,
          message:
            `add ${w.id} of ${w.element} (acknowledged at ${w.completedAt} ms) is missing from the final ` +
            `value at ${lacking.join(", ")}, and no remove or delete that saw it was applied`,
        });
    }
  }
  return out;
}

// ------------------------------------------------------------------ 2. no lost acknowledged write

export function checkAcknowledgedWrites(h: History, opts: CheckOptions = {}): Anomaly[] {
  const out: Anomaly[] = [];
  const byId = indexWrites(h);
  for (const [key, writes] of writesByKey(h)) {
    const acked = writes.filter((w) => w.outcome === "ok");
    if (acked.length === 0) continue;
    const replicas = replicasOf(h, key);
    const lost = new Map<string, string[]>(); // write id -> replicas where it is lost
    const note = (w: WriteRecord, replica: string) => {
      const l = lost.get(w.id);
      if (l === undefined) lost.set(w.id, [replica]);
      else l.push(replica);
    };
    if (replicas.length === 0) for (const w of acked) note(w, "(no replica holds the key)");
    // Unnamed tombstones break ancestor chains at deletes: what a delete (applied or maybe applied)
    // observed may be superseded by it without any final sibling naming the delete.
    const deletes = writes.filter((w) => w.kind === "delete" && w.outcome !== "failed").map((w) => w.id);
    const hidden = opts.tombstonesNamed ? [] : deletes;
    for (const [replica, sibs] of replicas) {
      const finals = new Set(namedIds(sibs));
      let covered = reachableFrom([...finals, ...hidden], byId);
      // Purged tombstones: a delete that left no trace here, and none of whose ancestors is here either.
      const purged = opts.tombstonesPurged
        ? deletes.filter(
            (d) =>
              !finals.has(d) && !covered.has(d) && ![...reachableFrom([d], byId)].some((a) => finals.has(a)),
          )
        : [];
      if (purged.length > 0) covered = reachableFrom([...finals, ...hidden, ...purged], byId);
      for (const w of acked) {
        if (finals.has(w.id) || covered.has(w.id) || purged.includes(w.id)) continue;
        if (w.kind === "delete" && !opts.tombstonesNamed) {
          // Unnamed tombstones: the delete holds when nothing it superseded is a final sibling.
          if (!w.observed.some((o) => finals.has(o))) continue;
        }
        note(w, replica);
      }
    }
    for (const [id, where] of lost) {
      const w = byId.get(id)!;
      const back = w.observed.filter((o) => replicas.some(([, s]) => namedIds(s).includes(o)));
      out.push({
        checker: "acknowledged-writes",
        key,
        message:
          `${w.kind} ${id} (acknowledged at ${w.completedAt} ms) is neither a final sibling nor an ` +
          `ancestor of one at ${where.join(", ")}` +
          (back.length > 0 ? `; versions it superseded are still there: ${back.join(", ")}` : ""),
      });
    }
  }
  return out;
}

// ------------------------------------------------------------------ 2b. deletes stay deleted

/**
 * No resurrection: a key whose delete D (outcome `ok`) followed every write of the key that may have
 * been applied (every write other than a delete, outcome `ok` or `unknown`, is one of D's ancestors) is
 * deleted for good: no replica may hold a live version of it at the end, whether D's tombstone is still
 * there or was purged. A live version there can only be one D superseded, come back (or a phantom, which
 * checkNoPhantoms reports).
 */
export function checkNoResurrection(h: History): Anomaly[] {
  const out: Anomaly[] = [];
  const byId = indexWrites(h);
  for (const [key, writes] of writesByKey(h)) {
    const values = writes.filter((w) => w.kind !== "delete" && w.outcome !== "failed");
    const final = writes.find((d) => {
      if (d.kind !== "delete" || d.outcome !== "ok") return false;
      const before = reachableFrom([d.id], byId);
      return values.every((w) => before.has(w.id));
    });
    if (final === undefined) continue;
    for (const [replica, sibs] of replicasOf(h, key)) {
      const live = sibs.filter((s) => !s.deleted);
      if (live.length === 0) continue;
      out.push({
        checker: "no-resurrection",
        key,
        message:
          `delete ${final.id} (acknowledged at ${final.completedAt} ms) followed every write of the key, ` +
          `yet ${replica} holds live version${live.length === 1 ? "" : "s"} ` +
          `${live.map((s) => s.w ?? s.dot ?? "?").join(", ")}`,
      });
    }
  }
  return out;
}

// ------------------------------------------------------------------ 3. replicas agree

function versionName(s: FinalSibling): string {
  if (s.dot !== undefined) return s.dot;
  return `${s.deleted ? "tombstone" : "value"}:${s.w ?? "?"}:${s.items.join(",")}`;
}

export function checkReplicasAgree(h: History): Anomaly[] {
  const out: Anomaly[] = [];
  for (const key of allKeys(h)) {
    const replicas = replicasOf(h, key);
    if (replicas.length < 2) continue;
    const sets = replicas.map(([r, sibs]) => [r, [...new Set(sibs.map(versionName))].sort()] as const);
    const [r0, first] = sets[0]!;
    for (const [r, vs] of sets.slice(1)) {
      if (vs.length === first.length && vs.every((v, i) => v === first[i])) continue;
      out.push({
        checker: "replicas-agree",
        key,
        message: `replicas disagree: ${r0} holds [${first.join(" ")}], ${r} holds [${vs.join(" ")}]`,
      });
    }
  }
  return out;
}

// ------------------------------------------------------------------ 4. siblings are concurrent

export function checkSiblingsConcurrent(h: History): Anomaly[] {
  const out: Anomaly[] = [];
  const byId = indexWrites(h);
  for (const key of allKeys(h))
    for (const [replica, sibs] of replicasOf(h, key)) {
      const ids = namedIds(sibs);
      const counts = new Map<string, number>();
      for (const id of ids) counts.set(id, (counts.get(id) ?? 0) + 1);
      for (const [id, n] of counts)
        if (n > 1)
          out.push({
            checker: "siblings-concurrent",
            key,
            message: `write ${id} appears as ${n} siblings at ${replica} (one write applied ${n} times)`,
          });
      const finals = new Set(ids);
      for (const id of [...counts.keys()]) {
        const older = [...reachableFrom([id], byId)].filter((a) => finals.has(a) && a !== id).sort();
        if (older.length > 0)
          out.push({
            checker: "siblings-concurrent",
            key,
            message: `at ${replica}, sibling ${id} causally follows siblings ${older.join(", ")}, which should have been superseded`,
          });
      }
    }
  return out;
}

// ------------------------------------------------------------------ 6. unique dots

export function checkUniqueDots(h: History): Anomaly[] {
  const out: Anomaly[] = [];
  const byDot = new Map<string, WriteRecord>();
  for (const w of h.writes) {
    if (w.dot === undefined || w.outcome !== "ok") continue;
    const first = byDot.get(`${w.key}\u0000${w.dot}`);
    if (first === undefined) byDot.set(`${w.key}\u0000${w.dot}`, w);
    else
      out.push({
        checker: "unique-dots",
        key: w.key,
        message: `writes ${first.id} and ${w.id} were both acknowledged as version ${w.dot}`,
      });
  }
  for (const key of allKeys(h))
    for (const [replica, sibs] of replicasOf(h, key))
      for (const s of sibs) {
        const w = s.dot === undefined ? undefined : byDot.get(`${key}\u0000${s.dot}`);
        if (w !== undefined && s.w !== undefined && s.w !== w.id)
          out.push({
            checker: "unique-dots",
            key,
            message: `version ${s.dot} at ${replica} holds write ${s.w}, but write ${w.id} was acknowledged as ${s.dot}`,
          });
      }
  return out;
}

// ------------------------------------------------------------------ 5. no phantoms

export function checkNoPhantoms(h: History): Anomaly[] {
  const out: Anomaly[] = [];
  const byId = indexWrites(h);
  for (const key of allKeys(h))
    for (const [replica, sibs] of replicasOf(h, key))
      for (const s of sibs) {
        if (s.w === undefined) continue;
        const w = byId.get(s.w);
        const problem =
          w === undefined
            ? "names no write of the history"
            : w.key !== key
              ? `belongs to key ${w.key}`
              : w.outcome === "failed"
                ? "names a write whose outcome was failed (applied nowhere)"
                : w.kind === "delete" && !s.deleted
                  ? "is a value, but its write was a delete"
                  : w.kind !== "delete" && s.deleted
                    ? "is a tombstone, but its write was not a delete"
                    : !s.deleted && !sameItems(s.items, w.items ?? [])
                      ? `holds [${s.items.join(",")}], but its write stored [${(w.items ?? []).join(",")}]`
                      : undefined;
        if (problem !== undefined)
          out.push({ checker: "no-phantoms", key, message: `sibling ${s.w} at ${replica} ${problem}` });
      }
  return out;
}

function sameItems(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

// ------------------------------------------------------------------ 7. hinted handoff delivered

/**
 * Why a write may legitimately be missing from one primary, as the caller knows it (checkHintedHandoff);
 * undefined when it may not.
 */
export type Excuse = (w: WriteRecord, primary: string) => string | undefined;

/** "counter@actor" -> its parts (undefined if it is not one). */
export function parseDot(dot: string): { counter: number; actor: string } | undefined {
  const at = dot.indexOf("@");
  const counter = Number(dot.slice(0, at));
  return at > 0 && Number.isInteger(counter) ? { counter, actor: dot.slice(at + 1) } : undefined;
}

/**
 * Does the replica hold the version `dot`, or a version that superseded it (one whose context covers it)?
 * Only dots and contexts count here, not the history's `observed` lists: this is what the store itself
 * decides when it merges.
 */
function holdsOrSupersedes(sibs: readonly FinalSibling[], dot: string): boolean {
  const d = parseDot(dot);
  return sibs.some(
    (s) =>
      s.dot === dot || (d !== undefined && s.context !== undefined && (s.context[d.actor] ?? 0) >= d.counter),
  );
}

/**
 * Hinted handoff delivers (issue 14): every acknowledged write (outcome `ok`) is on every replica the
 * final state records for its key (the key's N primaries under the final ring): its dot is one of the
 * final siblings there, or is covered by the context of one (a later write that had seen it superseded
 * it). Needs the writes' dots and the final siblings' dots and contexts (the simulator records them);
 * a write without a dot is not judged.
 *
 * It is meant for a run judged after heal and quiet with read repair and anti-entropy off, where the
 * only ways a version reaches a primary are the write's own round and hinted handoff: a primary that
 * was down, cut off or slow while the write was acknowledged gets it from a stand-in's hint, or from
 * the hint its coordinator keeps for a primary that acknowledged nothing by the deadline. It holds only
 * where nothing legitimately loses a copy:
 * - the final ring's primaries are the write's primaries: no membership changes (ownership handoff moves
 *   data to new owners, which this check does not follow);
 * - durable storage: the memory engine loses everything at a crash; with LSM storage a primary's or a
 *   stand-in's acknowledgement means the copy was fsynced there;
 * - no primary stayed away longer than the hint window (hints older than it are dropped and left to
 *   anti-entropy; the simulator's window, 3 h, is far longer than any run);
 * - the hint a coordinator keeps for a primary that acknowledged nothing is written after the client's
 *   answer, once the write's deadline passed: a coordinator that crashed before then lost it (Dynamo and
 *   Cassandra have the same gap, which anti-entropy closes). `excuse` names such copies: one it excuses
 *   is not reported.
 */
export function checkHintedHandoff(h: History, excuse?: Excuse): Anomaly[] {
  const out: Anomaly[] = [];
  for (const [key, writes] of writesByKey(h)) {
    const replicas = replicasOf(h, key);
    for (const w of writes) {
      if (w.outcome !== "ok" || w.dot === undefined) continue;
      const missing =
        replicas.length === 0
          ? ["(no replica holds the key)"]
          : replicas
              .filter(([r, sibs]) => !holdsOrSupersedes(sibs, w.dot!) && excuse?.(w, r) === undefined)
              .map(([r]) => r);
      if (missing.length === 0) continue;
      out.push({
        checker: "hinted-handoff",
        key,
        message:
          `${w.kind} ${w.id} (acknowledged at ${w.completedAt} ms as version ${w.dot}) is not on ` +
          `primar${missing.length === 1 ? "y" : "ies"} ${missing.join(", ")}: no sibling there is it or ` +
          "supersedes it",
      });
    }
  }
  return out;
}

// ------------------------------------------------------------------ the history's own shape

/** Write ids are unique; observed ids name writes of the same key recorded earlier (or unknown ones). */
export function checkHistoryShape(h: History): Anomaly[] {
  const out: Anomaly[] = [];
  const seen = new Map<string, WriteRecord>();
  for (const w of h.writes) {
    if (seen.has(w.id))
      out.push({ checker: "history-shape", key: w.key, message: `write id ${w.id} is recorded twice` });
    seen.set(w.id, w);
  }
  for (const w of h.writes)
    for (const o of w.observed) {
      const x = seen.get(o);
      if (x !== undefined && x.key !== w.key)
        out.push({
          checker: "history-shape",
          key: w.key,
          message: `write ${w.id} observed ${o}, a write of another key`,
        });
    }
  return out;
}

/** Runs every checker; anomalies in checker order, then key order. */
export function checkHistory(h: History, opts: CheckOptions = {}): Anomaly[] {
  return [
    ...checkHistoryShape(h),
    ...checkAcknowledgedAdds(h),
    ...checkAcknowledgedWrites(h, opts),
    ...checkNoResurrection(h),
    ...checkReplicasAgree(h),
    ...checkSiblingsConcurrent(h),
    ...checkNoPhantoms(h),
    ...checkUniqueDots(h),
  ];
}

/**
 * The checkers for a run judged without read repair (the simulator's hint check): the ones that judge
 * each replica's own set (4, 5, 6), then `checkHintedHandoff` in place of 1, 2 and 3. Checker 3 does not
 * hold without repair: a write that reached fewer than N replicas and left no hint (one whose outcome was
 * unknown, whose coordinator crashed) stays where it reached. Checkers 1 and 2 judge the same per-replica
 * loss as the hint check, by the history's observed lists rather than by dots and contexts, and without
 * its excuse: the hint check implies them.
 */
export function checkHistoryWithoutRepair(h: History, excuse?: Excuse): Anomaly[] {
  return [
    ...checkHistoryShape(h),
    ...checkSiblingsConcurrent(h),
    ...checkNoPhantoms(h),
    ...checkUniqueDots(h),
    ...checkHintedHandoff(h, excuse),
  ];
}

/** One line per anomaly, for reports. */
export function formatAnomalies(anomalies: readonly Anomaly[]): string {
  return anomalies.map((a) => `[${a.checker}] key ${JSON.stringify(a.key)}: ${a.message}`).join("\n");
}

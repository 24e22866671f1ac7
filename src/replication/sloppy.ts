/**
 * Sloppy quorum (Dynamo 4.6): which nodes a request goes to when some of a key's replicas are down.
 *
 * A key's preference list names its N primaries. For each primary there is a *slot*: the primary itself
 * when it is healthy (the failure detector does not see it down), else the next healthy node after the
 * list on the ring (its fallbacks, ring.ts), which stands in for it: a write it takes is kept as a hint
 * naming that primary and delivered to it later (hints.ts, hint-delivery.ts), and a read asks it for
 * that hint. So a request goes to the first N healthy nodes of the key's extended list, and each copy
 * is for one primary. A stand-in that fails is replaced by the next spare fallback, for the same
 * primary.
 *
 * Pure: a function of the lists and of health, so that every coordinator decides the same from the same
 * view.
 */
import { assert } from "../core/assert.js";

/** Where one primary's copy goes. */
export interface Slot {
  /** The primary this copy is for. */
  readonly primary: string;
  /** The node that takes it: the primary, or a stand-in for it; undefined when nobody is left. */
  node: string | undefined;
}

/** A request's slots, and the spare fallbacks that may still stand in for a slot whose node failed. */
export interface SlotPlan {
  readonly slots: Slot[];
  /** Healthy fallbacks not in a slot, in ring order. */
  readonly spares: string[];
}

/**
 * Plans the slots of a request. `first`: a node to use as the first stand-in (a coordinator that stands
 * in itself: it holds the write it versioned); it must be one of `fallbacks`.
 */
export function planSlots(
  primaries: readonly string[],
  fallbacks: readonly string[],
  healthy: (id: string) => boolean,
  first?: string,
): SlotPlan {
  assert(
    first === undefined || fallbacks.includes(first),
    () => `stand-in ${first} is not a fallback of the key [${fallbacks.join(", ")}]`,
  );
  const spares = fallbacks.filter((id) => id !== first && healthy(id));
  if (first !== undefined) spares.unshift(first);
  const slots: Slot[] = primaries.map((p) => ({
    primary: p,
    node: healthy(p) ? p : spares.shift(),
  }));
  assertPlan(primaries, slots, spares);
  return { slots, spares };
}

/**
 * The fallbacks a request's slots use as stand-ins when no stand-in fails: the first k healthy fallbacks,
 * k the primaries that are down. Reads and writes of the key go to the same nodes whichever node plans
 * them, as long as their views of health agree; a node coordinates a write as a stand-in only if it is one
 * of these, so its copy is where reads look.
 */
export function standInSet(
  primaries: readonly string[],
  fallbacks: readonly string[],
  healthy: (id: string) => boolean,
): string[] {
  const down = primaries.filter((p) => !healthy(p)).length;
  return fallbacks.filter((id) => healthy(id)).slice(0, down);
}

/** The slot's node failed: the next spare stands in for its primary (false when none is left). */
export function replaceInSlot(plan: SlotPlan, slot: Slot): boolean {
  slot.node = plan.spares.shift();
  return slot.node !== undefined;
}

/** Is the slot's node a stand-in (not the primary itself)? */
export function standsIn(slot: Slot): boolean {
  return slot.node !== undefined && slot.node !== slot.primary;
}

function assertPlan(primaries: readonly string[], slots: readonly Slot[], spares: readonly string[]): void {
  const used = slots.map((s) => s.node).filter((n): n is string => n !== undefined);
  assert(
    new Set(used).size === used.length && used.every((n) => !spares.includes(n)),
    () => `a node in two slots, or in a slot and spare: [${used.join(", ")}] / [${spares.join(", ")}]`,
  );
  assert(slots.length === primaries.length, () => `${slots.length} slots for ${primaries.length} primaries`);
}

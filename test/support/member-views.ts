/** Membership entries and rings as gossip carries them, for the membership tests. */
import type { MemberView, RingView } from "../../src/transport/messages.js";

/** Member `id`'s entry (API address `api-ID`, peer address `ID`, weight 1, no zone). */
export const memberView = (
  id: string,
  status: MemberView["status"],
  incarnation = 2,
  heartbeat = 1,
): MemberView => ({
  id,
  api: `api-${id}`,
  peer: id,
  weight: 1,
  zone: undefined,
  status,
  incarnation,
  heartbeat,
});

/** Ring `version` of `partitions` partitions owned by `ids` in turn (each member at incarnation 1). */
export const roundRobinRing = (ids: readonly string[], partitions: number, version = 1): RingView => ({
  version,
  partitions,
  owners: Array.from({ length: partitions }, (_, i) => ids[i % ids.length]!),
  members: ids.map((id) => `${id}:1`),
});

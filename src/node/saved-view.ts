/**
 * The node's saved view, `members.json` in its data directory: the members, the ring, and the ring of its
 * last complete handoff pass, so that a restarted node finds its peers again and knows its own status (a
 * node that left stays out). This file holds the format; data-dir.ts reads and writes it.
 *
 * JSON `{format: "ringstore-members", version: 1, members, ring, handedOff, crc32}`, the crc over the JSON
 * of the three fields.
 */
import { crc32 } from "node:zlib";
import type { MemberView, RingView } from "../transport/messages.js";
import { ConfigError } from "./config.js";

export interface SavedView {
  readonly members: MemberView[];
  readonly ring: RingView | null;
  /** The ring of the last complete handoff pass (handoff.ts); absent in views saved before it existed. */
  readonly handedOff?: RingView | null;
  /**
   * The final entries of departed members this node forgot (membership.ts): kept so that their ids stay
   * refused after a restart. Absent in views saved before it existed (and when there are none).
   */
  readonly forgotten?: MemberView[];
}

/** A ring read back from members.json, checked enough to build a preference table from it. */
function savedRing(x: unknown): RingView | null {
  const r = x as RingView | null | undefined;
  if (r === null || typeof r !== "object") return null;
  const ok =
    Number.isSafeInteger(r.version) &&
    Number.isSafeInteger(r.partitions) &&
    Array.isArray(r.owners) &&
    r.owners.length === r.partitions &&
    r.owners.every((o) => typeof o === "string") &&
    Array.isArray(r.members);
  return ok ? r : null;
}

const VIEW_FORMAT = "ringstore-members";

function viewChecksum(v: SavedView): number {
  // The forgotten members join the checksummed body only when there are some, so that a view saved
  // before they existed checks as it did.
  const forgotten = v.forgotten !== undefined && v.forgotten.length > 0 ? { forgotten: v.forgotten } : {};
  return crc32(
    JSON.stringify({ members: v.members, ring: v.ring, handedOff: v.handedOff ?? null, ...forgotten }),
  );
}

/** The view in a parsed file. An unreadable handed-off ring only costs a pass from the current ring. */
function viewOf(j: SavedView): SavedView {
  const forgotten = Array.isArray(j.forgotten) ? { forgotten: j.forgotten } : {};
  return { members: j.members, ring: j.ring ?? null, handedOff: savedRing(j.handedOff), ...forgotten };
}

/** How every saved view of this format begins (encodeView puts the format first). */
const VIEW_HEADER = `{"format":"${VIEW_FORMAT}"`;

/**
 * The view in members.json's text (`file` names it in errors). A file of this format that is damaged (not
 * JSON, a checksum mismatch) or of another version is a ConfigError: the view holds this node's own
 * status (a node that left must not come back), so it is not silently replaced. A view saved before the
 * file had a format (written without fsync, so a crash could leave it torn) is read if it can be, and
 * treated as missing (undefined) if not.
 */
export function decodeView(text: string, file: string): SavedView | undefined {
  type Saved = SavedView & { format?: unknown; version?: unknown; crc32?: unknown };
  if (!text.startsWith(VIEW_HEADER)) {
    try {
      const legacy = JSON.parse(text) as Saved;
      if (legacy === null || typeof legacy !== "object" || !Array.isArray(legacy.members)) return undefined;
      return viewOf(legacy);
    } catch {
      return undefined;
    }
  }
  const damaged = (why: string) =>
    new ConfigError(
      `${file} is damaged (${why}): it holds this node's last membership view and its own status; if the node has not left its cluster, remove the file and start the node with --join MEMBER to fetch the view again`,
    );
  let j: Saved;
  try {
    j = JSON.parse(text);
  } catch {
    throw damaged("not valid JSON");
  }
  if (j.version !== 1)
    throw new ConfigError(
      `${file} has format version ${JSON.stringify(j.version)}; this build reads version 1 (was it written by a newer ringstore?)`,
    );
  if (!Array.isArray(j.members)) throw damaged("no member list");
  if (j.crc32 !== viewChecksum(j)) throw damaged("checksum mismatch");
  return viewOf(j);
}

export function encodeView(body: SavedView): string {
  const { forgotten, ...rest } = body;
  const more = forgotten !== undefined && forgotten.length > 0 ? { forgotten } : {};
  return JSON.stringify({ format: VIEW_FORMAT, version: 1, ...rest, ...more, crc32: viewChecksum(body) });
}

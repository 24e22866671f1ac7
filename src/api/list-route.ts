/**
 * `GET /kv/?limit=N&cursor=C` (../shared/spec/http-api.md): a page of the cluster's live keys,
 * `{"keys": ["<percent-encoded key>", ...], "cursor": "<token>" | null}`. The cursor (listing/cursor.ts)
 * is opaque, signed with the cluster's secret, and good on any node; `null` means the listing is done.
 * What a page holds and what the listing guarantees: listing/pager.ts.
 */

import type { ListingPosition } from "../listing/cursor.js";
import { decodeCursor, encodeCursor, InvalidCursorError, startPosition } from "../listing/cursor.js";
import type { PageLimits, PageOutcome } from "../listing/pager.js";
import { ApiError } from "./api-error.js";
import type { Call } from "./http-server.js";
import { single } from "./params.js";

/** The keys of a page by default, and at most. */
export const DEFAULT_LIST_LIMIT = 1000;
export const MAX_LIST_LIMIT = 10_000;
/** A page also ends once its keys add up to this many bytes. */
const PAGE_BYTES = 1 << 20;
/** A page is answered after this long with what it has (possibly no key: the cursor goes on). */
const PAGE_TIME_MS = 2000;
/** Requests to replicas per page at most. */
const PAGE_MAX_ASKS = 64;

/** The cluster's key listing as the API needs it (node/key-listing.ts). */
export interface KeyListingService {
  /** Q: a cursor of another ring size is refused. */
  readonly partitions: number;
  page(position: ListingPosition, limits: PageLimits): Promise<PageOutcome>;
}

export interface ListRouteDeps {
  /** Absent: the node lists nothing (404). */
  readonly listing?: KeyListingService;
  /** Signs and checks cursors. */
  readonly secret: Uint8Array;
}

/** A key as the page shows it: percent-encoded, with RFC 3986's unreserved characters as they are. */
export function percentEncode(key: Uint8Array): string {
  let out = "";
  for (const c of key) {
    const unreserved =
      (c >= 0x30 && c <= 0x39) ||
      (c >= 0x41 && c <= 0x5a) ||
      (c >= 0x61 && c <= 0x7a) ||
      c === 0x2d ||
      c === 0x2e ||
      c === 0x5f ||
      c === 0x7e;
    out += unreserved ? String.fromCharCode(c) : `%${c < 16 ? "0" : ""}${c.toString(16).toUpperCase()}`;
  }
  return out;
}

function parseLimit(v: string | undefined): number {
  if (v === undefined) return DEFAULT_LIST_LIMIT;
  if (!/^[0-9]{1,9}$/.test(v) || Number(v) < 1 || Number(v) > MAX_LIST_LIMIT)
    throw new ApiError(400, "bad_parameter", `limit must be an integer 1..${MAX_LIST_LIMIT}; got "${v}"`);
  return Number(v);
}

export function listRoute(deps: ListRouteDeps): (c: Call) => Promise<void> {
  return async (c) => {
    const listing = deps.listing;
    if (listing === undefined) return c.error(404, "not_found", "this node does not list keys");
    const q = c.query();
    const limit = parseLimit(single(q, "limit"));
    const token = single(q, "cursor");
    let position: ListingPosition;
    try {
      position =
        token === undefined || token === ""
          ? startPosition(listing.partitions)
          : decodeCursor(token, deps.secret, listing.partitions);
    } catch (err) {
      if (err instanceof InvalidCursorError) return c.error(400, "bad_cursor", err.message);
      throw err;
    }
    const out = await listing.page(position, {
      keys: limit,
      bytes: PAGE_BYTES,
      timeMs: PAGE_TIME_MS,
      maxAsks: PAGE_MAX_ASKS,
    });
    if (out.kind === "unavailable") {
      const ps = out.partitions;
      return c.error(
        503,
        "unavailable",
        ps.length === 0
          ? "this node has no ring yet: try again in a moment, or another node"
          : `no replica of ${ps.length} partition(s) still to list can be reached now (partitions ${ps.slice(0, 8).join(", ")}${ps.length > 8 ? ", ..." : ""}): try again with the same cursor once they are back`,
        { partitions: ps.length },
      );
    }
    c.json(200, {
      keys: out.keys.map(percentEncode),
      cursor: out.next === null ? null : encodeCursor(out.next, deps.secret),
    });
  };
}

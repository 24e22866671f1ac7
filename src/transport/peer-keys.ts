/**
 * The cluster key as the peer transport uses it. A cluster key is 32 random bytes (node/cluster-key-file.ts
 * keeps it on disk); peers never use it directly. Each key gives, by HKDF-SHA256 (RFC 5869) with labels of
 * their own:
 * - a TLS 1.3 pre-shared key (32 bytes), which authenticates both ends of a peer connection and, with the
 *   (EC)DHE share that OpenSSL's psk_dhe_ke mode adds, keys its encryption (forward secrecy: a key found
 *   later does not open traffic recorded before);
 * - a key id (8 bytes, as 16 hex digits), the PSK identity a connecting peer names in its ClientHello, in
 *   clear: the listener picks the PSK by it, so a node can accept two keys at once (rotation). It is a
 *   one-way function of the key: it tells an eavesdropper which key a connection uses, nothing of the key.
 * Deriving rather than using the key itself keeps each use of the key apart, so the same key may later
 * sign or encrypt other things without one use weakening another.
 *
 * A node connects with its current key and accepts its current key and at most one other (rotation:
 * README, "Peer security").
 */
import { hkdfSync } from "node:crypto";

/** Bytes of a cluster key. */
export const CLUSTER_KEY_BYTES = 32;
/** Keys a node holds at once: the current one and one more that it accepts (rotation). */
export const MAX_PEER_KEYS = 2;

const SALT = "ringstore cluster key";
const PSK_INFO = "ringstore peer tls 1.3 psk v1";
const ID_INFO = "ringstore peer tls 1.3 psk identity v1";

export interface PeerKey {
  /** The PSK identity: 16 hex digits, a one-way function of the key. */
  readonly id: string;
  /** The TLS 1.3 pre-shared key. */
  readonly psk: Buffer;
}

export interface PeerKeys {
  /** The key this node connects with. */
  readonly current: PeerKey;
  /** Every key this node accepts from connecting peers: the current one first, at most MAX_PEER_KEYS. */
  readonly accepted: readonly PeerKey[];
}

function hkdf(key: Uint8Array, info: string, bytes: number): Buffer {
  return Buffer.from(hkdfSync("sha256", key, SALT, info, bytes));
}

/** The PSK and identity of one cluster key. */
export function derivePeerKey(key: Uint8Array): PeerKey {
  if (key.length !== CLUSTER_KEY_BYTES)
    throw new RangeError(`a cluster key is ${CLUSTER_KEY_BYTES} bytes, not ${key.length}`);
  return { id: hkdf(key, ID_INFO, 8).toString("hex"), psk: hkdf(key, PSK_INFO, 32) };
}

/** The keys of a node: `current`, and `other` (accepted too) if given and not the same key. */
export function peerKeys(current: Uint8Array, other?: Uint8Array): PeerKeys {
  const c = derivePeerKey(current);
  const o = other === undefined ? undefined : derivePeerKey(other);
  return { current: c, accepted: o === undefined || o.id === c.id ? [c] : [c, o] };
}

/** "current abc, also accepts def": for logs and /status. */
export function describePeerKeys(k: PeerKeys): string {
  const others = k.accepted.filter((x) => x.id !== k.current.id).map((x) => x.id);
  return `key ${k.current.id}${others.length > 0 ? `, also accepting ${others.join(", ")}` : ""}`;
}

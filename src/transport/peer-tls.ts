/**
 * TLS for peer connections: TLS 1.3 only, one cipher suite, authenticated by a pre-shared key derived
 * from the cluster key (peer-keys.ts) on both ends, no certificates.
 *
 * - The connecting side names its current key's id as the PSK identity; the listening side looks the id
 *   up among the keys it accepts and answers with nothing else: an unknown id or a wrong key fails the
 *   handshake (alert 40 handshake_failure, or 47 illegal_parameter when the binder does not verify),
 *   before a byte of the peer protocol is read or written. So a peer without the key learns nothing: not
 *   the cluster id, not the secret, not whether its guess was close.
 * - Both ends prove the key (the server's Finished is keyed by it too), so a node never talks to a
 *   listener that only pretends to be a member.
 * - TLS_AES_128_GCM_SHA256: AES-GCM runs on the CPU's AES instructions; a peer connection is long-lived,
 *   so the handshake (about a millisecond) is paid once per peer, not per request.
 */
import { randomBytes } from "node:crypto";
import type * as net from "node:net";
import * as tls from "node:tls";
import type { PeerKey, PeerKeys } from "./peer-keys.js";

/**
 * What the listener answers a key id it does not hold with: a PSK nobody has, so that the handshake
 * fails exactly as it does for a known id with a wrong key (the binder does not verify), and a peer
 * cannot tell an unknown id from a wrong key.
 */
const NOBODYS_PSK = randomBytes(32);

const TLS_OPTIONS = {
  ciphers: "TLS_AES_128_GCM_SHA256",
  minVersion: "TLSv1.3",
  maxVersion: "TLSv1.3",
} as const;

/**
 * Wraps an accepted socket in TLS as the listening side. `keys()` is read at the handshake (the keys
 * may change: rotation); `onIdentity` learns which key id the peer named, and whether it is one of ours
 * (the handshake still fails if the peer does not prove that key).
 */
export function serverTls(
  raw: net.Socket,
  keys: () => PeerKeys | undefined,
  onIdentity: (id: string, known: boolean) => void,
): tls.TLSSocket {
  const options: tls.TLSSocketOptions & Pick<tls.TlsOptions, "pskCallback"> = {
    isServer: true,
    ...TLS_OPTIONS,
    pskCallback: (_socket: tls.TLSSocket, identity: string) => {
      const k = keys()?.accepted.find((x) => x.id === identity);
      onIdentity(identity, k !== undefined);
      return k === undefined ? NOBODYS_PSK : k.psk;
    },
  };
  return new tls.TLSSocket(raw, options);
}

/** Runs TLS over `raw` (a TCP connection being made to a peer) with `key` (our current one). */
export function connectTls(raw: net.Socket, key: PeerKey): tls.TLSSocket {
  return tls.connect({
    socket: raw,
    ...TLS_OPTIONS,
    pskCallback: () => ({ psk: key.psk, identity: key.id }),
    // No certificate is involved: the PSK authenticates the server. (A listener that sends one is not a
    // ringstore peer port: see handshakeFailure.)
    checkServerIdentity: () => undefined,
  });
}

/** Why a TLS handshake failed, as far as the connecting side can tell. */
export type HandshakeFailure =
  /** The listener speaks TLS 1.3 but refused our key (it holds another one, or none). */
  | "key_refused"
  /** The listener answered with something that is not TLS (plain peer protocol, HTTP, ...). */
  | "not_tls"
  /** The listener offered a certificate: some other TLS server (an https API port, say). */
  | "certificate"
  /** Anything else (the connection closed or reset during the handshake, ...). */
  | "other";

export function handshakeFailure(err: unknown): HandshakeFailure {
  const code = (err as { code?: unknown }).code;
  if (code === "ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE" || code === "ERR_SSL_SSLV3_ALERT_ILLEGAL_PARAMETER")
    return "key_refused";
  if (
    code === "ERR_SSL_WRONG_VERSION_NUMBER" ||
    code === "ERR_SSL_PACKET_LENGTH_TOO_LONG" ||
    code === "ERR_SSL_RECORD_LAYER_FAILURE" ||
    code === "ERR_SSL_UNEXPECTED_RECORD"
  )
    return "not_tls";
  if (
    typeof code === "string" &&
    (code.includes("CERT") ||
      code === "UNABLE_TO_VERIFY_LEAF_SIGNATURE" ||
      code === "ERR_TLS_CERT_ALTNAME_INVALID")
  )
    return "certificate";
  return "other";
}

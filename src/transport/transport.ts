/**
 * The transport interface: request/answer between nodes, by peer address, each answer typed by its
 * request. TCP (tcp-transport.ts) implements it for real nodes; the simulator's network
 * (src/sim/sim-network.ts) implements it under virtual time. One conformance suite
 * (test/transport/conformance.test.ts) holds both to the same contract.
 */
import type { AnswerBody, AnswerOf, RequestBody, RequestKind, RequestOf } from "./messages.js";

export type TransportErrorCode =
  | "ERR_UNREACHABLE"
  | "ERR_TIMEOUT"
  | "ERR_REJECTED"
  | "ERR_REMOTE"
  | "ERR_OVERLOADED"
  | "ERR_CLOSED"
  | "ERR_PROTOCOL"
  /** The peer refused this node's cluster key (the TLS handshake failed), or this node has none yet. */
  | "ERR_AUTH";

export class TransportError extends Error {
  /**
   * The request may have reached the peer's handler before the failure (it was written to a connection
   * that then broke). A caller that must not apply a request twice treats it like a timeout: the outcome
   * is unknown, so it does not retry the request elsewhere. ERR_TIMEOUT and ERR_REMOTE imply it.
   */
  readonly maybeDelivered: boolean;

  constructor(
    readonly code: TransportErrorCode,
    message: string,
    options?: { cause?: unknown; maybeDelivered?: boolean },
  ) {
    super(message, options);
    this.name = "TransportError";
    this.maybeDelivered = options?.maybeDelivered ?? (code === "ERR_TIMEOUT" || code === "ERR_REMOTE");
  }
}

/**
 * Handles a request from the peer `from` (its node id, or "" for a node not yet in the cluster): the
 * transport's own, untyped form. The transport checks that the answer is of the kind the request
 * expects (else the requester gets ERR_PROTOCOL). Build one from typed handlers with `peerHandler`.
 */
export type RequestHandler = (from: string, body: RequestBody, leftMs?: number) => Promise<AnswerBody>;

/**
 * One handler per request kind, each answering with its own answer type. `leftMs`, where the transport
 * knows it: how long the requester still waits for the answer (the frame's deadline less the time the
 * request waited here), so that work on its behalf ends in time.
 */
export type PeerHandlers = {
  readonly [K in RequestKind]: (
    from: string,
    body: RequestOf<K>,
    leftMs?: number,
  ) => Promise<AnswerOf<K>> | AnswerOf<K>;
};

/**
 * The transport's RequestHandler for a map of typed handlers. A handler that throws (synchronously or
 * not) fails its request: the requester gets the error's message, and its code where the transport
 * passes codes on (ERR_OVERLOADED, ERR_REJECTED), else ERR_REMOTE.
 */
export function peerHandler(handlers: PeerHandlers): RequestHandler {
  return async (from, body, leftMs) => {
    // Indexing by a union of kinds loses the pairing of each kind with its handler; it holds by the
    // mapped type above, so the call is sound for every body.
    const handle = handlers[body.kind] as (
      from: string,
      body: RequestBody,
      leftMs?: number,
    ) => Promise<AnswerBody> | AnswerBody;
    return handle(from, body, leftMs);
  };
}

export interface Transport {
  /** This node's peer address (as bound). */
  readonly address: string;
  /**
   * Sends a request and waits at most `timeoutMs` for its answer, which is of the kind the request
   * expects (`AnswerOf`): an answer of another kind fails the request with ERR_PROTOCOL.
   */
  request<R extends RequestBody>(address: string, body: R, timeoutMs: number): Promise<AnswerOf<R["kind"]>>;
  /** Forgets reconnect backoff for an address (its node was just heard from, so it is back). */
  resetBackoff(address: string): void;
  /** Sets the cluster id (once known, after a join); connections made before are closed. */
  setCluster(clusterId: string): void;
  close(): Promise<void>;
}

/**
 * The TCP transport's bounds (tcp-transport.ts), with their arithmetic.
 *
 * Before a peer is authenticated (its TLS handshake and its hello frame done), it has proved nothing and
 * may be anyone who reaches the port:
 * - preAuthFrameBytes 64 KiB: the largest frame read before hello (a hello or welcome is under 200
 *   bytes), so a peer that announces 96 MiB and trickles it is refused at its first 4 bytes;
 * - handshakeTimeoutMs 5 s: TLS and hello together take a round trip or two and about a millisecond of
 *   CPU; a connection that has not finished in 5 s is closed (a silent one too);
 * - maxPendingPerAddress 32 and maxPending 256: connections not yet authenticated, from one address and
 *   in all. A node's peers each open one connection to it (two for a moment during a key rotation), so
 *   even a restart storm of many nodes on one host stays far below; a flood of 200 silent connections
 *   from one address gets 32 slots for at most 5 s, and the rest are closed at accept.
 * After authentication the peer holds the cluster key (it is trusted), and the bounds guard memory:
 * - maxInbound 4096 connections in all (one per peer: a cluster of thousands fits);
 * - maxBufferedBytes 64 MiB queued on one socket: new requests past it fail ERR_OVERLOADED, and an
 *   incoming connection whose peer does not read its answers is dropped past it;
 * - maxInFlightBytesPerConnection 64 MiB of requests being handled on one incoming connection: past it
 *   the connection is not read until they are answered (TCP then slows the sender down);
 * - maxInFlightPerConnection 4096 requests.
 * The worst case in memory is then about maxInbound x (64 + 64) MiB only if every peer sends its largest
 * requests at once, which a trusted peer does not; what an outsider can hold is maxPending x 64 KiB.
 */
export interface TransportLimits {
  /** Requests one connection may have in flight (each side); more get ERR_OVERLOADED. */
  readonly maxInFlightPerConnection: number;
  /** Bytes of requests being handled for one incoming connection; past it reading pauses. */
  readonly maxInFlightBytesPerConnection: number;
  /** Bytes queued on a socket before new requests on it fail (ERR_OVERLOADED) or, for answers, it is dropped. */
  readonly maxBufferedBytes: number;
  /** Reconnect backoff after a failed connection: doubles from min to max. */
  readonly backoffMinMs: number;
  readonly backoffMaxMs: number;
  /** An outgoing connection's TCP connect, TLS handshake and welcome must complete within this. */
  readonly connectTimeoutMs: number;
  /** An incoming connection's TLS handshake and hello must complete within this, or it is closed. */
  readonly handshakeTimeoutMs: number;
  /** The largest frame read before the handshake completes. */
  readonly preAuthFrameBytes: number;
  /** Incoming connections not yet authenticated, from one address; more are closed at accept. */
  readonly maxPendingPerAddress: number;
  /** Incoming connections not yet authenticated, in all; more are closed at accept. */
  readonly maxPending: number;
  /** Incoming connections in all; more are closed at accept. */
  readonly maxInbound: number;
}

export const DEFAULT_TRANSPORT_LIMITS: TransportLimits = {
  maxInFlightPerConnection: 4096,
  maxInFlightBytesPerConnection: 64 * 1024 * 1024,
  maxBufferedBytes: 64 * 1024 * 1024,
  backoffMinMs: 50,
  backoffMaxMs: 2000,
  connectTimeoutMs: 1000,
  handshakeTimeoutMs: 5000,
  preAuthFrameBytes: 64 * 1024,
  maxPendingPerAddress: 32,
  maxPending: 256,
  maxInbound: 4096,
};

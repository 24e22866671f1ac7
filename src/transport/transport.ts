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
  | "ERR_PROTOCOL";

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
export type RequestHandler = (from: string, body: RequestBody) => Promise<AnswerBody>;

/** One handler per request kind, each answering with its own answer type. */
export type PeerHandlers = {
  readonly [K in RequestKind]: (from: string, body: RequestOf<K>) => Promise<AnswerOf<K>> | AnswerOf<K>;
};

/**
 * The transport's RequestHandler for a map of typed handlers. A handler that throws (synchronously or
 * not) fails its request: the requester gets the error's message, and its code where the transport
 * passes codes on (ERR_OVERLOADED, ERR_REJECTED), else ERR_REMOTE.
 */
export function peerHandler(handlers: PeerHandlers): RequestHandler {
  return async (from, body) => {
    // Indexing by a union of kinds loses the pairing of each kind with its handler; it holds by the
    // mapped type above, so the call is sound for every body.
    const handle = handlers[body.kind] as (
      from: string,
      body: RequestBody,
    ) => Promise<AnswerBody> | AnswerBody;
    return handle(from, body);
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

export interface TransportLimits {
  /** Requests one connection may have in flight (each side); more get ERR_OVERLOADED. */
  readonly maxInFlightPerConnection: number;
  /** Bytes queued on a socket before new requests on it fail with ERR_OVERLOADED. */
  readonly maxBufferedBytes: number;
  /** Reconnect backoff after a failed connection: doubles from min to max. */
  readonly backoffMinMs: number;
  readonly backoffMaxMs: number;
  readonly connectTimeoutMs: number;
}

export const DEFAULT_TRANSPORT_LIMITS: TransportLimits = {
  maxInFlightPerConnection: 4096,
  maxBufferedBytes: 64 * 1024 * 1024,
  backoffMinMs: 50,
  backoffMaxMs: 2000,
  connectTimeoutMs: 1000,
};

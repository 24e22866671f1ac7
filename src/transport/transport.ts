/**
 * The transport interface: request/response between nodes, by peer address. Two implementations share
 * it and its tests: TCP (tcp-transport.ts, the real network) and an in-memory simulation
 * (sim-transport.ts) where tests drop, delay and cut links under virtual time.
 */
import type { RequestBody, ResponseBody } from "./messages.js";

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

/** Handles a request from the peer `from` (its node id, or "" for a node not yet in the cluster). */
export type RequestHandler = (from: string, body: RequestBody) => Promise<ResponseBody>;

export interface Transport {
  /** This node's peer address (as bound). */
  readonly address: string;
  /** Sends a request and waits at most `timeoutMs` for its response. */
  request(address: string, body: RequestBody, timeoutMs: number): Promise<ResponseBody>;
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

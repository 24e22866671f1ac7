/**
 * The TCP transport: persistent connections between nodes, one per peer address and direction.
 *
 * - Security (peer-tls.ts): every connection is TLS 1.3 with a pre-shared key derived from the cluster
 *   key, so both ends prove they hold it before a byte of the protocol moves, and everything after is
 *   encrypted. A connection whose handshake fails is closed and counted, and the address it came from is
 *   logged (BoundedLog: a flood writes a few lines, not one per attempt). The keys may change while the
 *   node runs (setKeys: a rotation): new connections use the new current key, connections made with the
 *   old one drain, and connections made with a key no longer accepted are closed. `plaintext` (for
 *   measurements only) speaks the same protocol unencrypted and unauthenticated.
 * - Bounds before a peer is authenticated (TransportLimits): connections per address and in all, a
 *   handshake deadline, a small frame cap until hello. After: requests and bytes in flight per
 *   connection (reading pauses past the byte bound), bytes queued to a peer that does not read (its
 *   connection is dropped), and a request whose deadline passed before its handler would start is not
 *   run.
 * - Framing: u32 length prefix, cap checked before allocation (framing.ts); MessagePack frames validated
 *   on decode (messages.ts). Garbage from a peer closes that connection and nothing else.
 * - Handshake: the connecting side says `hello` with protocol version, cluster id and node id; the other
 *   answers `welcome` or `reject` (other cluster, other version). A hello of an older version this node
 *   still speaks (MIN_PROTOCOL_VERSION, a rolling upgrade) is welcomed in that version; refused by a node
 *   of such a version, this node says hello in it on the next connection to that address. A node that is not yet in a cluster
 *   says cluster "" and may then only send `join` and `ping`. A listener that answers in HTTP (a node's
 *   API port given where its peer port belongs) is recognised and named in the error.
 * - A request of a kind newer than the protocol a connection speaks (REQUEST_SINCE) is not sent: it fails
 *   at once with ERR_REJECTED, as the older node could not decode it.
 * - Requests carry an id and a deadline; an answer that comes after the deadline is dropped. An answer of
 *   another kind than its request expects fails that request with ERR_PROTOCOL.
 * - Reconnect with exponential backoff: while a peer is in backoff, requests to it fail at once
 *   (ERR_UNREACHABLE) so that quorum logic never waits on a dead address.
 * - Back-pressure: a socket with more than maxBufferedBytes queued, or a connection with
 *   maxInFlightPerConnection requests in flight, refuses new requests with ERR_OVERLOADED.
 */
import * as net from "node:net";
import type * as tls from "node:tls";
import { BoundedLog } from "../runtime/bounded-log.js";
import type { Clock, Timers } from "../runtime/runtime.js";
import { FrameReader, frameBytes } from "./framing.js";
import {
  ANSWER_KIND,
  type AnswerBody,
  type AnswerKind,
  type AnswerOf,
  decodeFrame,
  encodeFrame,
  type Frame,
  MAX_FRAME_BYTES,
  MIN_PROTOCOL_VERSION,
  olderVersionIn,
  PROTOCOL_VERSION,
  ProtocolError,
  REQUEST_SINCE,
  type RequestBody,
  speaksKind,
  wireDeadlineMs,
} from "./messages.js";
import { describePeerKeys, type PeerKeys } from "./peer-keys.js";
import { connectTls, handshakeFailure, serverTls } from "./peer-tls.js";
import {
  DEFAULT_TRANSPORT_LIMITS,
  type RequestHandler,
  type Transport,
  TransportError,
  type TransportLimits,
} from "./transport.js";

interface Pending {
  /** The answer kind the request expects. */
  expects: AnswerKind;
  resolve: (r: AnswerBody) => void;
  reject: (e: unknown) => void;
  timer: { cancel(): void };
  /** Handed to the socket (not just queued behind the handshake): the peer may have received it. */
  sent: boolean;
}

function splitAddress(address: string): { host: string; port: number } {
  const i = address.lastIndexOf(":");
  const host = address.slice(0, i).replace(/^\[|\]$/g, "");
  const port = Number(address.slice(i + 1));
  if (i <= 0 || !Number.isInteger(port) || port <= 0 || port > 65535)
    throw new TransportError("ERR_UNREACHABLE", `bad peer address ${address}`);
  return { host, port };
}

const MAX_ERROR_CODE_CHARS = 64;
const MAX_ERROR_MESSAGE_CHARS = 4096;
/**
 * How an HTTP server's answer begins. Read as a frame's length prefix it announces 1213486160 bytes, far
 * over the cap: a peer connection that starts with it reached an HTTP port (a node's API port, given to
 * --join where its peer port belongs), and the error says so.
 */
const HTTP_HEAD = Buffer.from("HTTP");

/**
 * The code and message of an error frame from whatever a handler rejected with (any value, even
 * undefined), within the decoder's limits, so that a strange error never breaks the connection.
 */
function errorFields(err: unknown): { code: string; message: string } {
  const e = typeof err === "object" && err !== null ? (err as { code?: unknown; message?: unknown }) : {};
  const code =
    typeof e.code === "string" && e.code.length > 0 && e.code.length <= MAX_ERROR_CODE_CHARS
      ? e.code
      : "ERR_REMOTE";
  const message = String(typeof e.message === "string" ? e.message : err).slice(0, MAX_ERROR_MESSAGE_CHARS);
  return { code, message };
}

/**
 * Coalesces the frames written to one socket in one turn of the event loop into a single write: under
 * load many requests and answers become ready together (a group commit acknowledges several writes
 * at once), and one system call for all of them costs far less than one each on loopback. Frames are
 * flushed in the check phase of the same loop turn (setImmediate), so none waits for a timer.
 */
class FrameSink {
  private frames: Buffer[] = [];
  private bytes = 0;
  private scheduled = false;

  constructor(private readonly socket: net.Socket) {}

  /** Bytes waiting here or in the socket's own buffer (for back-pressure). */
  get buffered(): number {
    return this.bytes + this.socket.writableLength;
  }

  write(frame: Buffer): void {
    if (this.socket.destroyed) return;
    this.frames.push(frame);
    this.bytes += frame.length;
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.flush());
    }
  }

  flush(): void {
    this.scheduled = false;
    const frames = this.frames;
    if (frames.length === 0) return;
    const bytes = this.bytes;
    this.frames = [];
    this.bytes = 0;
    if (this.socket.destroyed) return;
    this.socket.write(frames.length === 1 ? frames[0]! : Buffer.concat(frames, bytes));
  }
}

/** What an HTTP probe of an address found (used when a peer did not answer in TLS). */
async function answersHttp(host: string, port: number, timers: Timers): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    let got = Buffer.alloc(0);
    const done = (yes: boolean) => {
      timer.cancel();
      s.destroy();
      resolve(yes);
    };
    const timer = timers.after(1000, () => done(false));
    s.on("connect", () => s.write("HEAD /health HTTP/1.1\r\nHost: ringstore\r\nConnection: close\r\n\r\n"));
    s.on("data", (chunk: Buffer) => {
      got = Buffer.concat([got, chunk]);
      if (got.length >= 5) done(got.subarray(0, 5).toString("latin1") === "HTTP/");
    });
    s.on("error", () => done(false));
    s.on("close", () => done(false));
  });
}

const API_PORT_HINT = "--join takes a member's peer address (its --peer)";

/** Most addresses remembered as speaking an older protocol (a cluster's peers; past it, all are forgotten). */
const SPEAKS_MAX = 4096;

class OutConnection {
  private socket: net.Socket | undefined;
  private sink: FrameSink | undefined;
  private ready = false;
  private closed = false;
  /** Retired (its key was replaced): it takes no new request, and closes once the last one is answered. */
  private retired = false;
  private readonly pending = new Map<number, Pending>();
  private queued: { frame: Buffer; p: Pending }[] = [];
  /** Bytes of `queued` (frames waiting for the handshake count against maxBufferedBytes too). */
  private queuedBytes = 0;
  /** When something last arrived on this connection (clock ms). */
  private lastReceivedAt = Number.NEGATIVE_INFINITY;
  private nextId = 1;
  readonly opened: Promise<void>;
  peerNode = "";
  /** The protocol this connection speaks: ours, or the older one its node said it speaks. */
  readonly version: number;
  /** The id of the key this connection authenticated with (TLS), or undefined (plaintext). */
  keyId: string | undefined;

  constructor(
    private readonly owner: TcpTransport,
    readonly address: string,
  ) {
    this.version = owner.versionFor(address);
    this.opened = this.open();
    this.opened.catch(() => undefined);
  }

  private open(): Promise<void> {
    return new Promise((resolve, reject) => {
      let settled = false;
      const fail = (e: TransportError) => {
        if (!settled) {
          settled = true;
          reject(e);
        }
        this.shutdown(e);
      };
      let target: { host: string; port: number };
      try {
        target = splitAddress(this.address);
      } catch (e) {
        fail(e as TransportError);
        return;
      }
      const security = this.owner.security;
      /** The TCP connection is up (TLS: a failure before it is no handshake's). */
      let tcpConnected = security !== "tls";
      let s: net.Socket;
      if (security === "tls") {
        const key = this.owner.keys?.current;
        if (key === undefined) {
          fail(new TransportError("ERR_AUTH", `no cluster key yet to connect to ${this.address} with`));
          return;
        }
        this.keyId = key.id;
        const tcp = net.connect({ host: target.host, port: target.port, noDelay: true });
        tcp.once("connect", () => {
          tcpConnected = true;
        });
        s = connectTls(tcp, key);
      } else s = net.connect({ host: target.host, port: target.port, noDelay: true });
      this.socket = s;
      this.sink = new FrameSink(s);
      let secured = false;
      /** The TLS handshake failed: its error settles the connection (maybe after a probe), not the close. */
      let handshakeFailed = false;
      const connectTimer = this.owner.timers.after(this.owner.limits.connectTimeoutMs, () =>
        fail(new TransportError("ERR_UNREACHABLE", `connecting to ${this.address} timed out`)),
      );
      // Only a welcome may come before the handshake completes: a small one.
      const reader = new FrameReader(this.owner.limits.preAuthFrameBytes);
      /** The first bytes received, until the handshake completes (to recognise an HTTP answer). */
      let head = Buffer.alloc(0);
      // The version to speak: ours, or the older one this address's node said it speaks (a rolling upgrade).
      const version = this.version;
      s.on(security === "tls" ? "secureConnect" : "connect", () => {
        secured = true;
        s.write(
          frameBytes(
            encodeFrame({
              kind: "hello",
              v: version,
              cluster: this.owner.clusterId,
              node: this.owner.nodeId,
            }),
          ),
        );
      });
      s.on("data", (chunk: Buffer) => {
        // Only what comes after the handshake shows that requests are being answered.
        if (this.ready) this.lastReceivedAt = this.owner.clock.now();
        else if (head.length < HTTP_HEAD.length)
          head = Buffer.concat([head, chunk.subarray(0, HTTP_HEAD.length - head.length)]);
        let frames: Buffer[];
        try {
          frames = reader.push(chunk);
          for (const raw of frames) {
            const f = decodeFrame(raw);
            if (!this.ready) {
              if (f.kind === "reject") {
                connectTimer.cancel();
                // A node of an older protocol this node still speaks: the next connection speaks it.
                const older = olderVersionIn(f.reason);
                if (older !== undefined && older !== version) this.owner.speakTo(this.address, older);
                fail(
                  new TransportError(
                    "ERR_REJECTED",
                    `${this.address} refused the handshake: ${f.reason}${older === undefined || older === version ? "" : ` (the next connection speaks protocol ${older})`}`,
                  ),
                );
                return;
              }
              if (f.kind !== "welcome") throw new ProtocolError(`expected welcome, got ${f.kind}`);
              if (f.v !== version)
                throw new ProtocolError(`peer speaks protocol ${f.v}, we speak ${version}`);
              if (this.owner.clusterId !== "" && f.cluster !== this.owner.clusterId) {
                connectTimer.cancel();
                fail(
                  new TransportError(
                    "ERR_REJECTED",
                    `${this.address} belongs to cluster ${f.cluster}, not ours`,
                  ),
                );
                return;
              }
              connectTimer.cancel();
              reader.maxFrameBytes = MAX_FRAME_BYTES;
              this.peerNode = f.node;
              this.ready = true;
              settled = true;
              for (const q of this.queued) {
                q.p.sent = true;
                this.sink!.write(q.frame);
              }
              this.queued = [];
              this.queuedBytes = 0;
              resolve();
              continue;
            }
            this.onFrame(f);
          }
        } catch (err) {
          connectTimer.cancel();
          fail(
            !this.ready && head.equals(HTTP_HEAD)
              ? new TransportError(
                  "ERR_PROTOCOL",
                  `${this.address} answered in HTTP: that is a node's API port; ${API_PORT_HINT}`,
                )
              : new TransportError(
                  "ERR_PROTOCOL",
                  `bad frame from ${this.address}: ${(err as Error).message}`,
                ),
          );
        }
      });
      s.on("error", (err) => {
        connectTimer.cancel();
        if (security !== "tls" || secured || !tcpConnected) {
          fail(new TransportError("ERR_UNREACHABLE", `${this.address}: ${err.message}`, { cause: err }));
          return;
        }
        handshakeFailed = true;
        const why = handshakeFailure(err);
        if (why === "key_refused")
          fail(
            new TransportError(
              "ERR_AUTH",
              `${this.address} refused this node's cluster key (key id ${this.keyId}): the TLS handshake failed, so that node holds another cluster key, or none`,
              { cause: err },
            ),
          );
        else if (why === "certificate")
          fail(
            new TransportError(
              "ERR_PROTOCOL",
              `${this.address} answered with a TLS certificate: it is not a ringstore peer port (a node's API port served over https?); ${API_PORT_HINT}`,
              { cause: err },
            ),
          );
        else if (why === "not_tls") {
          // Settled only after the probe: requests wait for it (bounded by the probe's own second).
          const { host, port } = target;
          void answersHttp(host, port, this.owner.timers).then((http) =>
            fail(
              new TransportError(
                "ERR_PROTOCOL",
                http
                  ? `${this.address} answered in HTTP: that is a node's API port; ${API_PORT_HINT}`
                  : `${this.address} did not answer in TLS: it is not a ringstore peer port with peer encryption (a node started with --insecure-peer-plaintext, or another service)`,
                { cause: err },
              ),
            ),
          );
        } else
          fail(
            new TransportError(
              "ERR_UNREACHABLE",
              `${this.address} closed the connection during the TLS handshake (${err.message})`,
              { cause: err },
            ),
          );
      });
      s.on("close", () => {
        connectTimer.cancel();
        if (handshakeFailed) return;
        fail(new TransportError("ERR_UNREACHABLE", `connection to ${this.address} closed`));
      });
    });
  }

  private onFrame(f: Frame): void {
    if (f.kind !== "ans" && f.kind !== "err")
      throw new ProtocolError(`unexpected ${f.kind} frame on an outgoing connection`);
    const p = this.pending.get(f.id);
    if (p === undefined) return; // answered after its deadline
    this.pending.delete(f.id);
    p.timer.cancel();
    if (f.kind === "ans") {
      if (f.body.kind === p.expects) p.resolve(f.body);
      // Only this request fails: the frame was well formed, and the peer did handle the request.
      else
        p.reject(
          new TransportError(
            "ERR_PROTOCOL",
            `${this.address} answered with ${f.body.kind} where ${p.expects} was expected`,
            { maybeDelivered: true },
          ),
        );
    } else
      p.reject(
        new TransportError(
          // Codes a server sends on purpose keep their meaning; any other failure there is ERR_REMOTE.
          f.code === "ERR_OVERLOADED" || f.code === "ERR_REJECTED" ? f.code : "ERR_REMOTE",
          `${this.address}: ${f.message}`,
        ),
      );
    this.maybeRetire();
  }

  request(body: RequestBody, timeoutMs: number): Promise<AnswerBody> {
    if (this.closed)
      return Promise.reject(new TransportError("ERR_UNREACHABLE", `connection to ${this.address} is closed`));
    // A node of an older protocol could not decode it, and would close the connection on it.
    if (!speaksKind(this.version, body.kind))
      return Promise.reject(
        new TransportError(
          "ERR_REJECTED",
          `${this.address} speaks protocol ${this.version}, which has no ${body.kind} (since ${REQUEST_SINCE[body.kind]})`,
        ),
      );
    const limits = this.owner.limits;
    if (
      this.pending.size >= limits.maxInFlightPerConnection ||
      this.queuedBytes + (this.sink?.buffered ?? 0) > limits.maxBufferedBytes
    )
      return Promise.reject(new TransportError("ERR_OVERLOADED", `too much in flight to ${this.address}`));
    const id = this.nextId++;
    // The local timer keeps the exact value; the wire carries whole milliseconds.
    const frame = frameBytes(encodeFrame({ kind: "req", id, deadlineMs: wireDeadlineMs(timeoutMs), body }));
    const sentAt = this.owner.clock.now();
    return new Promise((resolve, reject) => {
      const timer = this.owner.timers.after(timeoutMs, () => {
        this.pending.delete(id);
        reject(
          new TransportError(
            "ERR_TIMEOUT",
            `${body.kind} to ${this.address} timed out after ${timeoutMs} ms`,
          ),
        );
        // Nothing at all arrived since this request left: the peer or the path is gone (a partition, a
        // paused process). Keeping the connection would leave later requests behind TCP's retransmission
        // backoff, seconds to tens of seconds after the network heals; a fresh connection (under our own
        // bounded reconnect backoff) is up as soon as the peer is reachable again. No backoff for this
        // close itself: a peer that is merely slow is reconnected by the next request at once.
        if (this.ready && this.lastReceivedAt < sentAt)
          this.shutdown(
            new TransportError("ERR_UNREACHABLE", `${this.address} sent nothing for ${timeoutMs} ms`),
            false,
          );
        else this.maybeRetire();
      });
      const p: Pending = { expects: ANSWER_KIND[body.kind], resolve, reject, timer, sent: this.ready };
      this.pending.set(id, p);
      if (this.ready) this.sink!.write(frame);
      else {
        this.queued.push({ frame, p });
        this.queuedBytes += frame.length;
      }
    });
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /**
   * Takes no new request from now on (the transport no longer hands this connection out) and closes once
   * the requests on it are settled: its key was replaced, and a new connection uses the new one.
   */
  retire(): void {
    this.retired = true;
    this.maybeRetire();
  }

  private maybeRetire(): void {
    if (this.retired && this.pending.size === 0)
      this.shutdown(
        new TransportError("ERR_CLOSED", `connection to ${this.address} retired (key replaced)`),
        false,
      );
  }

  /** Closes the connection, failing what is in flight; `backoff` (default: by the error) delays reconnects. */
  shutdown(err: TransportError, backoff?: boolean): void {
    if (this.closed) return;
    this.closed = true;
    this.ready = false;
    this.socket?.destroy();
    for (const p of this.pending.values()) {
      p.timer.cancel();
      p.reject(
        p.sent && !err.maybeDelivered
          ? new TransportError(err.code, err.message, { cause: err.cause, maybeDelivered: true })
          : err,
      );
    }
    this.pending.clear();
    this.queued = [];
    this.queuedBytes = 0;
    this.owner.connectionClosed(this, err, backoff);
  }
}

/** Why an incoming connection was refused before its peer was authenticated (counted, and logged). */
export type PeerRefusal =
  /** The TLS handshake failed: the peer has no cluster key, another one, or does not speak TLS. */
  | "tls_handshake"
  /** The TLS handshake and hello did not complete within handshakeTimeoutMs. */
  | "handshake_timeout"
  /** Too many connections not yet authenticated from its address (maxPendingPerAddress). */
  | "address_limit"
  /** Too many connections not yet authenticated in all (maxPending). */
  | "pending_limit"
  /** Too many incoming connections in all (maxInbound). */
  | "connection_limit"
  /** Its key is no longer accepted (a key rotation dropped it). */
  | "key_removed";

export const PEER_REFUSALS: readonly PeerRefusal[] = [
  "tls_handshake",
  "handshake_timeout",
  "address_limit",
  "pending_limit",
  "connection_limit",
  "key_removed",
];

/** Counters of the transport, for /status and /metrics. */
export interface TcpTransportCounters {
  /** Incoming connections closed for a malformed or unexpected frame (before or after hello). */
  protocolErrors: number;
  /** Hellos refused (another protocol version, another cluster). */
  rejectedHandshakes: number;
  /** Requests refused because their connection had too many in flight. */
  overloaded: number;
  /** Incoming connections refused before authentication, by reason. */
  readonly refused: Record<PeerRefusal, number>;
  /** Incoming connections dropped because their peer did not read its answers (maxBufferedBytes). */
  slowReaders: number;
  /** Requests not run because their deadline passed before their handler would start. */
  expired: number;
}

/** How a transport protects its connections: TLS with the cluster key, or none (measurements only). */
export type PeerSecurity = "tls" | "plaintext";

/** The transport's security as /status shows it. */
export interface PeerSecurityStatus {
  readonly encryption: PeerSecurity;
  /** The id of the key this node connects with (null: none yet, or plaintext). */
  readonly key: string | null;
  /** The ids of the keys it accepts. */
  readonly accepted: readonly string[];
  /** Open connections by the key they authenticated with (key id, or "none" in plaintext). */
  readonly connections: {
    readonly incoming: Record<string, number>;
    readonly outgoing: Record<string, number>;
  };
}

export interface TcpTransportOptions {
  readonly host: string;
  readonly port: number;
  readonly nodeId: string;
  readonly clusterId: string;
  readonly handler: RequestHandler;
  readonly timers: Timers;
  readonly clock: Clock;
  readonly limits?: Partial<TransportLimits>;
  /**
   * "tls" (what a node runs): connections are refused until `keys` (or setKeys) gives the cluster key.
   * "plaintext": unauthenticated and unencrypted, for measurements only.
   */
  readonly security: PeerSecurity;
  readonly keys?: PeerKeys;
  /** Where refusals and drops are reported (one line each, bounded); default nowhere. */
  readonly log?: (line: string) => void;
}

/** An incoming connection. */
interface Inbound {
  readonly socket: net.Socket;
  /** The key it authenticated with (TLS), once known. */
  keyId: string | undefined;
}

/** An address as a log names it: IPv6 in brackets. */
function formatAddress(ip: string | undefined, port: number | undefined): string {
  const host = ip === undefined ? "?" : ip.includes(":") ? `[${ip}]` : ip;
  return port === undefined ? host : `${host}:${port}`;
}

/** A peer-chosen string (a PSK identity) made safe to log: printable ASCII, bounded. */
function printable(s: string): string {
  return JSON.stringify(s.slice(0, 40).replace(/[^\x20-\x7e]/g, "?"));
}

export class TcpTransport implements Transport {
  readonly limits: TransportLimits;
  readonly timers: Timers;
  readonly nodeId: string;
  readonly security: PeerSecurity;
  clusterId: string;
  address = "";
  readonly clock: Clock;
  private keyRing: PeerKeys | undefined;
  private readonly server: net.Server;
  private readonly out = new Map<string, OutConnection>();
  /** Outgoing connections retired by a key change, until they close. */
  private readonly retiring = new Set<OutConnection>();
  private readonly backoff = new Map<string, { until: number; delayMs: number }>();
  /** Addresses whose node speaks an older protocol (it refused ours), at most SPEAKS_MAX of them. */
  private readonly speaks = new Map<string, number>();
  private readonly inbound = new Set<Inbound>();
  /** Incoming connections not yet authenticated, by source address, and in all. */
  private readonly pendingByAddress = new Map<string, number>();
  private pending = 0;
  private readonly handler: RequestHandler;
  private readonly log: BoundedLog;
  private closed = false;
  /** Counters for /status, /metrics and tests. */
  readonly counters: TcpTransportCounters = {
    protocolErrors: 0,
    rejectedHandshakes: 0,
    overloaded: 0,
    refused: {
      tls_handshake: 0,
      handshake_timeout: 0,
      address_limit: 0,
      pending_limit: 0,
      connection_limit: 0,
      key_removed: 0,
    },
    slowReaders: 0,
    expired: 0,
  };
  lastProtocolError = "";

  private constructor(o: TcpTransportOptions) {
    this.limits = { ...DEFAULT_TRANSPORT_LIMITS, ...o.limits };
    this.timers = o.timers;
    this.clock = o.clock;
    this.nodeId = o.nodeId;
    this.clusterId = o.clusterId;
    this.handler = o.handler;
    this.security = o.security;
    this.keyRing = o.keys;
    const write = o.log ?? (() => undefined);
    this.log = new BoundedLog({
      clock: o.clock,
      timers: o.timers,
      write,
      summary: (n) => `refused or dropped ${n} more peer connection(s)`,
    });
    this.server = net.createServer((s) => this.accept(s));
  }

  static async listen(o: TcpTransportOptions): Promise<TcpTransport> {
    const t = new TcpTransport(o);
    await new Promise<void>((resolve, reject) => {
      t.server.once("error", reject);
      t.server.listen({ host: o.host, port: o.port }, () => {
        t.server.off("error", reject);
        resolve();
      });
    });
    const a = t.server.address() as net.AddressInfo;
    t.address = o.host.includes(":") ? `[${o.host}]:${a.port}` : `${o.host}:${a.port}`;
    return t;
  }

  /** The cluster keys in use (undefined: none yet). */
  get keys(): PeerKeys | undefined {
    return this.keyRing;
  }

  /**
   * Uses these keys from now on: new connections go out with `keys.current`; outgoing connections made
   * with another key take no new request and close once theirs are answered; incoming connections made
   * with a key that `keys` does not accept are closed.
   */
  setKeys(keys: PeerKeys): void {
    this.keyRing = keys;
    for (const c of [...this.out.values()])
      if (c.keyId !== undefined && c.keyId !== keys.current.id) {
        this.out.delete(c.address);
        this.retiring.add(c);
        c.retire();
      }
    for (const i of this.inbound)
      if (i.keyId !== undefined && !keys.accepted.some((k) => k.id === i.keyId)) {
        this.counters.refused.key_removed++;
        this.log.note(
          formatAddress(i.socket.remoteAddress, undefined),
          `closed the peer connection from ${formatAddress(i.socket.remoteAddress, i.socket.remotePort)}: it was made with key ${i.keyId}, which this node no longer accepts (${describePeerKeys(keys)})`,
        );
        i.socket.destroy();
      }
  }

  /** What /status shows of the transport's security. */
  securityStatus(): PeerSecurityStatus {
    const count = (ids: Iterable<string | undefined>) => {
      const out: Record<string, number> = {};
      for (const id of ids) {
        const k = id ?? "none";
        out[k] = (out[k] ?? 0) + 1;
      }
      return out;
    };
    const k = this.keyRing;
    return {
      encryption: this.security,
      key: this.security === "tls" ? (k?.current.id ?? null) : null,
      accepted: this.security === "tls" ? (k?.accepted.map((x) => x.id) ?? []) : [],
      connections: {
        incoming: count([...this.inbound].map((i) => i.keyId)),
        outgoing: count(
          [...this.out.values(), ...this.retiring].filter((c) => !c.isClosed).map((c) => c.keyId),
        ),
      },
    };
  }

  /** @internal The protocol version to say hello with to `address`. */
  versionFor(address: string): number {
    return this.speaks.get(address) ?? PROTOCOL_VERSION;
  }

  /** @internal `address`'s node speaks `version`, an older one this node still speaks. */
  speakTo(address: string, version: number): void {
    if (this.speaks.size >= SPEAKS_MAX && !this.speaks.has(address)) this.speaks.clear();
    this.speaks.set(address, version);
  }

  resetBackoff(address: string): void {
    this.backoff.delete(address);
  }

  setCluster(clusterId: string): void {
    if (clusterId === this.clusterId) return;
    this.clusterId = clusterId;
    for (const c of [...this.out.values()]) c.shutdown(new TransportError("ERR_CLOSED", "cluster changed"));
    // Incoming connections were admitted under the old cluster (a peer that named none may have been
    // let in fully while we had none): they reconnect and say hello again.
    for (const i of this.inbound) i.socket.destroy();
  }

  request<R extends RequestBody>(address: string, body: R, timeoutMs: number): Promise<AnswerOf<R["kind"]>> {
    if (this.closed) return Promise.reject(new TransportError("ERR_CLOSED", "transport closed"));
    const b = this.backoff.get(address);
    if (b !== undefined && this.clock.now() < b.until)
      return Promise.reject(
        new TransportError(
          "ERR_UNREACHABLE",
          `${address} is unreachable (retrying in ${Math.ceil(b.until - this.clock.now())} ms)`,
        ),
      );
    let c = this.out.get(address);
    if (c === undefined || c.isClosed) {
      c = new OutConnection(this, address);
      this.out.set(address, c);
    }
    // A failed connection rejects every request on it (shutdown), so `res` carries that error too.
    c.opened.then(
      () => this.backoff.delete(address),
      () => undefined,
    );
    // The connection resolves a request only with an answer of the kind it expects (onFrame).
    return c.request(body, timeoutMs) as Promise<AnswerOf<R["kind"]>>;
  }

  /** @internal */
  connectionClosed(c: OutConnection, err: TransportError, backoff?: boolean): void {
    this.retiring.delete(c);
    if (this.out.get(c.address) === c) this.out.delete(c.address);
    if (
      backoff ??
      (err.code === "ERR_UNREACHABLE" || err.code === "ERR_PROTOCOL" || err.code === "ERR_AUTH")
    ) {
      const prev = this.backoff.get(c.address);
      const delayMs = prev ? Math.min(prev.delayMs * 2, this.limits.backoffMaxMs) : this.limits.backoffMinMs;
      this.backoff.set(c.address, { until: this.clock.now() + delayMs, delayMs });
    }
  }

  /** Counts and logs (bounded) an incoming connection refused before authentication. */
  private refuse(reason: PeerRefusal, ip: string | undefined, port: number | undefined, why: string): void {
    this.counters.refused[reason]++;
    this.log.note(
      formatAddress(ip, undefined),
      `refused a peer connection from ${formatAddress(ip, port)}: ${why}`,
    );
  }

  /** Admits an incoming connection before its handshake, or says why not. */
  private admit(ip: string): PeerRefusal | undefined {
    if (this.inbound.size >= this.limits.maxInbound) return "connection_limit";
    if (this.pending >= this.limits.maxPending) return "pending_limit";
    if ((this.pendingByAddress.get(ip) ?? 0) >= this.limits.maxPendingPerAddress) return "address_limit";
    this.pending++;
    this.pendingByAddress.set(ip, (this.pendingByAddress.get(ip) ?? 0) + 1);
    return undefined;
  }

  /** An admitted connection is no longer pending (authenticated, or closed). */
  private unpend(ip: string): void {
    this.pending--;
    const n = (this.pendingByAddress.get(ip) ?? 1) - 1;
    if (n <= 0) this.pendingByAddress.delete(ip);
    else this.pendingByAddress.set(ip, n);
  }

  private accept(raw: net.Socket): void {
    if (this.closed) {
      raw.destroy();
      return;
    }
    const ip = raw.remoteAddress ?? "?";
    const port = raw.remotePort;
    const refusal = this.admit(ip);
    if (refusal !== undefined) {
      const limit =
        refusal === "connection_limit"
          ? `${this.limits.maxInbound} peer connections are open`
          : refusal === "pending_limit"
            ? `${this.limits.maxPending} connections are still in their handshake`
            : `${this.limits.maxPendingPerAddress} connections from that address are still in their handshake`;
      this.refuse(refusal, ip, port, `${limit} (closed at once)`);
      raw.destroy();
      return;
    }
    raw.setNoDelay(true);
    const conn: Inbound = { socket: raw, keyId: undefined };
    this.inbound.add(conn);
    /** Not yet authenticated (TLS handshake and hello not both done). */
    let pending = true;
    let secured = this.security !== "tls";
    /** The PSK identity the peer named (for the log when the handshake fails). */
    let named: string | undefined;
    const settle = () => {
      if (!pending) return;
      pending = false;
      deadline.cancel();
      this.unpend(ip);
    };
    const deadline = this.timers.after(this.limits.handshakeTimeoutMs, () => {
      this.refuse(
        "handshake_timeout",
        ip,
        port,
        `its ${secured ? "hello" : "TLS handshake"} did not complete within ${this.limits.handshakeTimeoutMs} ms`,
      );
      settle();
      s.destroy();
    });
    let s: net.Socket;
    if (this.security === "tls") {
      const ts: tls.TLSSocket = serverTls(
        raw,
        () => this.keyRing,
        (id, known) => {
          named = id;
          if (known) conn.keyId = id;
        },
      );
      ts.on("secure", () => {
        secured = true;
      });
      s = ts;
    } else s = raw;
    raw.on("close", () => {
      settle();
      this.inbound.delete(conn);
    });
    const reader = new FrameReader(this.limits.preAuthFrameBytes);
    let peer: string | undefined;
    let joinOnly = false;
    let inFlight = 0;
    let inFlightBytes = 0;
    let paused = false;
    const sink = new FrameSink(s);
    const send = (f: Frame) => {
      if (s.destroyed) return;
      const bytes = frameBytes(encodeFrame(f));
      if (sink.buffered + bytes.length > this.limits.maxBufferedBytes) {
        // The peer does not read what it asked for: its answers would pile up without bound.
        this.counters.slowReaders++;
        this.log.note(
          formatAddress(ip, undefined),
          `dropped the peer connection from ${formatAddress(ip, port)} (${peer ?? "?"}): it left ${sink.buffered} bytes of answers unread`,
        );
        s.destroy();
        return;
      }
      sink.write(bytes);
    };
    const bad = (why: string) => {
      this.counters.protocolErrors++;
      this.lastProtocolError = why;
      // Before hello the peer has proved nothing (in plaintext, nothing at all): name it.
      if (pending)
        this.log.note(
          formatAddress(ip, undefined),
          `closed the peer connection from ${formatAddress(ip, port)} before its hello: ${why}`,
        );
      settle();
      s.destroy();
    };
    s.on("data", (chunk: Buffer) => {
      const receivedAt = this.clock.now();
      let frames: Buffer[];
      try {
        frames = reader.push(chunk);
      } catch (err) {
        bad((err as Error).message);
        return;
      }
      for (const raw of frames) {
        let f: Frame;
        try {
          f = decodeFrame(raw);
        } catch (err) {
          bad((err as Error).message);
          return;
        }
        if (peer === undefined) {
          if (f.kind !== "hello") return bad(`expected hello, got ${f.kind}`);
          if (f.v < MIN_PROTOCOL_VERSION || f.v > PROTOCOL_VERSION) {
            this.counters.rejectedHandshakes++;
            send({
              kind: "reject",
              reason: `protocol version ${f.v} is not ${PROTOCOL_VERSION}${MIN_PROTOCOL_VERSION < PROTOCOL_VERSION ? ` (nor ${MIN_PROTOCOL_VERSION}, during an upgrade)` : ""}`,
            });
            sink.flush();
            s.end();
            return;
          }
          if (f.cluster !== "" && this.clusterId !== "" && f.cluster !== this.clusterId) {
            this.counters.rejectedHandshakes++;
            send({
              kind: "reject",
              reason: `this node belongs to cluster ${this.clusterId}, not ${f.cluster}`,
            });
            sink.flush();
            s.end();
            return;
          }
          peer = f.node;
          joinOnly = f.cluster === "" && this.clusterId !== "";
          settle();
          reader.maxFrameBytes = MAX_FRAME_BYTES;
          // The peer's version (it may be an older one this node still speaks: a rolling upgrade).
          send({ kind: "welcome", v: f.v, cluster: this.clusterId, node: this.nodeId });
          continue;
        }
        if (f.kind !== "req") return bad(`unexpected ${f.kind} frame on an incoming connection`);
        const id = f.id;
        if (joinOnly && f.body.kind !== "join" && f.body.kind !== "ping") {
          send({ kind: "err", id, code: "ERR_REJECTED", message: "join the cluster first" });
          continue;
        }
        if (inFlight >= this.limits.maxInFlightPerConnection) {
          this.counters.overloaded++;
          send({ kind: "err", id, code: "ERR_OVERLOADED", message: "too many requests in flight" });
          continue;
        }
        // The requester gives up at its deadline: work started after it would be for nobody.
        if (this.clock.now() - receivedAt >= f.deadlineMs) {
          this.counters.expired++;
          send({
            kind: "err",
            id,
            code: "ERR_TIMEOUT",
            message: "the request's deadline passed before it started",
          });
          continue;
        }
        inFlight++;
        const size = raw.length;
        inFlightBytes += size;
        if (!paused && inFlightBytes > this.limits.maxInFlightBytesPerConnection) {
          paused = true;
          s.pause();
        }
        const done = () => {
          inFlight--;
          inFlightBytes -= size;
          if (paused && inFlightBytes <= this.limits.maxInFlightBytesPerConnection / 2) {
            paused = false;
            s.resume();
          }
        };
        const from = peer;
        let answer: Promise<AnswerBody>;
        try {
          answer = this.handler(from, f.body, f.deadlineMs - (this.clock.now() - receivedAt));
        } catch (err) {
          answer = Promise.reject(err);
        }
        answer.then(
          (body) => {
            done();
            send({ kind: "ans", id, body });
          },
          (err: unknown) => {
            done();
            send({ kind: "err", id, ...errorFields(err) });
          },
        );
      }
    });
    s.on("error", (err) => {
      if (!secured && pending) {
        const key =
          named === undefined
            ? ""
            : conn.keyId === undefined
              ? ` (it named key id ${printable(named)}, which this node does not hold)`
              : " (it named one of this node's key ids but did not prove the key)";
        this.refuse(
          "tls_handshake",
          ip,
          port,
          `the TLS handshake failed: it has no cluster key, another one, or does not speak TLS${key} [${(err as { code?: string }).code ?? err.message}]`,
        );
        settle();
      }
      s.destroy();
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.log.close();
    for (const c of [...this.out.values(), ...this.retiring])
      c.shutdown(new TransportError("ERR_CLOSED", "transport closed"));
    for (const i of this.inbound) i.socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

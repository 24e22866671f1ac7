/**
 * The TCP transport: persistent connections between nodes, one per peer address and direction.
 *
 * - Framing: u32 length prefix, cap checked before allocation (framing.ts); MessagePack frames validated
 *   on decode (messages.ts). Garbage from a peer closes that connection and nothing else.
 * - Handshake: the connecting side says `hello` with protocol version, cluster id and node id; the other
 *   answers `welcome` or `reject` (other cluster, other version). A node that is not yet in a cluster
 *   says cluster "" and may then only send `join` and `ping`. A listener that answers in HTTP (a node's
 *   API port given where its peer port belongs) is recognised and named in the error.
 * - Requests carry an id and a deadline; an answer that comes after the deadline is dropped. An answer of
 *   another kind than its request expects fails that request with ERR_PROTOCOL.
 * - Reconnect with exponential backoff: while a peer is in backoff, requests to it fail at once
 *   (ERR_UNREACHABLE) so that quorum logic never waits on a dead address.
 * - Back-pressure: a socket with more than maxBufferedBytes queued, or a connection with
 *   maxInFlightPerConnection requests in flight, refuses new requests with ERR_OVERLOADED.
 */
import * as net from "node:net";
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
  PROTOCOL_VERSION,
  ProtocolError,
  type RequestBody,
  wireDeadlineMs,
} from "./messages.js";
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

class OutConnection {
  private socket: net.Socket | undefined;
  private sink: FrameSink | undefined;
  private ready = false;
  private closed = false;
  private readonly pending = new Map<number, Pending>();
  private queued: { frame: Buffer; p: Pending }[] = [];
  /** Bytes of `queued` (frames waiting for the handshake count against maxBufferedBytes too). */
  private queuedBytes = 0;
  /** When something last arrived on this connection (clock ms). */
  private lastReceivedAt = Number.NEGATIVE_INFINITY;
  private nextId = 1;
  readonly opened: Promise<void>;
  peerNode = "";

  constructor(
    private readonly owner: TcpTransport,
    readonly address: string,
  ) {
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
      const s = net.connect({ host: target.host, port: target.port, noDelay: true });
      this.socket = s;
      this.sink = new FrameSink(s);
      const connectTimer = this.owner.timers.after(this.owner.limits.connectTimeoutMs, () =>
        fail(new TransportError("ERR_UNREACHABLE", `connecting to ${this.address} timed out`)),
      );
      const reader = new FrameReader();
      /** The first bytes received, until the handshake completes (to recognise an HTTP answer). */
      let head = Buffer.alloc(0);
      s.on("connect", () => {
        s.write(
          frameBytes(
            encodeFrame({
              kind: "hello",
              v: PROTOCOL_VERSION,
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
                fail(
                  new TransportError("ERR_REJECTED", `${this.address} refused the handshake: ${f.reason}`),
                );
                return;
              }
              if (f.kind !== "welcome") throw new ProtocolError(`expected welcome, got ${f.kind}`);
              if (f.v !== PROTOCOL_VERSION)
                throw new ProtocolError(`peer speaks protocol ${f.v}, we speak ${PROTOCOL_VERSION}`);
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
                  `${this.address} answered in HTTP: that is a node's API port; --join takes a member's peer address (its --peer)`,
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
        fail(new TransportError("ERR_UNREACHABLE", `${this.address}: ${err.message}`, { cause: err }));
      });
      s.on("close", () => {
        connectTimer.cancel();
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
  }

  request(body: RequestBody, timeoutMs: number): Promise<AnswerBody> {
    if (this.closed)
      return Promise.reject(new TransportError("ERR_UNREACHABLE", `connection to ${this.address} is closed`));
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

export interface TcpTransportOptions {
  readonly host: string;
  readonly port: number;
  readonly nodeId: string;
  readonly clusterId: string;
  readonly handler: RequestHandler;
  readonly timers: Timers;
  readonly clock: Clock;
  readonly limits?: Partial<TransportLimits>;
}

export class TcpTransport implements Transport {
  readonly limits: TransportLimits;
  readonly timers: Timers;
  readonly nodeId: string;
  clusterId: string;
  address = "";
  readonly clock: Clock;
  private readonly server: net.Server;
  private readonly out = new Map<string, OutConnection>();
  private readonly backoff = new Map<string, { until: number; delayMs: number }>();
  private readonly inbound = new Set<net.Socket>();
  private readonly handler: RequestHandler;
  private closed = false;
  /** Counters for /status and tests. */
  readonly counters = { protocolErrors: 0, rejectedHandshakes: 0, overloaded: 0 };
  lastProtocolError = "";

  private constructor(o: TcpTransportOptions) {
    this.limits = { ...DEFAULT_TRANSPORT_LIMITS, ...o.limits };
    this.timers = o.timers;
    this.clock = o.clock;
    this.nodeId = o.nodeId;
    this.clusterId = o.clusterId;
    this.handler = o.handler;
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

  resetBackoff(address: string): void {
    this.backoff.delete(address);
  }

  setCluster(clusterId: string): void {
    if (clusterId === this.clusterId) return;
    this.clusterId = clusterId;
    for (const c of [...this.out.values()]) c.shutdown(new TransportError("ERR_CLOSED", "cluster changed"));
    // Incoming connections were admitted under the old cluster (a peer that named none may have been
    // let in fully while we had none): they reconnect and say hello again.
    for (const s of this.inbound) s.destroy();
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
    if (this.out.get(c.address) === c) this.out.delete(c.address);
    if (backoff ?? (err.code === "ERR_UNREACHABLE" || err.code === "ERR_PROTOCOL")) {
      const prev = this.backoff.get(c.address);
      const delayMs = prev ? Math.min(prev.delayMs * 2, this.limits.backoffMaxMs) : this.limits.backoffMinMs;
      this.backoff.set(c.address, { until: this.clock.now() + delayMs, delayMs });
    }
  }

  private accept(s: net.Socket): void {
    if (this.closed) {
      s.destroy();
      return;
    }
    s.setNoDelay(true);
    this.inbound.add(s);
    const reader = new FrameReader();
    let peer: string | undefined;
    let joinOnly = false;
    let inFlight = 0;
    const sink = new FrameSink(s);
    const send = (f: Frame) => sink.write(frameBytes(encodeFrame(f)));
    const bad = (why: string) => {
      this.counters.protocolErrors++;
      this.lastProtocolError = why;
      s.destroy();
    };
    s.on("data", (chunk: Buffer) => {
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
          if (f.v !== PROTOCOL_VERSION) {
            this.counters.rejectedHandshakes++;
            send({ kind: "reject", reason: `protocol version ${f.v} is not ${PROTOCOL_VERSION}` });
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
          send({ kind: "welcome", v: PROTOCOL_VERSION, cluster: this.clusterId, node: this.nodeId });
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
        inFlight++;
        const from = peer;
        let answer: Promise<AnswerBody>;
        try {
          answer = this.handler(from, f.body);
        } catch (err) {
          answer = Promise.reject(err);
        }
        answer.then(
          (body) => {
            inFlight--;
            send({ kind: "ans", id, body });
          },
          (err: unknown) => {
            inFlight--;
            send({ kind: "err", id, ...errorFields(err) });
          },
        );
      }
    });
    s.on("error", () => s.destroy());
    s.on("close", () => this.inbound.delete(s));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const c of [...this.out.values()]) c.shutdown(new TransportError("ERR_CLOSED", "transport closed"));
    for (const s of this.inbound) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

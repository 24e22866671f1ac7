/**
 * The floor of `npm run bench:cluster`: the least a Node.js process can do per operation for the same
 * protocol shape as a ringstore node, so that the benchmark can say how far the node is from what Node
 * allows on this machine, measured in the same run with the same load generator.
 *
 *   node --import tsx bench/floor-node.ts --api HOST:PORT --peer HOST:PORT --peers HOST:PORT,... --data DIR
 *                                         [--durability fsync|none]
 *
 * bench:cluster runs a copy compiled by tsc, not this file under tsx (whose keepNames wrappers cost CPU
 * on every request: docs/performance.md, "built JavaScript against tsx"); run it that way to reproduce
 * its figures.
 *
 * What it does, and nothing more: every member replicates every key (N = the member count).
 *   PUT /kv/KEY   appends the value to its write-ahead file (group commit: the writes of a loop turn in
 *                 one write, then one fdatasync through the thread pool, as a ringstore node does), sends
 *                 it to every peer, which does the same and acknowledges once durable, and answers 204
 *                 once two copies are durable (W=2, its own counting).
 *   GET /kv/KEY   looks the key up in its in-memory map and asks one peer (in turn) for its copy (R=2),
 *                 answers 200 with whichever copy exists, or 404.
 *   GET /status   { storage: { walSyncs, sequence }, peersConnected } (what bench:cluster reads;
 *                 peersConnected counts this node's outgoing links, the ones its requests go on).
 * What it leaves out, which is what the node's extra cost buys: versions (no vector clocks, no siblings,
 * no read before a write, no context token), an LSM engine (a Map instead; the file is never read back),
 * checksums, MessagePack, the ring, membership and gossip, metrics, validation, limits beyond a frame and
 * body cap, and every failure path but a timeout. It is a measuring instrument, not a store.
 *
 * Peer frames: u32 length of the rest, u8 type, u32 request id, then by type:
 *   1 store  u16 key length, key, value      2 stored  (nothing)
 *   3 read   key                             4 value   u8 found, value
 */
import * as fs from "node:fs";
import * as http from "node:http";
import * as net from "node:net";
import * as path from "node:path";
import { parseArgs } from "node:util";

const MAX_FRAME = 16 << 20;
const MAX_BODY = 1 << 20;
const TIMEOUT_MS = 5000;

const { values } = parseArgs({
  options: {
    api: { type: "string" },
    peer: { type: "string" },
    peers: { type: "string", default: "" },
    data: { type: "string" },
    durability: { type: "string", default: "fsync" },
  },
});
if (values.api === undefined || values.peer === undefined || values.data === undefined)
  throw new Error(
    "usage: floor-node.ts --api HOST:PORT --peer HOST:PORT --peers HOST:PORT,... --data DIR [--durability fsync|none]",
  );
if (values.durability !== "fsync" && values.durability !== "none")
  throw new Error(`--durability must be fsync or none, got ${values.durability}`);
const fsync = values.durability === "fsync";
const split = (a: string): [string, number] => {
  const i = a.lastIndexOf(":");
  return [a.slice(0, i), Number(a.slice(i + 1))];
};

// ------------------------------------------------------------------ the write-ahead file, group commit

fs.mkdirSync(values.data, { recursive: true });
const fd = fs.openSync(path.join(values.data, "floor.wal"), "w");
let walPos = 0;
// Grown ahead in zeroed steps, as the node's WAL is (LsmOptions.walPreallocateBytes): an fdatasync that
// does not change the file's size need not commit the file system's journal.
const PREALLOCATE = 1 << 20;
let walAllocated = 0;
let walSyncs = 0;
let sequence = 0;
let pending: { record: Buffer; done: () => void }[] = [];
let writing = false;

function append(record: Buffer, done: () => void): void {
  pending.push({ record, done });
  if (!writing) {
    writing = true;
    setImmediate(commit);
  }
}

function commit(): void {
  const group = pending;
  pending = [];
  const all = group.length === 1 ? group[0]!.record : Buffer.concat(group.map((g) => g.record));
  if (walPos + all.length > walAllocated) {
    const grow = Math.max(PREALLOCATE, walPos + all.length - walAllocated);
    const zeros = Buffer.alloc(grow);
    for (let off = 0; off < grow; ) off += fs.writeSync(fd, zeros, off, grow - off, walAllocated + off);
    walAllocated += grow;
  }
  for (let off = 0; off < all.length; ) off += fs.writeSync(fd, all, off, all.length - off, walPos + off);
  walPos += all.length;
  const after = (err: Error | null) => {
    if (err) throw err;
    walSyncs++;
    sequence += group.length;
    for (const g of group) g.done();
    if (pending.length > 0) setImmediate(commit);
    else writing = false;
  };
  if (fsync) fs.fdatasync(fd, after);
  else setImmediate(() => after(null));
}

function record(key: Buffer, value: Buffer): Buffer {
  const r = Buffer.allocUnsafe(8 + key.length + value.length);
  r.writeUInt32LE(key.length, 0);
  r.writeUInt32LE(value.length, 4);
  key.copy(r, 8);
  value.copy(r, 8 + key.length);
  return r;
}

const stored = new Map<string, Buffer>();

// ------------------------------------------------------------------ peer links

/** One TCP connection's framing: frames out are coalesced per loop turn, frames in are cut and handed on. */
class Link {
  private out: Buffer[] = [];
  private buf: Buffer = Buffer.alloc(0);

  constructor(
    readonly socket: net.Socket,
    onFrame: (frame: Buffer, link: Link) => void,
  ) {
    socket.setNoDelay(true);
    socket.on("data", (chunk: Buffer) => {
      this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
      let off = 0;
      while (this.buf.length - off >= 4) {
        const n = this.buf.readUInt32LE(off);
        if (n < 5 || n > MAX_FRAME) {
          socket.destroy(new Error(`bad frame length ${n}`));
          return;
        }
        if (this.buf.length - off < 4 + n) break;
        onFrame(this.buf.subarray(off + 4, off + 4 + n), this);
        off += 4 + n;
      }
      this.buf = this.buf.subarray(off);
    });
  }

  send(type: number, id: number, parts: Buffer[]): void {
    let n = 5;
    for (const p of parts) n += p.length;
    const head = Buffer.allocUnsafe(9);
    head.writeUInt32LE(n, 0);
    head[4] = type;
    head.writeUInt32LE(id, 5);
    if (this.out.length === 0) setImmediate(() => this.flush());
    this.out.push(head, ...parts);
  }

  private flush(): void {
    const out = this.out;
    this.out = [];
    if (!this.socket.destroyed) this.socket.write(out.length === 1 ? out[0]! : Buffer.concat(out));
  }
}

// Requests this node sent to a peer, by id: what to do with the answer.
const waiting = new Map<number, (frame: Buffer) => void>();
let nextId = 1;

function ask(link: Link, type: number, parts: Buffer[], onAnswer: (frame: Buffer) => void): void {
  const id = nextId;
  nextId = (nextId + 1) >>> 0 || 1;
  waiting.set(id, onAnswer);
  link.send(type, id, parts);
}

// Incoming connections: peers' stores and reads.
const peerServer = net.createServer((socket) => {
  socket.on("error", () => undefined);
  new Link(socket, (frame, link) => {
    const type = frame[0];
    const id = frame.readUInt32LE(1);
    if (type === 1) {
      const kl = frame.readUInt16LE(5);
      const key = Buffer.from(frame.subarray(7, 7 + kl));
      const value = Buffer.from(frame.subarray(7 + kl));
      append(record(key, value), () => {
        stored.set(key.toString("latin1"), value);
        link.send(2, id, []);
      });
    } else if (type === 3) {
      const v = stored.get(frame.toString("latin1", 5));
      link.send(4, id, v === undefined ? [Buffer.of(0)] : [Buffer.of(1), v]);
    } else socket.destroy(new Error(`unknown frame type ${type}`));
  });
});

// Outgoing connections, one per peer, retried until up (bounded).
const links: Link[] = [];
function connect(address: string, attempt: number): void {
  const [host, port] = split(address);
  const socket = net.connect({ host, port });
  socket.once("connect", () => {
    links.push(
      new Link(socket, (frame) => {
        const id = frame.readUInt32LE(1);
        const w = waiting.get(id);
        waiting.delete(id);
        w?.(frame);
      }),
    );
  });
  socket.on("error", () => undefined);
  socket.once("close", () => {
    const i = links.findIndex((l) => l.socket === socket);
    if (i >= 0) links.splice(i, 1);
    if (attempt < 300) setTimeout(() => connect(address, attempt + 1), 100);
  });
}

// ------------------------------------------------------------------ the HTTP API

let turn = 0;
// Idle keep-alive connections stay open as long as a ringstore node keeps them (api/http-server.ts).
const api = http.createServer({ keepAliveTimeout: 72_000 }, (req, res) => {
  const url = req.url ?? "";
  const answer = (status: number, body?: Buffer | string, type?: string) => {
    if (res.headersSent) return;
    res.statusCode = status;
    if (type !== undefined) res.setHeader("content-type", type);
    res.end(body);
  };
  if (req.method === "GET" && url === "/status") {
    req.resume();
    answer(
      200,
      JSON.stringify({ storage: { walSyncs, sequence }, peersConnected: links.length }),
      "application/json",
    );
    return;
  }
  if (!url.startsWith("/kv/") || url.length === 4) {
    req.resume();
    answer(404);
    return;
  }
  const key = Buffer.from(url.slice(4), "latin1");
  const timer = setTimeout(() => answer(503), TIMEOUT_MS);
  res.once("finish", () => clearTimeout(timer));
  if (req.method === "GET") {
    req.resume();
    const local = stored.get(key.toString("latin1"));
    const link = links[turn++ % Math.max(1, links.length)];
    if (link === undefined) {
      answer(503);
      return;
    }
    ask(link, 3, [key], (frame) => {
      const v = frame[5] === 1 ? frame.subarray(6) : local;
      if (v === undefined) answer(404);
      else answer(200, Buffer.from(v), "application/octet-stream");
    });
    return;
  }
  if (req.method !== "PUT") {
    req.resume();
    answer(405);
    return;
  }
  const chunks: Buffer[] = [];
  let size = 0;
  req.on("data", (c: Buffer) => {
    size += c.length;
    if (size <= MAX_BODY) chunks.push(c);
  });
  req.on("end", () => {
    if (size > MAX_BODY) {
      answer(413);
      return;
    }
    const value = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
    let durable = 0;
    const ack = () => {
      if (++durable === 2) answer(204);
    };
    append(record(key, value), () => {
      stored.set(key.toString("latin1"), value);
      ack();
    });
    const kl = Buffer.allocUnsafe(2);
    kl.writeUInt16LE(key.length, 0);
    for (const link of links) ask(link, 1, [kl, key, value], ack);
  });
});

const [apiHost, apiPort] = split(values.api);
const [peerHost, peerPort] = split(values.peer);
peerServer.listen(peerPort, peerHost, () => {
  api.listen(apiPort, apiHost, () => {
    const a = api.address() as net.AddressInfo;
    const p = peerServer.address() as net.AddressInfo;
    for (const address of values.peers.split(",").filter((s) => s !== "")) connect(address, 0);
    // The line bench:cluster waits for, as a ringstore node prints it.
    console.log(`floor node serving the API on http://${a.address}:${a.port} (peer ${p.address}:${p.port})`);
  });
});

for (const sig of ["SIGTERM", "SIGINT"] as const)
  process.on(sig, () => {
    fs.closeSync(fd);
    process.exit(0);
  });

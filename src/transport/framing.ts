/**
 * Length-prefixed framing: each frame is a u32 big-endian length, then that many bytes. The length is
 * checked against the cap before anything is allocated for it.
 */
import { MAX_FRAME_BYTES, ProtocolError } from "./messages.js";

export function frameBytes(payload: Buffer): Buffer {
  if (payload.length > MAX_FRAME_BYTES)
    throw new ProtocolError(`frame of ${payload.length} bytes exceeds the cap`);
  const out = Buffer.allocUnsafe(4 + payload.length);
  out.writeUInt32BE(payload.length, 0);
  payload.copy(out, 4);
  return out;
}

/**
 * Accumulates stream chunks and yields whole frames' payloads. The cap may be raised once the peer is
 * known (tcp-transport.ts reads a small handshake frame first, and whole requests only after it).
 */
export class FrameReader {
  private chunks: Buffer[] = [];
  private buffered = 0;

  constructor(public maxFrameBytes = MAX_FRAME_BYTES) {}

  /** Adds a chunk; returns the complete frames now available. Throws ProtocolError on an oversized length. */
  push(chunk: Buffer): Buffer[] {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    const out: Buffer[] = [];
    for (;;) {
      if (this.buffered < 4) break;
      const head = this.peek(4);
      const len = head.readUInt32BE(0);
      if (len > this.maxFrameBytes)
        throw new ProtocolError(`peer announced a frame of ${len} bytes, over the cap`);
      if (this.buffered < 4 + len) break;
      const all = this.take(4 + len);
      out.push(all.subarray(4));
    }
    return out;
  }

  private peek(n: number): Buffer {
    if (this.chunks[0]!.length >= n) return this.chunks[0]!;
    const b = Buffer.concat(this.chunks);
    this.chunks = [b];
    return b;
  }

  private take(n: number): Buffer {
    const b = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    const out = b.subarray(0, n);
    const rest = b.subarray(n);
    this.chunks = rest.length > 0 ? [rest] : [];
    this.buffered -= n;
    return out;
  }
}

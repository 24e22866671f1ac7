/**
 * Child program of test/transport/tcp-transport.test.ts, for what only a separate process can show: that
 * a process using the transport exits by itself once the transports are closed (no timer, socket or
 * server left holding the event loop), and that a misbehaving request handler does not take the whole
 * process down (Node's default for an unhandled rejection or an uncaught exception is to exit with 1).
 *
 * Prints one JSON line on stdout with what it saw, then returns from its main module without calling
 * process.exit: the process ends only when nothing keeps the event loop alive.
 *
 * Usage: tcp-child.ts <scenario>
 *   close-exits             two transports, requests answered and one left pending (handler never
 *                           answers, long timeout), one request in connect to a peer that never says
 *                           welcome; then both transports are closed
 *   handler-rejects-undefined   the handler rejects with `undefined`
 *   handler-throws-sync         the handler (not an async function) throws before returning a promise
 */
import * as net from "node:net";
import { systemRuntime } from "../../src/runtime/system-runtime.js";
import type { AnswerBody } from "../../src/transport/messages.js";
import { TcpTransport } from "../../src/transport/tcp-transport.js";
import type { RequestHandler } from "../../src/transport/transport.js";
import { TEST_KEYS } from "./peers.js";

const scenario = process.argv[2];

function codeOf(err: unknown): string {
  return String((err as { code?: unknown } | undefined)?.code ?? err);
}

async function pair(handler: RequestHandler): Promise<{ server: TcpTransport; client: TcpTransport }> {
  const rt = systemRuntime();
  const base = {
    host: "127.0.0.1",
    port: 0,
    clusterId: "c",
    timers: rt.timers,
    clock: rt.clock,
    security: "tls",
    keys: TEST_KEYS,
  } as const;
  const server = await TcpTransport.listen({ ...base, nodeId: "server", handler });
  const client = await TcpTransport.listen({
    ...base,
    nodeId: "client",
    handler: async () => ({ kind: "pong" }),
  });
  return { server, client };
}

async function closeExits(): Promise<void> {
  const { server, client } = await pair((_from, body) =>
    body.kind === "ping" ? Promise.resolve<AnswerBody>({ kind: "pong" }) : new Promise<AnswerBody>(() => {}),
  );
  // A peer that accepts connections but never completes the handshake: the client's connect timer runs.
  const silent = net.createServer((s) => {
    s.on("error", () => undefined);
    s.resume();
  });
  await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
  const silentPort = (silent.address() as net.AddressInfo).port;

  for (let i = 0; i < 20; i++) await client.request(server.address, { kind: "ping" }, 5000);
  const pending = client
    .request(server.address, { kind: "read", key: Buffer.from("k") }, 600_000)
    .then(() => "resolved", codeOf);
  const connecting = client
    .request(`127.0.0.1:${silentPort}`, { kind: "ping" }, 600_000)
    .then(() => "resolved", codeOf);
  await new Promise((r) => setTimeout(r, 20));
  await client.close();
  await server.close();
  await new Promise<void>((resolve) => silent.close(() => resolve()));
  const out = { pending: await pending, connecting: await connecting };
  // Let sockets finish closing before listing what still holds the loop.
  await new Promise((r) => setTimeout(r, 20));
  const resources = process.getActiveResourcesInfo().filter((r) => r !== "TTYWrap" && r !== "PipeWrap");
  process.stdout.write(`${JSON.stringify({ ...out, resources })}\n`);
}

async function badHandler(handler: RequestHandler): Promise<void> {
  const { server, client } = await pair(handler);
  try {
    const first = await client.request(server.address, { kind: "ping" }, 500).then(() => "resolved", codeOf);
    // The transport (and the process) must still work afterwards.
    const second = await client.request(server.address, { kind: "ping" }, 500).then(() => "resolved", codeOf);
    process.stdout.write(`${JSON.stringify({ first, second })}\n`);
  } finally {
    await client.close();
    await server.close();
  }
}

let calls = 0;
switch (scenario) {
  case "close-exits":
    await closeExits();
    break;
  case "handler-rejects-undefined":
    await badHandler(() => (calls++ === 0 ? Promise.reject(undefined) : Promise.resolve({ kind: "pong" })));
    break;
  case "handler-throws-sync":
    await badHandler(() => {
      if (calls++ === 0) throw new Error("thrown before returning a promise");
      return Promise.resolve({ kind: "pong" });
    });
    break;
  default:
    process.stderr.write(`unknown scenario ${scenario}\n`);
    process.exitCode = 2;
}

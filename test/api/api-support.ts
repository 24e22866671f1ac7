/**
 * What the API tests of its bounds and its security share: the API over a service the test controls,
 * raw connections (plain or TLS) that send and read bytes as they are, and the refusal counter.
 */
import * as net from "node:net";
import * as tls from "node:tls";
import type { TokenSource } from "../../src/api/access.js";
import type { TlsMaterial } from "../../src/api/api-security.js";
import { type ApiDeps, buildHttpApi, type HttpApi } from "../../src/api/http-api.js";
import { API_LIMIT_DEFAULTS, type ApiServerLimits } from "../../src/api/limits.js";
import { NodeMetrics } from "../../src/api/metrics.js";
import type { KvService, ReadOutcome, WriteOutcome } from "../../src/replication/coordinator.js";
import { EMPTY_VECTOR, update } from "../../src/versioning/dvv.js";

const VALUE = { data: Buffer.from("v"), contentType: "text/plain", deleted: false, writtenAtMs: 0 };
const DONE = update([], EMPTY_VECTOR, "a1", VALUE);
export const OK_WRITE: WriteOutcome = { kind: "ok", written: DONE.written, set: DONE.set, acked: 1 };
export const OK_READ: ReadOutcome = { kind: "ok", siblings: DONE.set, replied: 1 };
export const OK_SERVICE: KvService = { get: async () => OK_READ, write: async () => OK_WRITE };

export function testMetrics(): NodeMetrics {
  return new NodeMetrics(
    () => {
      throw new Error("storage statistics are not part of this test");
    },
    { node: "t" },
  );
}

/** What the API needs, over `service`; /status and /ring answer small documents. */
export function testDeps(service: KvService, metrics: NodeMetrics, more: Partial<ApiDeps> = {}): ApiDeps {
  return {
    service,
    secret: Buffer.alloc(32, 1),
    n: 1,
    r: 1,
    w: 1,
    requestTimeoutMs: 1000,
    maxTimeoutMs: 60_000,
    limits: { maxKeyBytes: 1024, maxValueBytes: 1024, maxContextChars: 8192 },
    metrics,
    now: () => 0,
    status: async () => ({}) as Awaited<ReturnType<ApiDeps["status"]>>,
    ring: () => ({}) as ReturnType<ApiDeps["ring"]>,
    ...more,
  };
}

export interface ServerSetup {
  readonly service?: KvService;
  readonly limits?: Partial<ApiServerLimits>;
  readonly tls?: TlsMaterial;
  readonly tokens?: TokenSource;
  readonly deps?: Partial<ApiDeps>;
}

/** Runs `fn` against an API listening on 127.0.0.1, closed afterwards (also when `fn` fails). */
export async function withServer(
  setup: ServerSetup,
  fn: (port: number, metrics: NodeMetrics, api: HttpApi) => Promise<void>,
): Promise<void> {
  const metrics = testMetrics();
  const api = buildHttpApi(testDeps(setup.service ?? OK_SERVICE, metrics, setup.deps), {
    limits: { ...API_LIMIT_DEFAULTS, ...setup.limits },
    ...(setup.tls !== undefined ? { tls: setup.tls } : {}),
    ...(setup.tokens !== undefined ? { tokens: setup.tokens } : {}),
  });
  const port = await api.listen("127.0.0.1", 0);
  try {
    await fn(port, metrics, api);
  } finally {
    await api.close();
  }
}

/** `ringstore_api_refused_total` by reason. */
export async function refusals(metrics: NodeMetrics): Promise<Record<string, number>> {
  const text = await metrics.registry.getSingleMetricAsString("ringstore_api_refused_total");
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/reason="([a-z_]+)"[^\n]* ([0-9]+)/g)) out[m[1]!] = Number(m[2]);
  return out;
}

/** One raw connection: send bytes, read what comes back as text, know when it closed. */
export interface RawConnection {
  write(text: string): void;
  /** Everything received so far. */
  readonly got: string;
  readonly closed: boolean;
  /** Waits (up to `ms`) until what arrived matches, or the connection closed; returns what arrived. */
  until(re: RegExp, ms?: number): Promise<string>;
  /** Waits (up to `ms`) until the server closes the connection; whether it did. */
  untilClosed(ms?: number): Promise<boolean>;
  destroy(): void;
}

export function rawConnection(port: number, tlsOptions?: { ca: Buffer }): RawConnection {
  const s =
    tlsOptions === undefined
      ? net.connect(port, "127.0.0.1")
      : tls.connect({ port, host: "127.0.0.1", ca: tlsOptions.ca, servername: "localhost" });
  let got = "";
  let closed = false;
  const waiters: (() => void)[] = [];
  const wake = () => {
    for (const w of waiters.splice(0)) w();
  };
  s.on("data", (d: Buffer) => {
    got += d.toString("latin1");
    wake();
  });
  s.on("close", () => {
    closed = true;
    wake();
  });
  s.on("error", () => undefined);
  const wait = async (done: () => boolean, ms: number) => {
    const end = Date.now() + ms;
    while (!done() && Date.now() < end)
      await new Promise<void>((r) => {
        waiters.push(r);
        setTimeout(r, 20);
      });
  };
  const conn: RawConnection = {
    write: (text) => {
      s.write(text);
    },
    get got() {
      return got;
    },
    get closed() {
      return closed;
    },
    async until(re, ms = 5000) {
      await wait(() => re.test(got) || closed, ms);
      return got;
    },
    async untilClosed(ms = 5000) {
      await wait(() => closed, ms);
      return closed;
    },
    destroy: () => s.destroy(),
  };
  return conn;
}

/** Resolves once the server holds `n` connections (it has seen them all), at most 5 s. */
export async function connectionsHeld(api: HttpApi, n: number): Promise<void> {
  for (let i = 0; i < 500; i++) {
    const held = await new Promise<number>((resolve, reject) =>
      api.server.getConnections((err, count) => (err ? reject(err) : resolve(count))),
    );
    if (held === n) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`the server does not hold ${n} connections after 5 s`);
}

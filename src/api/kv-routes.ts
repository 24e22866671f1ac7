/**
 * `GET`, `HEAD`, `PUT` and `DELETE /kv/{key}` (../shared/spec/http-api.md): each checks everything about
 * its request before any state changes (a bad key, context or parameter changes nothing), asks the
 * coordinator, and renders its outcome (status, X-Context, value or siblings).
 */
import type * as http from "node:http";
import type { KvService, TooFewReplicas } from "../replication/coordinator.js";
import type { Timers } from "../runtime/runtime.js";
import { systemRuntime } from "../runtime/system-runtime.js";
import { encodeContext } from "../versioning/context-token.js";
import { contextOf, type VersionVector } from "../versioning/dvv.js";
import type { StoredSibling } from "../versioning/object-codec.js";
import type { Call } from "./http-server.js";
import type { NodeMetrics } from "./metrics.js";
import {
  parseContext,
  parseKey,
  parsePrimaryQuorum,
  parseQuorum,
  parseTimeout,
  type Query,
  single,
} from "./params.js";

export interface ApiLimits {
  readonly maxKeyBytes: number;
  readonly maxValueBytes: number;
  readonly maxContextChars: number;
}

/** What the key-value routes need. */
export interface KvRouteDeps {
  readonly service: KvService;
  /** Signs and checks context tokens. */
  readonly secret: Uint8Array;
  /** N, and the default R and W. */
  readonly n: number;
  readonly r: number;
  readonly w: number;
  readonly requestTimeoutMs: number;
  readonly maxTimeoutMs: number;
  readonly limits: ApiLimits;
  readonly metrics: NodeMetrics;
  /** Wall clock for writtenAt (tombstone expiry); never used to order versions. */
  readonly now: () => number;
  /** For the requests' deadlines (default: the system's timers). */
  readonly timers?: Timers;
}

/**
 * How long after a request's deadline the API answers it 503 by itself if the replication layer has
 * not: the layer ends its own work at the deadline and answers first, with its true counts; this only
 * bounds a path that would not.
 */
export const DEADLINE_BACKSTOP_MS = 20;

/** What is left of a request's budget: its timeout less the time since it arrived (`c.started`). */
function leftOf(c: Call, timeoutMs: number): number {
  return Math.floor(timeoutMs - (performance.now() - c.started));
}

/**
 * The service's outcome, or "late" once `leftMs` (and the backstop) passed without one: the request is
 * answered then, and the outcome that may still come is dropped.
 */
function withinBudget<T>(work: Promise<T>, leftMs: number, timers: Timers): Promise<T | "late"> {
  return new Promise((resolve, reject) => {
    const timer = timers.after(leftMs + DEADLINE_BACKSTOP_MS, () => resolve("late"));
    work.then(
      (v) => {
        timer.cancel();
        resolve(v);
      },
      (err: unknown) => {
        timer.cancel();
        reject(err);
      },
    );
  });
}

export interface KvRoutes {
  /** GET and HEAD. */
  get(c: Call): Promise<void>;
  put(c: Call): Promise<void>;
  delete(c: Call): Promise<void>;
}

/** The causal history of one version: its context plus its own dot. */
function historyOf(s: StoredSibling): VersionVector {
  const out = new Map(s.context);
  if ((out.get(s.dot.actor) ?? 0) < s.dot.counter) out.set(s.dot.actor, s.dot.counter);
  return out;
}

/**
 * Every quorum parameter of a request, checked whichever the method uses (a bad one is a 400 for any
 * method), and the timeout.
 */
function quorums(q: Query, deps: KvRouteDeps) {
  return {
    r: parseQuorum(single(q, "r"), "r", deps.r, deps.n),
    w: parseQuorum(single(q, "w"), "w", deps.w, deps.n),
    pr: parsePrimaryQuorum(single(q, "pr"), "pr", deps.n),
    pw: parsePrimaryQuorum(single(q, "pw"), "pw", deps.n),
    timeout: parseTimeout(single(q, "timeout"), deps.requestTimeoutMs, deps.maxTimeoutMs),
  };
}

export function kvRoutes(deps: KvRouteDeps): KvRoutes {
  const m = deps.metrics;
  const secret = deps.secret;
  const limits = deps.limits;
  const timers = deps.timers ?? systemRuntime().timers;

  // The timeout is one budget from the request's arrival to its answer: the replication layer gets what
  // is left of it when the request is ready (its body read), and the answer never comes later.
  const get = async (c: Call): Promise<void> => {
    const key = parseKey(c.rawUrl, limits.maxKeyBytes);
    const { r, pr, timeout } = quorums(c.query(), deps);
    const left = leftOf(c, timeout);
    const out = left < 1 ? "late" : await withinBudget(deps.service.get(key, r, left, { pr }), left, timers);
    if (out === "late") {
      m.replicaTimeouts.inc();
      m.deadlineAnswers.inc({ when: left < 1 ? "ready" : "late" });
      return c.error(
        503,
        "unavailable",
        `the request's timeout (${timeout} ms) passed before ${r} replicas replied`,
        { needed: r, timeoutMs: timeout },
      );
    }
    if (out.kind === "too_few_replicas")
      return tooFewReplicas(c, out.needed === pr && pr > r ? "pr" : "r", out, "nothing was read");
    if (out.kind === "unavailable") {
      m.replicaTimeouts.inc();
      const p = out.primary;
      return c.error(
        503,
        "unavailable",
        p !== undefined && out.replied >= out.needed
          ? `only ${p.replied} of the ${p.needed} replies needed from the key's primary replicas (pr) arrived in time`
          : `only ${out.replied} of the ${out.needed} replicas needed replied in time`,
        { needed: out.needed, replied: out.replied, ...(p === undefined ? {} : { primary: p }) },
      );
    }
    const sibs = out.siblings;
    m.siblings.observe(sibs.length);
    if (sibs.length > 0) {
      let bytes = 0;
      for (const s of sibs) bytes += s.value.data.length;
      m.objectSize.observe({ op: "get" }, bytes);
    }
    const live = sibs.filter((s) => !s.value.deleted);
    const headers: http.OutgoingHttpHeaders = {};
    const context = sibs.length > 0 ? encodeContext(contextOf(sibs), key, secret) : undefined;
    if (context !== undefined) headers["x-context"] = context;
    if (live.length === 0)
      return c.error(404, "not_found", sibs.length > 0 ? "the key is deleted" : "no such key", {}, headers);
    if (sibs.length === 1) {
      const v = live[0]!.value;
      // The value's own Content-Type, as stored, even where it is not a valid media type.
      headers["content-type"] = v.contentType;
      return c.respond(200, headers, Buffer.from(v.data));
    }
    c.json(
      300,
      {
        context,
        siblings: sibs.map((s) => ({
          value: s.value.deleted ? "" : Buffer.from(s.value.data).toString("base64"),
          contentType: s.value.contentType,
          deleted: s.value.deleted,
        })),
      },
      headers,
    );
  };

  const write = async (c: Call, deleted: boolean): Promise<void> => {
    // Everything but the body is checked first: a bad request is refused before its body is read.
    const key = parseKey(c.rawUrl, limits.maxKeyBytes);
    const { w, pw, timeout } = quorums(c.query(), deps);
    const context = parseContext(c.req.headers, key, secret, limits.maxContextChars);
    // A DELETE's body, if any, is read (within the same limit) and dropped.
    const body = await c.readBody();
    if (body === undefined) return;
    const sent = c.req.headers["content-type"];
    const ct = deleted ? "" : sent === undefined || sent === "" ? "application/octet-stream" : sent;
    const left = leftOf(c, timeout);
    if (left < 1) {
      m.replicaTimeouts.inc();
      m.deadlineAnswers.inc({ when: "ready" });
      return c.error(
        503,
        "unavailable",
        `the request's timeout (${timeout} ms) passed before its body arrived; the write was NOT applied`,
        { needed: w, acked: 0, timeoutMs: timeout, applied: false },
      );
    }
    const work = deps.service.write(
      key,
      context,
      {
        data: deleted ? Buffer.alloc(0) : body,
        contentType: ct,
        deleted,
        writtenAtMs: Math.max(0, Math.floor(deps.now())),
      },
      w,
      left,
      { pw },
    );
    const out = await withinBudget(work, left, timers);
    if (out === "late") {
      m.replicaTimeouts.inc();
      m.deadlineAnswers.inc({ when: "late" });
      return c.error(
        503,
        "unavailable",
        `the request's timeout (${timeout} ms) passed before ${w} replicas acknowledged; the write may have been applied on some replicas (it is not rolled back)`,
        { needed: w, timeoutMs: timeout },
      );
    }
    if (out.kind === "too_many_siblings")
      return c.error(
        409,
        "too_many_siblings",
        `the key already holds ${out.siblings} siblings (the maximum is ${out.max}): read it, resolve the siblings, and write back with the context`,
        { siblings: out.siblings, max: out.max },
      );
    if (out.kind === "unavailable") {
      m.replicaTimeouts.inc();
      const p = out.primary;
      const which =
        p !== undefined && out.acked >= out.needed
          ? `only ${p.acked} of the ${p.needed} acknowledgements needed from the key's primary replicas (pw) arrived in time`
          : `only ${out.acked} of the ${out.needed} replica acknowledgements needed arrived in time`;
      return c.error(
        503,
        "unavailable",
        `${which}; the write may have been applied on some replicas (it is not rolled back)`,
        { needed: out.needed, acked: out.acked, ...(p === undefined ? {} : { primary: p }) },
      );
    }
    if (out.kind === "too_few_replicas")
      return tooFewReplicas(
        c,
        out.needed === pw && pw > w ? "pw" : "w",
        out,
        "nothing was written: the write was NOT applied",
      );
    if (out.kind === "overloaded")
      return c.error(
        503,
        "overloaded",
        out.limit === "waiters_per_key"
          ? `the key has too many writes waiting on this node (${out.max}); the write was NOT applied: retry it later`
          : `this node has writes under way to too many keys (${out.max}); the write was NOT applied: retry it later`,
        { limit: out.limit, max: out.max, applied: false },
        { "retry-after": "1" },
      );
    m.siblings.observe(out.set.length);
    if (!deleted) m.objectSize.observe({ op: "put" }, body.length);
    c.respond(204, { "x-context": encodeContext(historyOf(out.written), key, secret) }, undefined);
  };

  return { get, put: (c) => write(c, false), delete: (c) => write(c, true) };
}

/** 503 for a quorum larger than the key's replicas in the ring: nothing was asked. */
function tooFewReplicas(c: Call, which: "r" | "w" | "pr" | "pw", out: TooFewReplicas, what: string): void {
  c.error(
    503,
    "unavailable",
    `too few replicas are up: ${which}=${out.needed} needs ${out.needed} replicas, and this key has ${out.replicas} in the cluster (it has fewer members than that); ${what}`,
    {
      needed: out.needed,
      replicas: out.replicas,
      ...(which === "w" || which === "pw" ? { applied: false } : {}),
    },
  );
}

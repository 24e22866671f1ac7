/**
 * The node's recent request rates and latencies, per operation, for the dashboard's charts: every
 * request is counted in a fine log-bucketed histogram of the current interval (NodeMetrics.observeRequest
 * feeds it), and every `sample()` (a few seconds apart) closes the interval into one sample (count,
 * errors, p50, p99 per operation) kept in a fixed-size ring buffer. So a page opened now has the last
 * minutes at once, and the cost per request is one array increment.
 *
 * Latency buckets grow by 2^(1/8) (about 9%) from 10 us to about a minute: a percentile is within 9% of
 * the true one. (The Prometheus histogram's buckets are far coarser: it is for aggregation across nodes.)
 */

/** Operations charted, in this order (others are ignored). */
export const CHARTED_OPS = ["get", "put", "delete", "list"] as const;
export type ChartedOp = (typeof CHARTED_OPS)[number];

const MIN_MS = 0.01;
const GROWTH = 2 ** (1 / 8);
const BUCKETS = 184;

/** One operation in one sample. */
export interface OpSample {
  readonly count: number;
  /** Answered with a 5xx (or not answered: 499). */
  readonly errors: number;
  /** Milliseconds; null without requests. */
  readonly p50: number | null;
  readonly p99: number | null;
}

export interface RequestSample {
  /** When the interval ended (ms since the epoch). */
  readonly at: number;
  /** Its length, ms. */
  readonly ms: number;
  readonly ops: Readonly<Record<ChartedOp, OpSample>>;
}

function bucketOf(ms: number): number {
  if (!(ms > MIN_MS)) return 0;
  return Math.min(BUCKETS - 1, Math.ceil(Math.log(ms / MIN_MS) / Math.log(GROWTH)));
}

/** The upper bound of a bucket, ms. */
function boundOf(b: number): number {
  return MIN_MS * GROWTH ** b;
}

function quantile(counts: Uint32Array, total: number, q: number): number | null {
  if (total === 0) return null;
  const rank = Math.ceil(q * total);
  let seen = 0;
  for (let b = 0; b < BUCKETS; b++) {
    seen += counts[b]!;
    if (seen >= rank) return Math.round(boundOf(b) * 1000) / 1000;
  }
  return boundOf(BUCKETS - 1);
}

export class RequestHistory {
  private readonly current = new Map<ChartedOp, { counts: Uint32Array; total: number; errors: number }>();
  private readonly kept: RequestSample[] = [];
  private startedAt: number | undefined;

  /** `capacity` samples are kept (at 2 s apart, 180 are six minutes). */
  constructor(readonly capacity = 180) {
    for (const op of CHARTED_OPS)
      this.current.set(op, { counts: new Uint32Array(BUCKETS), total: 0, errors: 0 });
  }

  observe(op: string, status: number, seconds: number): void {
    const c = this.current.get(op as ChartedOp);
    if (c === undefined) return;
    c.counts[bucketOf(seconds * 1000)]!++;
    c.total++;
    if (status >= 500 || status === 499) c.errors++;
  }

  /** Closes the interval at `now` into a sample (the first call only starts the first interval). */
  sample(now: number): RequestSample | undefined {
    const from = this.startedAt;
    this.startedAt = now;
    if (from === undefined) return undefined;
    const ops = {} as Record<ChartedOp, OpSample>;
    for (const op of CHARTED_OPS) {
      const c = this.current.get(op)!;
      ops[op] = {
        count: c.total,
        errors: c.errors,
        p50: quantile(c.counts, c.total, 0.5),
        p99: quantile(c.counts, c.total, 0.99),
      };
      c.counts.fill(0);
      c.total = 0;
      c.errors = 0;
    }
    const s: RequestSample = { at: now, ms: Math.max(1, now - from), ops };
    this.kept.push(s);
    if (this.kept.length > this.capacity) this.kept.shift();
    return s;
  }

  /** The samples kept that ended after `since` (all by default), oldest first. */
  samples(since = Number.NEGATIVE_INFINITY): RequestSample[] {
    return this.kept.filter((s) => s.at > since);
  }
}

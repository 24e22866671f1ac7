/**
 * The environment that deterministic code receives instead of reaching for globals: a clock, timers and
 * a seeded random source. Production passes `systemRuntime()`; tests and the simulator pass virtual ones.
 */
export interface Clock {
  /** Milliseconds since an arbitrary epoch; monotonic within a process. */
  now(): number;
}

export interface TimerHandle {
  cancel(): void;
}

export interface Timers {
  /** Calls `fn` once after `ms`; the handle cancels it. Timers never keep a process alive. */
  after(ms: number, fn: () => void): TimerHandle;
  /**
   * Calls `fn` once the I/O callbacks ready now have run (Node's setImmediate): work started from every
   * request that arrived together can then be done as one batch. Unlike `after`, it keeps the process
   * alive until `fn` has run. Without it, `after(0, fn)` serves, where something else (a server's
   * sockets) keeps the process alive.
   */
  soon?(fn: () => void): void;
}

export interface Random {
  /** Uniform in [0, 1). */
  next(): number;
}

export interface Runtime {
  readonly clock: Clock;
  readonly timers: Timers;
  readonly random: Random;
}

/** xoshiro128** seeded from one 32-bit seed: reproducible, fast, good enough for protocol randomness. */
export function seededRandom(seed: number): Random {
  let s0 = (seed ^ 0x9e3779b9) >>> 0 || 1;
  let s1 = Math.imul(seed ^ 0x85ebca6b, 0xc2b2ae35) >>> 0 || 2;
  let s2 = 0x27d4eb2f;
  let s3 = 0x165667b1;
  const next = (): number => {
    // xoshiro128** on four 32-bit words
    const result = Math.imul(rotl(Math.imul(s1, 5), 7), 9) >>> 0;
    const t = s1 << 9;
    s2 ^= s0;
    s3 ^= s1;
    s1 ^= s2;
    s0 ^= s3;
    s2 ^= t;
    s3 = rotl(s3, 11);
    return result / 0x1_0000_0000;
  };
  for (let i = 0; i < 16; i++) next();
  return { next };
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/** The real clock, timers and random source: the production adapter of runtime.ts. */
import { performance } from "node:perf_hooks";
import type { Runtime } from "./runtime.js";

export function systemRuntime(): Runtime {
  return {
    clock: { now: () => performance.timeOrigin + performance.now() },
    timers: {
      after(ms, fn) {
        const t = setTimeout(fn, ms);
        t.unref();
        return { cancel: () => clearTimeout(t) };
      },
      soon(fn) {
        setImmediate(fn);
      },
    },
    random: { next: Math.random },
  };
}

/**
 * Assertions for invariants: the first of ringstore's three kinds of error (ARCHITECTURE.md). A broken
 * invariant means the code is wrong, not the input or the world: the only safe thing is to stop, with a
 * message that names the values involved, before the bug writes something wrong to disk or to a peer.
 * Expected protocol outcomes (a quorum not met) are returned values; I/O failures are typed errors.
 *
 * Use `assert` only for what no input, peer or disk can make false: a bad request from a client or a
 * peer gets an error answer, never an InvariantError. Never catch InvariantError to carry on.
 *
 * On a hot path, pass the message as a function so that it is built only when the assertion fails:
 *   assert(acked >= w, () => `ok write with ${acked} acks, needed ${w}`);
 */

export class InvariantError extends Error {
  readonly code = "ERR_INVARIANT";
  constructor(message: string) {
    super(`invariant broken: ${message}`);
    this.name = "InvariantError";
  }
}

let broken: ((err: InvariantError) => void) | undefined;

/**
 * Sets what a broken invariant does before the InvariantError is thrown: a node's process stops there
 * (cli/node-commands.ts), so that no catch on the way (a request's 500, a background task's retry) can
 * swallow it. Without a handler (tests, the simulator) the error is only thrown.
 */
export function onInvariantBroken(handler: ((err: InvariantError) => void) | undefined): void {
  broken = handler;
}

function fail(message: string): never {
  const err = new InvariantError(message);
  broken?.(err);
  throw err;
}

/** Throws an InvariantError with `message` unless `condition` holds. */
export function assert(condition: unknown, message: string | (() => string)): asserts condition {
  if (!condition) fail(typeof message === "string" ? message : message());
}

/**
 * For the default branch of an exhaustive switch over a closed union: the compiler refuses the call if
 * a variant is left unhandled, and at run time it fails loudly if a value outside the union got in.
 */
export function unreachable(x: never, what = "value"): never {
  return fail(`unexpected ${what}: ${describe(x)}`);
}

function describe(x: unknown): string {
  try {
    return JSON.stringify(x) ?? String(x);
  } catch {
    // A cycle or a bigint: the plain string form is enough for the message.
    return String(x);
  }
}

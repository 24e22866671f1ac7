/**
 * Opaque tokens handed to clients (the causal context, the key listing's cursor): a body followed by a
 * truncated HMAC, spelt in canonical base64url (no padding, no stray low bits, so one body has one
 * spelling). This file seals and opens them; what the body means, and what the MAC covers besides it, is
 * the caller's.
 */
import { createHmac, timingSafeEqual } from "node:crypto";

/** Bytes of HMAC-SHA256 kept at the end of a token. */
export const TOKEN_MAC_BYTES = 12;

/** The first TOKEN_MAC_BYTES of HMAC-SHA256(secret, the parts in order). */
export function tokenMac(secret: Uint8Array, ...parts: readonly Uint8Array[]): Buffer {
  const h = createHmac("sha256", secret);
  for (const part of parts) h.update(part);
  return h.digest().subarray(0, TOKEN_MAC_BYTES);
}

/** body | mac, in base64url. */
export function sealToken(body: Uint8Array, mac: Uint8Array): string {
  return Buffer.concat([body, mac]).toString("base64url");
}

export interface TokenRules {
  /** What the token is called in errors ("cursor", "context"). */
  readonly noun: string;
  /** Longest token accepted, in characters (checked before decoding). */
  readonly maxChars: number;
  /** Fewest bytes a body can have. */
  readonly minBodyBytes: number;
  /** The sentence for a MAC that does not check. */
  readonly forged: string;
  /** The error thrown for every refusal. */
  readonly fail: (message: string) => Error;
}

/** The body of `token`, whose MAC must equal `macOf(body)`; anything else throws `rules.fail(...)`. */
export function openToken(token: string, macOf: (body: Buffer) => Buffer, rules: TokenRules): Buffer {
  const { noun, fail } = rules;
  if (token.length === 0) throw fail(`empty ${noun}`);
  if (token.length > rules.maxChars) throw fail(`${noun} too long`);
  if (!/^[A-Za-z0-9_-]+$/.test(token)) throw fail(`the ${noun} is not base64url`);
  const raw = Buffer.from(token, "base64url");
  if (raw.toString("base64url") !== token) throw fail(`the ${noun} is not in canonical base64url`);
  if (raw.length < rules.minBodyBytes + TOKEN_MAC_BYTES) throw fail(`${noun} too short`);
  const body = raw.subarray(0, raw.length - TOKEN_MAC_BYTES);
  if (!timingSafeEqual(raw.subarray(raw.length - TOKEN_MAC_BYTES), macOf(body))) throw fail(rules.forged);
  return body;
}

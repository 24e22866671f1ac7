/**
 * The TypeScript client of the HTTP API (exported as `ringstore/client`).
 *
 * `get` returns the value, or the siblings when concurrent writes exist, with the opaque context to pass
 * back on the next write. Errors from the server become `RingstoreError`s carrying the server's code.
 */
import { Pool } from "undici";

export interface Sibling {
  readonly value: Buffer;
  readonly contentType: string;
  readonly deleted: boolean;
}

export type GetResult =
  | { readonly kind: "value"; readonly value: Buffer; readonly contentType: string; readonly context: string }
  | { readonly kind: "siblings"; readonly siblings: Sibling[]; readonly context: string }
  | { readonly kind: "not_found"; readonly context: string | undefined };

export interface RequestOptions {
  readonly r?: number | "one" | "quorum" | "all";
  readonly w?: number | "one" | "quorum" | "all";
  readonly timeoutMs?: number;
}

export class RingstoreError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly body: Record<string, unknown>,
  ) {
    super(message);
    this.name = "RingstoreError";
  }
}

export function encodeKey(key: string | Uint8Array): string {
  const b = typeof key === "string" ? Buffer.from(key, "utf8") : Buffer.from(key);
  let out = "";
  for (const c of b) {
    const unreserved =
      (c >= 0x30 && c <= 0x39) ||
      (c >= 0x41 && c <= 0x5a) ||
      (c >= 0x61 && c <= 0x7a) ||
      c === 0x2d ||
      c === 0x2e ||
      c === 0x5f ||
      c === 0x7e;
    out += unreserved ? String.fromCharCode(c) : `%${c.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

function query(o: RequestOptions): string {
  const p: string[] = [];
  if (o.r !== undefined) p.push(`r=${o.r}`);
  if (o.w !== undefined) p.push(`w=${o.w}`);
  if (o.timeoutMs !== undefined) p.push(`timeout=${o.timeoutMs}`);
  return p.length > 0 ? `?${p.join("&")}` : "";
}

export class RingstoreClient {
  private readonly pool: Pool;

  /** `node` is an API address, `http://HOST:PORT` or `HOST:PORT`. */
  constructor(node: string, options: { connections?: number } = {}) {
    const origin = node.startsWith("http://") || node.startsWith("https://") ? node : `http://${node}`;
    this.pool = new Pool(origin, { connections: options.connections ?? 16, pipelining: 1 });
  }

  private async fail(status: number, text: string): Promise<never> {
    let body: Record<string, unknown> = {};
    try {
      body = JSON.parse(text) as Record<string, unknown>;
    } catch {
      body = { error: "unknown", message: text };
    }
    throw new RingstoreError(
      status,
      String(body.error ?? "unknown"),
      String(body.message ?? `HTTP ${status}`),
      body,
    );
  }

  async get(key: string | Uint8Array, options: RequestOptions = {}): Promise<GetResult> {
    const res = await this.pool.request({ method: "GET", path: `/kv/${encodeKey(key)}${query(options)}` });
    const context = res.headers["x-context"] as string | undefined;
    if (res.statusCode === 200) {
      const value = Buffer.from(await res.body.arrayBuffer());
      return {
        kind: "value",
        value,
        contentType: String(res.headers["content-type"] ?? ""),
        context: context!,
      };
    }
    const text = await res.body.text();
    if (res.statusCode === 300) {
      const j = JSON.parse(text) as {
        context: string;
        siblings: { value: string; contentType: string; deleted: boolean }[];
      };
      return {
        kind: "siblings",
        context: j.context,
        siblings: j.siblings.map((s) => ({
          value: Buffer.from(s.value, "base64"),
          contentType: s.contentType,
          deleted: s.deleted,
        })),
      };
    }
    if (res.statusCode === 404) {
      const j = JSON.parse(text) as { error?: string };
      if (j.error === "not_found") return { kind: "not_found", context };
    }
    return this.fail(res.statusCode, text);
  }

  /** Writes `value`; pass the context of the versions it replaces. Returns the new version's context. */
  async put(
    key: string | Uint8Array,
    value: string | Uint8Array,
    options: RequestOptions & { context?: string | undefined; contentType?: string } = {},
  ): Promise<string> {
    const headers: Record<string, string> = {
      "content-type": options.contentType ?? "application/octet-stream",
    };
    if (options.context !== undefined) headers["x-context"] = options.context;
    const res = await this.pool.request({
      method: "PUT",
      path: `/kv/${encodeKey(key)}${query(options)}`,
      headers,
      body: typeof value === "string" ? Buffer.from(value, "utf8") : value,
    });
    const text = await res.body.text();
    if (res.statusCode === 200 || res.statusCode === 204) return res.headers["x-context"] as string;
    return this.fail(res.statusCode, text);
  }

  async delete(
    key: string | Uint8Array,
    options: RequestOptions & { context?: string | undefined } = {},
  ): Promise<string> {
    const headers: Record<string, string> = {};
    if (options.context !== undefined) headers["x-context"] = options.context;
    const res = await this.pool.request({
      method: "DELETE",
      path: `/kv/${encodeKey(key)}${query(options)}`,
      headers,
    });
    const text = await res.body.text();
    if (res.statusCode === 200 || res.statusCode === 204) return res.headers["x-context"] as string;
    return this.fail(res.statusCode, text);
  }

  async status(): Promise<Record<string, unknown>> {
    const res = await this.pool.request({ method: "GET", path: "/status" });
    const text = await res.body.text();
    if (res.statusCode !== 200) return this.fail(res.statusCode, text);
    return JSON.parse(text) as Record<string, unknown>;
  }

  close(): Promise<void> {
    return this.pool.close();
  }
}

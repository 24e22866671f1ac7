/**
 * The API's error vocabulary: the `error` codes of its JSON error bodies
 * (`{"error": code, "message": text, ...details}`), and the error a request's parser or handler throws
 * to answer with one of them.
 */

/** Every `error` code the API answers with. */
export type ErrorCode =
  | "bad_key"
  | "bad_context"
  | "bad_cursor"
  | "bad_parameter"
  | "value_too_large"
  | "not_found"
  | "too_many_siblings"
  | "unavailable"
  | "overloaded"
  | "anti_entropy_off"
  | "method_not_allowed"
  | "bad_request"
  | "unauthorized"
  | "forbidden"
  | "leave_refused"
  | "remove_refused"
  | "plan_refused"
  | "weight_refused"
  | "compaction_running"
  | "internal";

/** Thrown while a request is handled: answered with `status` and the error body; nothing else is done. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: ErrorCode,
    message: string,
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
  }
}

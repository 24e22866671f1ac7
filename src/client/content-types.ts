/** The content types the client (and the CLI) store values with when none is given. */

/** A string value: `client.put(key, "text")`, `client.string`, `ringstore put KEY VALUE`. */
export const STRING_CONTENT_TYPE = "text/plain; charset=utf-8";
/** Bytes: `client.put(key, uint8array)`, `ringstore put KEY --file F` (also the API's default). */
export const BYTES_CONTENT_TYPE = "application/octet-stream";
/** A JSON value: `client.json`. */
export const JSON_CONTENT_TYPE = "application/json";

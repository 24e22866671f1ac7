#!/usr/bin/env node
/**
 * The `ringstore` executable. It checks, before anything else is loaded, that this Node.js has what the
 * code needs, so that an older one gets a sentence instead of a module-linking error: every checksum
 * uses zlib.crc32 (Node.js 20.15, or 22.2 on the 22 line). A static import of a missing export would
 * fail before any of this file ran; a namespace import does not, and the program is imported after.
 */
import * as zlib from "node:zlib";

if (typeof (zlib as { crc32?: unknown }).crc32 !== "function") {
  process.stderr.write(
    `ringstore: this Node.js (${process.version}) is too old: ringstore needs 20.15 or later (22.2 or later on the 22 line), for zlib.crc32\n`,
  );
  process.exit(1);
}
await import("./program.js");

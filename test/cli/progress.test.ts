/** The progress display: redrawn in place on a terminal (a bar when the total is known), plain lines elsewhere. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { bar, Progress } from "../../src/cli/progress.js";

/** A stream that keeps what is written to it. */
function sink(): NodeJS.WriteStream & { text: string } {
  const s = {
    text: "",
    columns: 200,
    write(chunk: string) {
      s.text += chunk;
      return true;
    },
  };
  return s as unknown as NodeJS.WriteStream & { text: string };
}

test("the bar of a fraction: 30 characters and a percentage, clamped to 0..100%", () => {
  assert.equal(bar(0), `[${"-".repeat(30)}]   0%`);
  assert.equal(bar(0.5), `[${"#".repeat(15)}${"-".repeat(15)}]  50%`);
  assert.equal(bar(2), `[${"#".repeat(30)}] 100%`);
});

test("on a terminal: one line redrawn in place at most every 100 ms, with rate and time left, then cleared", () => {
  let now = 0;
  const out = sink();
  const p = new Progress({ stream: out, tty: true, unit: "keys", now: () => now });
  p.update("handoff:", 0, 1000);
  now = 50;
  p.update("handoff:", 10, 1000); // too soon: not drawn
  now = 2000;
  p.update("handoff:", 500, 1000, "running");
  p.finish("done");
  const draws = out.text.split("\r").filter((x) => x.startsWith("handoff:"));
  assert.equal(draws.length, 2);
  assert.ok(draws[1]!.endsWith("\x1b[K"), JSON.stringify(draws[1]));
  assert.match(
    draws[1]!.slice(0, -3),
    /^handoff: \[#{15}-{15}\] {2}50% 500\/1,000 keys, 250 keys\/s, 2s left, running$/,
  );
  assert.ok(out.text.endsWith("\r\x1b[Kdone\n"), JSON.stringify(out.text));
});

test("a total below what is done (counted a while ago) shows 100%, never more", () => {
  const out = sink();
  const p = new Progress({ stream: out, tty: true, unit: "keys", now: () => 0 });
  p.update("x", 120, 100);
  assert.match(out.text, /\[#{30}\] 100% 120\/120 keys/);
});

test("elsewhere: plain lines, one when the figures change, at most one per second", () => {
  let now = 0;
  const out = sink();
  const p = new Progress({ stream: out, tty: false, unit: "keys", now: () => now });
  p.update("listing:", 5, null);
  now = 500;
  p.update("listing:", 9, null); // within the second: not written
  now = 1500;
  p.update("listing:", 9, 40);
  now = 3000;
  p.update("listing:", 9, 40); // the same line: not written again
  p.finish("9 keys");
  assert.equal(out.text, "listing: 5 keys\nlisting: 9 of ~40 keys\n9 keys\n");
});

test("a line written above the bar (a log line) stays whole, and the bar is drawn again below it", () => {
  let now = 0;
  const out = sink();
  const p = new Progress({ stream: out, tty: true, unit: "keys", now: () => now });
  p.above('{"msg":"before"}\n'); // nothing drawn yet: the line as it is
  p.update("join:", 10, 100);
  p.above('{"msg":"a log line"}\n');
  now = 1000;
  p.update("join:", 20, 100);
  p.finish("done");
  // ESC and CR shown as "^[" and "^M" (a regular expression may not hold control characters).
  const lines = out.text.replaceAll("\x1b", "^[").replaceAll("\r", "^M").split("\n");
  assert.equal(lines[0], '{"msg":"before"}');
  // The bar is erased before the log line and drawn again after it.
  assert.match(lines[1]!, /^\^Mjoin: .*10\/100 keys\^\[\[K\^M\^\[\[K\{"msg":"a log line"\}$/);
  assert.match(lines[2]!, /^\^Mjoin: .*10\/100 keys\^\[\[K\^Mjoin: .*20\/100 keys.*\^\[\[K\^M\^\[\[Kdone$/);
  // Plain output (not a terminal): the line alone.
  const plain = sink();
  const q = new Progress({ stream: plain, tty: false, unit: "keys", now: () => 0 });
  q.update("join:", 1, 2);
  q.above("line\n");
  assert.equal(plain.text, "join: 1 of ~2 keys\nline\n");
});

/**
 * Progress of a long operation on the command line: on a terminal, one line redrawn in place (a bar when
 * the total is known, the count and rate otherwise), at most every 100 ms; elsewhere (a pipe, a file, a
 * log), plain lines, one when the figures change and at most one every `plainEveryMs`, so a log is not
 * flooded. `finish` ends the redrawn line so that what follows starts on a line of its own.
 */

export interface ProgressOptions {
  /** Where it is drawn (default process.stderr). */
  readonly stream?: NodeJS.WriteStream;
  /** Draw in place (default: whether the stream is a terminal). */
  readonly tty?: boolean;
  /** The unit counted ("keys"). */
  readonly unit: string;
  /** Plain output: the shortest time between two lines (default 1000 ms). */
  readonly plainEveryMs?: number;
  /** The clock (default Date.now). */
  readonly now?: () => number;
}

const BAR_WIDTH = 30;

/** A whole number with thousands separators. */
const num = (n: number) => Math.round(n).toLocaleString("en-US");

/** The bar of a fraction 0..1, BAR_WIDTH characters wide. */
export function bar(fraction: number): string {
  const f = Math.min(1, Math.max(0, fraction));
  const full = Math.round(f * BAR_WIDTH);
  return `[${"#".repeat(full)}${"-".repeat(BAR_WIDTH - full)}] ${Math.floor(f * 100)
    .toString()
    .padStart(3)}%`;
}

/** "1m05s" */
function eta(s: number): string {
  if (!Number.isFinite(s) || s < 0) return "?";
  const t = Math.round(s);
  return t < 60 ? `${t}s` : `${Math.floor(t / 60)}m${String(t % 60).padStart(2, "0")}s`;
}

export class Progress {
  private readonly stream: NodeJS.WriteStream;
  readonly tty: boolean;
  private readonly unit: string;
  private readonly plainEveryMs: number;
  private readonly now: () => number;
  private lastDrawAt = -Infinity;
  private lastPlain = "";
  private drawn = false;
  /** What is drawn in place now (to draw again below a line written above it). */
  private drawnText = "";
  /** The first sample of the current run of figures, for the rate. */
  private start: { at: number; done: number } | undefined;

  constructor(o: ProgressOptions) {
    this.stream = o.stream ?? process.stderr;
    this.tty = o.tty ?? this.stream.isTTY === true;
    this.unit = o.unit;
    this.plainEveryMs = o.plainEveryMs ?? 1000;
    this.now = o.now ?? Date.now;
  }

  /**
   * The figures of the moment: `done` of `total` (null: unknown), with `label` before them and `note`
   * after (a state, failures).
   */
  update(label: string, done: number, totalIn: number | null, note = ""): void {
    const at = this.now();
    // A total counted a while ago (a census) may be below what is done by now: never past 100%.
    const total = totalIn !== null && done > totalIn ? done : totalIn;
    if (this.start === undefined || done < this.start.done) this.start = { at, done };
    const secs = (at - this.start.at) / 1000;
    const rate = secs >= 1 ? (done - this.start.done) / secs : null;
    const rateText = rate === null ? "" : `, ${num(rate)} ${this.unit}/s`;
    const tail = note === "" ? "" : `, ${note}`;
    if (this.tty) {
      if (at - this.lastDrawAt < 100) return;
      this.lastDrawAt = at;
      const known = total !== null && total > 0;
      const left = known && rate !== null && rate > 0 ? `, ${eta((total - done) / rate)} left` : "";
      const figures = known
        ? `${bar(done / total)} ${num(done)}/${num(total)} ${this.unit}${rateText}${left}`
        : `${num(done)} ${this.unit}${rateText}`;
      const line = `${label} ${figures}${tail}`;
      const width = this.stream.columns || 120;
      this.drawnText = `\r${line.slice(0, Math.max(20, width - 1))}\x1b[K`;
      this.stream.write(this.drawnText);
      this.drawn = true;
      return;
    }
    const line = `${label} ${num(done)}${total !== null ? ` of ~${num(total)}` : ""} ${this.unit}${tail}`;
    if (line === this.lastPlain || at - this.lastDrawAt < this.plainEveryMs) return;
    this.lastDrawAt = at;
    this.lastPlain = line;
    this.stream.write(`${line}\n`);
  }

  /**
   * Writes `text` (whole lines, ending with a newline) above the line drawn in place, which is drawn again
   * below it: another writer to the same terminal (a log) keeps its lines whole.
   */
  above(text: string): void {
    if (this.tty && this.drawn) this.stream.write(`\r\x1b[K${text}${this.drawnText}`);
    else this.stream.write(text);
  }

  /** Ends the line drawn in place (nothing to do for plain output), then writes `line` if given. */
  finish(line?: string): void {
    if (this.tty && this.drawn) this.stream.write("\r\x1b[K");
    this.drawn = false;
    if (line !== undefined) this.stream.write(`${line}\n`);
  }
}

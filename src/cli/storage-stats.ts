/** `ringstore storage stats --data DIR`: open a data directory and print its statistics. */
import { openStorage } from "../storage/index.js";
import { formatStats } from "./format.js";

export async function printStorageStats(dir: string): Promise<void> {
  const engine = await openStorage({ kind: "lsm", dir });
  try {
    let keys = 0;
    for await (const _ of engine.iterate()) keys++;
    process.stdout.write(
      `${dir}: ${keys.toLocaleString("en-US")} live keys\n${formatStats(engine.stats())}\n`,
    );
  } finally {
    await engine.close();
  }
}

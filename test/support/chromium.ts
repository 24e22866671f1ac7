/**
 * Debian's Chromium, driven by playwright-core, for the dashboard's browser test and the screenshot
 * script (`npm run screenshot`). Never a downloaded browser: `/usr/bin/chromium` (or $CHROMIUM_PATH),
 * which `.ci/run` installs when missing; where there is none, `findChromium` says so and the test skips.
 */
import { existsSync } from "node:fs";
import { type Browser, chromium } from "playwright-core";

/** The Chromium binary to use, or undefined when none is installed. */
export function findChromium(): string | undefined {
  for (const p of [process.env.CHROMIUM_PATH, "/usr/bin/chromium", "/usr/bin/chromium-browser"])
    if (p !== undefined && p !== "" && existsSync(p)) return p;
  return undefined;
}

/**
 * Launches it headless with the flags this machine needs: no sandbox (we run as root), and no
 * background networking, sync or component updates (the network is closed: each would be refused);
 * playwright gives it a new, empty profile folder and removes it on close.
 */
export async function launchChromium(
  executablePath: string,
): Promise<{ browser: Browser; close(): Promise<void> }> {
  const browser = await chromium.launch({
    executablePath,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  return {
    browser,
    close: () => browser.close(),
  };
}

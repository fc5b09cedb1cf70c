import { closeSync, openSync, writeSync } from "node:fs";

/** Polls `fn` every 20 ms until `ok` holds for its value; throws with the last value after `ms`. */
export async function until<T>(fn: () => Promise<T>, ok: (v: T) => boolean, ms = 5000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (ok(v)) return v;
    if (Date.now() > end) throw new Error(`condition not reached in ${ms} ms; last value ${JSON.stringify(v)}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Fills the filesystem holding `path` with one file until ENOSPC (bounded: meant for a small tmpfs). */
export function fillFilesystem(path: string): void {
  const fd = openSync(path, "w");
  const block = Buffer.alloc(64 * 1024);
  try {
    for (let i = 0; i < 10_000; i++) writeSync(fd, block);
    throw new Error("the tmpfs did not fill");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOSPC") throw err;
  } finally {
    closeSync(fd);
  }
}

import { appendFile, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";

import { afterAll, expect, test } from "vitest";

import { followFile, readSerialTail } from "./serial-console.js";

const dir = await mkdtemp(path.join(os.tmpdir(), "cvm-serial-"));
afterAll(() => rm(dir, { recursive: true, force: true }));

test("readSerialTail returns the last bytes, and nothing for a missing log", async () => {
  const log = path.join(dir, "serial.log");
  await writeFile(log, "0123456789abcdef");
  expect(await readSerialTail(log, 6)).toBe("abcdef");
  expect(await readSerialTail(log)).toBe("0123456789abcdef");
  expect(await readSerialTail(path.join(dir, "none.log"))).toBe("");
});

test("followFile delivers appended bytes once, from the given offset, and restarts after truncation", async () => {
  const log = path.join(dir, "follow.log");
  await writeFile(log, "old\n");
  const chunks: string[] = [];
  const f = followFile(log, { fromOffset: 4, intervalMs: 10, onData: (b) => chunks.push(b.toString()) });
  try {
    await appendFile(log, "new-1\n");
    for (let i = 0; i < 100 && chunks.join("") !== "new-1\n"; i++) await new Promise((r) => setTimeout(r, 10));
    expect(chunks.join("")).toBe("new-1\n");
    await writeFile(log, "x\n");
    for (let i = 0; i < 100 && !chunks.join("").endsWith("x\n"); i++) await new Promise((r) => setTimeout(r, 10));
    expect(chunks.join("")).toBe("new-1\nx\n");
    expect(f.offset).toBe(2);
  } finally {
    f.stop();
  }
});

import { appendFile, mkdtemp, rename, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";

import { afterAll, expect, test } from "vitest";

import { followFile, READ_CHUNK_BYTES, readSerialTail } from "./serial-console.js";

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

test("readSerialTail continues into the rotated log and reads a large tail in chunks", async () => {
  const log = path.join(dir, "rot.log");
  await writeFile(`${log}.1`, "older-");
  await writeFile(log, "newer");
  expect(await readSerialTail(log, 8)).toBe("er-newer");
  expect(await readSerialTail(log)).toBe("older-newer");
  const big = Buffer.alloc(300 * 1024, 0x61);
  big.write("END", big.length - 3);
  await writeFile(log, big);
  const tail = await readSerialTail(log, 200 * 1024);
  expect(tail.length).toBe(200 * 1024);
  expect(tail.endsWith("aEND")).toBe(true);
});

test("followFile follows a rotation: the old file to its end, then the new one from its start, in bounded chunks", async () => {
  const log = path.join(dir, "follow-rot.log");
  await writeFile(log, "");
  const chunks: Buffer[] = [];
  const f = followFile(log, { intervalMs: 10, onData: (b) => chunks.push(b) });
  const text = () => Buffer.concat(chunks).toString();
  try {
    await appendFile(log, "a1\n");
    for (let i = 0; i < 100 && text() !== "a1\n"; i++) await new Promise((r) => setTimeout(r, 10));
    // Bytes appended just before the rename still arrive, then the new file's.
    await appendFile(log, "a2\n");
    await rename(log, `${log}.1`);
    await writeFile(log, "b1\n");
    for (let i = 0; i < 100 && !text().endsWith("b1\n"); i++) await new Promise((r) => setTimeout(r, 10));
    expect(text()).toBe("a1\na2\nb1\n");
    await appendFile(log, Buffer.alloc(200 * 1024, 0x62));
    for (let i = 0; i < 200 && text().length < 9 + 200 * 1024; i++) await new Promise((r) => setTimeout(r, 10));
    expect(text().length).toBe(9 + 200 * 1024);
    expect(Math.max(...chunks.map((c) => c.length))).toBeLessThanOrEqual(READ_CHUNK_BYTES);
  } finally {
    f.stop();
  }
});

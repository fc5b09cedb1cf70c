import { appendFile, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";

import { afterAll, expect, test } from "vitest";

import { BootPhaseParser, parseBootPhases, watchBootPhases } from "./boot-phases.js";

const LOG = [
  "SeaBIOS (version 1.16.2-debian-1.16.2-1)",
  "[    0.000000] Linux version 6.1.0-56-amd64 (debian-kernel@lists.debian.org)",
  "[    0.812345] Trying to unpack rootfs image as initramfs...",
  "[    1.500000] Run /init as init process",
  "CVM-BOOT: network",
  "[    3.250000] EXT4-fs (vda): mounted filesystem with ordered data mode.",
  "\x1b[0;32m  OK  \x1b[0m] Reached target \x1b[0;1;39mMulti-User System\x1b[0m.",
  "Linux version again should not count twice",
].join("\r\n");

test("first hit per phase, in order, with the printk time of or before the line", () => {
  const hits = parseBootPhases(LOG);
  expect(hits.map((h) => h.phase)).toEqual(["firmware", "kernel", "initramfs", "network", "rootfs", "multi-user"]);
  expect(hits.find((h) => h.phase === "kernel")?.kernelTime).toBe(0);
  expect(hits.find((h) => h.phase === "initramfs")?.kernelTime).toBe(0.812345);
  expect(hits.find((h) => h.phase === "network")?.kernelTime).toBe(1.5);
  expect(hits.find((h) => h.phase === "multi-user")?.line).toBe("OK  ] Reached target Multi-User System.");
  expect(hits.find((h) => h.phase === "firmware")?.kernelTime).toBeUndefined();
});

test("incremental parser handles lines split across chunks", () => {
  const p = new BootPhaseParser();
  expect(p.feed("[    0.000000] Linux ver")).toEqual([]);
  expect(p.feed("sion 6.1.0\nCVM-BOOT: ag").map((h) => h.phase)).toEqual(["kernel"]);
  expect(p.feed("ent\n").map((h) => h.phase)).toEqual(["agent"]);
});

const dir = await mkdtemp(path.join(os.tmpdir(), "cvm-boot-"));
afterAll(() => rm(dir, { recursive: true, force: true }));

test("watcher follows a growing log from an offset and stamps phases", async () => {
  const log = path.join(dir, "serial.log");
  await writeFile(log, "CVM-BOOT: old-boot\n");
  const w = watchBootPhases(log, { fromOffset: 19, intervalMs: 20 });
  try {
    const pending = w.waitFor("ready", 5_000);
    await appendFile(log, "[    0.000000] Linux version 6.1\n");
    await new Promise((r) => setTimeout(r, 60));
    await appendFile(log, "CVM-BOOT: ready\n");
    const hit = await pending;
    expect(hit.atMs).toBeGreaterThanOrEqual(0);
    expect(w.phases().map((h) => h.phase)).toEqual(["kernel", "ready"]);
    await expect(w.waitFor("never", 50)).rejects.toThrow(/never not seen/);
  } finally {
    w.stop();
  }
});

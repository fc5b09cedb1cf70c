import { spawn } from "node:child_process";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";

import { afterAll, afterEach, expect, test } from "vitest";

import { MIN_SERIAL_LOG_BYTES, SerialCapture, type SerialFlood } from "./serial-capture.js";

// The serial chardev is played by a real Unix socket server here, the way QEMU serves it; the QEMU flood itself is
// test/hostile/serial-flood.sys.test.ts.
const dir = await mkdtemp(path.join(os.tmpdir(), "cvm-serialcap-"));
afterAll(() => rm(dir, { recursive: true, force: true }));

let n = 0;
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});

/** A serial chardev server; resolves with the one connection cvmd makes to it. */
async function chardev(): Promise<{ sock: string; conn: Promise<net.Socket> }> {
  const sock = path.join(dir, `serial-${++n}.sock`);
  const server = net.createServer();
  const conn = new Promise<net.Socket>((r) => server.once("connection", r));
  await new Promise<void>((r) => server.listen(sock, () => r()));
  cleanups.push(async () => {
    server.close();
    (await Promise.race([conn, Promise.resolve(null)]))?.destroy();
  });
  return { sock, conn };
}

async function capture(opts: { maxBytes?: number; bytesPerSec?: number; onFlood?: (f: SerialFlood) => void } = {}) {
  const { sock, conn } = await chardev();
  const logPath = path.join(dir, `serial-${n}.log`);
  const consoleSocket = path.join(dir, `console-${n}.sock`);
  const cap = await SerialCapture.start({ serialSocket: sock, consoleSocket, logPath, ...opts });
  cleanups.push(() => cap.close());
  return { cap, guest: await conn, logPath, consoleSocket };
}

/** Writes `total` bytes as the guest would, honouring backpressure; the last byte of each KiB is a newline. */
async function flood(guest: net.Socket, total: number, pattern = (i: number) => `line ${String(i).padStart(6, "0")} `): Promise<Buffer> {
  const parts: Buffer[] = [];
  let sent = 0;
  for (let i = 0; sent < total; i++) {
    const b = Buffer.from(pattern(i).padEnd(1023, "x") + "\n").subarray(0, Math.min(1024, total - sent));
    parts.push(b);
    sent += b.length;
    if (!guest.write(b)) await new Promise((r) => guest.once("drain", r));
  }
  return Buffer.concat(parts);
}

async function until(ok: () => Promise<boolean> | boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await ok())) {
    if (Date.now() > end) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 20));
  }
}

const sizeOf = (f: string) => stat(f).then((s) => s.size, () => 0);

test("a flood of 10x the cap leaves the log and its rotated predecessor within the cap, holding the newest bytes", async () => {
  const cap = MIN_SERIAL_LOG_BYTES;
  const { guest, logPath } = await capture({ maxBytes: cap, bytesPerSec: 100 * 1024 * 1024 });
  const sent = await flood(guest, 10 * cap);
  // Polled while rotation runs: between the rename and the new file's creation the log does not exist.
  await until(async () => (await readFile(logPath).catch(() => Buffer.alloc(0))).subarray(-1024).equals(sent.subarray(-1024)));
  const cur = await readFile(logPath);
  const old = await readFile(`${logPath}.1`);
  expect(cur.length + old.length).toBeLessThanOrEqual(cap);
  // Rotation happens exactly at half the cap, so the pair is the last `cap` bytes of the stream, in order.
  expect(Buffer.concat([old, cur]).equals(sent.subarray(sent.length - old.length - cur.length))).toBe(true);
  expect(old.length).toBe(cap / 2);
  expect((await stat(logPath)).mode & 0o777).toBe(0o600);
  expect((await stat(`${logPath}.1`)).mode & 0o777).toBe(0o600);
});

test("a guest over its byte budget is read at the budget's pace and reported once per episode", async () => {
  const floods: SerialFlood[] = [];
  const budget = 64 * 1024;
  const { guest, logPath } = await capture({ maxBytes: 4 * 1024 * 1024, bytesPerSec: budget, onFlood: (f) => floods.push(f) });
  const t0 = Date.now();
  const sent = flood(guest, 4 * budget);
  await until(async () => (await sizeOf(logPath)) >= 4 * budget, 15_000);
  const elapsed = Date.now() - t0;
  await sent;
  // 4 budgets need at least 3 full pauses; the first second's budget is spent at once.
  expect(elapsed).toBeGreaterThanOrEqual(2_500);
  expect(floods).toHaveLength(1);
  expect(floods[0]!.bytesPerSec).toBe(budget);

  // A quiet second ends the episode; the next burst is a new one.
  await new Promise((r) => setTimeout(r, 2_200));
  guest.write(Buffer.alloc(10, 0x41));
  await new Promise((r) => setTimeout(r, 1_100));
  await flood(guest, 2 * budget);
  await until(async () => (await sizeOf(logPath)) >= 6 * budget + 10, 15_000);
  expect(floods).toHaveLength(2);
}, 30_000);

test("the console socket relays one client both ways while the log keeps recording; a second client is turned away", async () => {
  const { guest, logPath, consoleSocket } = await capture();
  const c1 = net.createConnection(consoleSocket);
  await new Promise((r) => c1.once("connect", r));
  let seen = "";
  c1.on("data", (d) => (seen += d.toString()));
  const typed = new Promise<string>((r) => guest.once("data", (d) => r(d.toString())));
  c1.write("ls\r");
  expect(await typed).toBe("ls\r");
  guest.write("hello operator\r\n");
  await until(() => seen.includes("hello operator"));
  await until(async () => (await readFile(logPath, "utf8")).includes("hello operator"));

  const c2 = net.createConnection(consoleSocket);
  let refused = "";
  c2.on("data", (d) => (refused += d.toString()));
  await new Promise((r) => c2.once("close", r));
  expect(refused).toMatch(/another client holds this console/);
  c1.destroy();
  expect((await stat(consoleSocket)).isSocket()).toBe(true);
});

test("a writer sending one byte per write (as QEMU's 16550 does) is not slowed by the capture", async () => {
  // socat -b1 stands in for QEMU here: a separate process, a Unix socket server, one write(2) per byte. Each such
  // write is its own buffer in the kernel, so a reader that paused between batches would cap it at a few KiB/s.
  const total = 200 * 1024;
  const src = path.join(dir, "bytes.txt");
  await writeFile(src, Buffer.alloc(total, 0x78));
  const sock = path.join(dir, `socat-${++n}.sock`);
  const socat = spawn("socat", ["-b1", "-u", `OPEN:${src}`, `UNIX-LISTEN:${sock}`], { stdio: "ignore" });
  cleanups.push(async () => void socat.kill("SIGKILL"));
  await until(async () => (await stat(sock).then((st) => st.isSocket(), () => false)), 5_000);
  const logPath = path.join(dir, `socat-${n}.log`);
  const t0 = Date.now();
  const cap = await SerialCapture.start({ serialSocket: sock, consoleSocket: path.join(dir, `console-${n}.sock`), logPath });
  cleanups.push(() => cap.close());
  await until(async () => (await sizeOf(logPath)) === total, 20_000);
  expect(Date.now() - t0).toBeLessThan(8_000);
});

test("a cap below the minimum is refused", async () => {
  const { sock } = await chardev();
  await expect(
    SerialCapture.start({ serialSocket: sock, consoleSocket: path.join(dir, "c-x.sock"), logPath: path.join(dir, "x.log"), maxBytes: 1000 }),
  ).rejects.toThrow(/must be an integer >= 65536/);
});

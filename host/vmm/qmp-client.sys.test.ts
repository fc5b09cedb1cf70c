import { spawn, type ChildProcess } from "node:child_process";
import { access, mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";

import { afterAll, beforeAll, describe, expect, test } from "vitest";

import { QmpClient, QmpError, type QmpEvent } from "./qmp-client.js";
import { prerequisites } from "../../test/support/prerequisites.js";

const why = prerequisites("QMP tests", { tools: [["qemu-system-x86_64", ["--version"]]] });

describe.skipIf(why !== null)("QmpClient against a real QEMU", () => {
  let dir: string;
  let sock: string;
  let child: ChildProcess;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "qmp-"));
    sock = path.join(dir, "qmp.sock");
    // An empty machine is enough to talk QMP and costs no CPU.
    child = spawn("qemu-system-x86_64", ["-machine", "none", "-nodefaults", "-display", "none", "-S",
      "-chardev", `socket,id=q,path=${sock},server=on,wait=off`, "-mon", "chardev=q,mode=control"], { stdio: "ignore" });
    for (let i = 0; i < 100; i++) {
      if (await access(sock).then(() => true, () => false)) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error("QMP socket did not appear");
  });
  afterAll(async () => {
    child?.kill("SIGKILL");
    await rm(dir, { recursive: true, force: true });
  });

  test("greeting, capabilities, commands, errors, events, quit", async () => {
    const q = await QmpClient.connect(sock, { timeoutMs: 5_000 });
    expect(q.greeting).toHaveProperty("version.qemu.major");
    expect(await q.execute("query-status")).toMatchObject({ status: "prelaunch", running: false });

    const err = await q.execute("no-such-command").then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(QmpError);
    expect((err as QmpError).errorClass).toBe("CommandNotFound");

    // Answers are matched by id, so concurrent commands do not get each other's results.
    const [a, b] = await Promise.all([q.execute<{ status: string }>("query-status"), q.execute<{ qemu: { major: number } }>("query-version")]);
    expect(a.status).toBe("prelaunch");
    expect(b.qemu.major).toBeGreaterThanOrEqual(7);

    const events: QmpEvent[] = [];
    q.on("event", (e) => events.push(e));
    await q.execute("cont");
    await q.execute("stop");
    for (let i = 0; i < 50 && !events.some((e) => e.event === "STOP"); i++) await new Promise((r) => setTimeout(r, 20));
    expect(events.map((e) => e.event)).toEqual(expect.arrayContaining(["RESUME", "STOP"]));
    expect(events[0].timestamp?.seconds).toBeGreaterThan(0);

    const closed = new Promise<void>((r) => q.once("close", () => r()));
    const exited = new Promise<number | null>((r) => child.once("exit", (c) => r(c)));
    await q.execute("quit");
    await closed;
    expect(await exited).toBe(0);
    await expect(q.execute("query-status")).rejects.toThrow(/closed/);
  });

  test("connect fails fast on a missing socket", async () => {
    await expect(QmpClient.connect(path.join(dir, "nope.sock"), { timeoutMs: 1_000 })).rejects.toThrow(/ENOENT/);
  });
});

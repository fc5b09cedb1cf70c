import { EventEmitter } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { afterEach, describe, expect, test } from "vitest";
import type { AdoptResult, GuestExit, Hypervisor, LaunchRecord } from "../../vmm/hypervisor.js";
import type { InstanceSpec } from "../driver.js";
import { QemuDriver, type QemuDriverOptions } from "./qemu-driver.js";

/**
 * TEST DOUBLE of the hypervisor: every guest is running (adoption succeeds), and the test says when
 * one exits. stop() reports the exit it causes, as QEMU's SHUTDOWN event after `quit` does.
 */
class ExitingHypervisor extends EventEmitter<{ exit: [GuestExit] }> {
  adopt = async (id: string): Promise<AdoptResult> => ({ adopted: true, instanceId: id, pid: 4242, status: "running", record: this.record(id) });
  inspect = async (id: string) => ({ instanceId: id, state: "stopped" as const });
  stop = async (id: string) => {
    this.exit(id, "stopped", "host-qmp-quit");
    return { stoppedBy: "quit" as const, elapsedMs: 0 };
  };
  purge = async () => undefined;

  exit(instanceId: string, kind: GuestExit["kind"], detail: string): void {
    this.emit("exit", { instanceId, kind, detail });
  }

  private record(id: string): LaunchRecord {
    return { version: 1, instanceId: id, profile: "plain", accel: "tcg", cid: 9, tap: "tap0", mac: "52:54:00:00:00:02", netns: null, argv: [], recordedAt: new Date().toISOString(), serialOffset: 0 };
  }
}

const RUNTIME = { tap: "tap0", mac: "52:54:00:00:00:02", ip: "10.0.0.2", netns: "ns", cid: 9, ssh: { host: "127.0.0.1", port: 1 }, imageId: "img" };
const spec = (id: string, runtime: Record<string, unknown>): InstanceSpec => ({ id, name: "abcdefgh", tenantSlug: "acme", hostname: "h", publicKey: "k", agent: "openclaw", inferenceModel: "m", egressLimitBytes: 1, runtime });

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});

async function driverWithExits() {
  const dir = await mkdtemp(join(tmpdir(), "cvm-exit-"));
  const hv = new ExitingHypervisor();
  const removed: string[] = [];
  const driver = new QemuDriver({
    dataDir: dir,
    profile: "plain",
    accel: "tcg",
    hypervisor: hv as unknown as Hypervisor,
    network: { detach: async () => undefined },
    firewall: { add: async () => undefined, remove: async (id: string) => void removed.push(id) },
    logger: pino({ level: "silent" }),
    // No agent answers: the bring-ups stay pending until the test ends them.
    timeouts: { bootMs: 60_000, setupAckMs: 60_000, setupMs: 60_000, sshMs: 60_000 },
  } as unknown as QemuDriverOptions);
  const ac = new AbortController();
  const ctx = { signal: ac.signal, event: () => undefined, saveRuntime: async () => undefined };
  const instanceExits: string[] = [];
  const poolExits: string[] = [];
  driver.onExit((id, reason) => instanceExits.push(`${id}: ${reason}`));
  driver.warm.onExit((id, reason) => poolExits.push(`${id}: ${reason}`));
  cleanups.push(async () => {
    ac.abort(new Error("test over"));
    await driver.close();
    await rm(dir, { recursive: true, force: true });
  });
  return { driver, hv, ctx, instanceExits, poolExits, removed };
}

describe("QemuDriver reports the hypervisor's exit events to whom the guest belongs", () => {
  test("an instance's guest to the engine, an unclaimed pool guest to the pool, a claimed one to its instance", async () => {
    const { driver, hv, ctx, instanceExits, poolExits, removed } = await driverWithExits();
    const adopted = await driver.adopt(spec("i1", RUNTIME), ctx);
    if (adopted.alive) adopted.ready.catch(() => undefined);
    for (const id of ["pool-1", "pool-2"]) {
      const res = await driver.warm!.adopt({ id, runtime: { ...RUNTIME, cid: id === "pool-1" ? 10 : 11 } }, ctx);
      if (res.alive) res.prepared.catch(() => undefined);
    }
    driver.warm!.claim(spec("i2", { ...RUNTIME, cid: 11 }), { id: "pool-2", runtime: { ...RUNTIME, cid: 11 } }, ctx).catch(() => undefined);
    // The guest is the instance's once the claim has swapped the pool guest's egress rules for the instance's.
    await expect.poll(() => removed).toContain("pool-2");

    hv.exit("i1", "poweroff", "guest-shutdown");
    hv.exit("pool-1", "crash", "guest-panic");
    hv.exit("pool-2", "killed", "QEMU ended without a SHUTDOWN event");
    hv.exit("not-held", "poweroff", "guest-shutdown");

    expect(instanceExits).toEqual(["i1: guest exited (poweroff: guest-shutdown)", "i2: guest exited (killed: QEMU ended without a SHUTDOWN event)"]);
    expect(poolExits).toEqual(["pool-1: guest exited (crash: guest-panic)"]);
  });

  test("the exit of a guest being destroyed, or of one released, is not reported", async () => {
    const { driver, hv, ctx, instanceExits } = await driverWithExits();
    const adopted = await driver.adopt(spec("i1", RUNTIME), ctx);
    if (adopted.alive) adopted.ready.catch(() => undefined);
    await driver.destroy(spec("i1", RUNTIME));
    hv.exit("i1", "poweroff", "guest-shutdown");
    expect(instanceExits).toEqual([]);
  });
});

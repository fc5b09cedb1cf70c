import { EventEmitter } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { afterEach, describe, expect, test } from "vitest";
import type { ImageCatalog } from "../../images/image-catalog.js";
import type { AdoptResult, GuestExit, Hypervisor, LaunchedVm, LaunchRecord, LaunchSpec } from "../../vmm/hypervisor.js";
import type { InstanceSpec } from "../driver.js";
import { QemuDriver, type QemuDriverOptions } from "./qemu-driver.js";

/**
 * TEST DOUBLE of the hypervisor: every guest launches and is running (adoption succeeds), and the
 * test says when one exits. stop() reports the exit it causes, as QEMU's SHUTDOWN event after `quit` does.
 */
class ExitingHypervisor extends EventEmitter<{ exit: [GuestExit] }> {
  readonly adopted: string[] = [];
  launch = async (spec: LaunchSpec): Promise<LaunchedVm> => ({ instanceId: spec.instanceId, pid: 4242, runDir: "/nonexistent", record: this.record(spec.instanceId), startMs: 1 });
  adopt = async (id: string): Promise<AdoptResult> => {
    this.adopted.push(id);
    return { adopted: true, instanceId: id, pid: 4242, status: "running", record: this.record(id) };
  };
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
const spec = (id: string, runtime: Record<string, unknown> | null): InstanceSpec => ({ id, name: "abcdefgh", tenantSlug: "acme", hostname: "h", publicKey: "k", agent: "openclaw", inferenceModel: "m", egressLimitBytes: 1, runtime });

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});

async function driverWithExits() {
  const dir = await mkdtemp(join(tmpdir(), "cvm-exit-"));
  const hv = new ExitingHypervisor();
  const removed: string[] = [];
  const capped: Array<{ id: string; limitBytes: number }> = [];
  let taps = 0;
  const driver = new QemuDriver({
    dataDir: dir,
    profile: "plain",
    accel: "tcg",
    hypervisor: hv as unknown as Hypervisor,
    images: { current: async () => ({ id: "img", guest: { kernel: "/k", initrd: "/i", cmdline: "x", disks: [] } }) } as unknown as ImageCatalog,
    network: {
      attach: async () => ({ tap: `tap${++taps}`, mac: "52:54:00:00:00:02", ip: "10.0.0.2", netns: "ns", ssh: { host: "127.0.0.1", port: 1 } }),
      detach: async () => undefined,
    },
    firewall: { add: async (r: { id: string; limitBytes: number }) => void capped.push({ id: r.id, limitBytes: r.limitBytes }), remove: async (id: string) => void removed.push(id) },
    memoryMiB: 512,
    vcpus: 1,
    logger: pino({ level: "silent" }),
    // No agent answers: the bring-ups stay pending until the test ends them.
    timeouts: { bootMs: 60_000, setupAckMs: 60_000, setupMs: 60_000, sshMs: 60_000 },
  } as unknown as QemuDriverOptions);
  const ac = new AbortController();
  const saved: Array<Record<string, unknown>> = [];
  const ctx = { signal: ac.signal, event: () => undefined, saveRuntime: async (r: Record<string, unknown>) => void saved.push(r) };
  const instanceExits: string[] = [];
  const poolExits: string[] = [];
  driver.onExit((id, reason) => instanceExits.push(`${id}: ${reason}`));
  driver.warm.onExit((id, reason) => poolExits.push(`${id}: ${reason}`));
  cleanups.push(async () => {
    ac.abort(new Error("test over"));
    await driver.close();
    await rm(dir, { recursive: true, force: true });
  });
  return { driver, hv, ctx, instanceExits, poolExits, removed, capped, saved };
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

describe("the runtime QemuDriver saves names its guest; the engine only copies it", () => {
  test("a cold start and a pool boot record their guest's id; the pool guest is capped at the limit it is given", async () => {
    const { driver, ctx, capped, saved } = await driverWithExits();
    driver.create(spec("i1", null), ctx).catch(() => undefined);
    driver.warm!.boot({ id: "pool-1", runtime: null, egressLimitBytes: 123456789 }, ctx).catch(() => undefined);
    await expect.poll(() => saved.map((r) => r.guestId)).toEqual(["i1", "pool-1"]);
    expect(capped).toEqual([
      { id: "i1", limitBytes: 1 },
      { id: "pool-1", limitBytes: 123456789 },
    ]);
  });

  test("rows written before guestId was always recorded are still adopted; a pool guest's gets it then", async () => {
    const { driver, hv, ctx, saved } = await driverWithExits();
    for (const [id, runtime] of [
      ["i1", RUNTIME],
      ["i2", { ...RUNTIME, cid: 10, guestId: "pool-9" }],
    ] as const) {
      const res = await driver.adopt(spec(id, runtime), ctx);
      if (res.alive) res.ready.catch(() => undefined);
    }
    const pool = await driver.warm!.adopt({ id: "pool-1", runtime: { ...RUNTIME, cid: 11 } }, ctx);
    if (pool.alive) pool.prepared.catch(() => undefined);
    expect(hv.adopted).toEqual(["i1", "pool-9", "pool-1"]);
    expect(saved).toEqual([{ ...RUNTIME, cid: 11, guestId: "pool-1" }]);
  });
});

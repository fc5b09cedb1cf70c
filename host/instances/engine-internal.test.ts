import { afterEach, describe, expect, test } from "vitest";
import { FakeDriver } from "../../test/support/fake-driver.js";
import { startTestDaemon, tempDir, type TestDaemon } from "../../test/support/daemon.js";
import { sshKeyPair } from "../../test/support/ssh-keys.js";
import type { DriverContext, InstanceSpec, ReadyInfo } from "../drivers/driver.js";

const ED = sshKeyPair("ed25519").public;

/** A driver that breaks in a way no failure code foresees (a programming error). */
class ThrowingDriver extends FakeDriver {
  override async create(spec: InstanceSpec, ctx: DriverContext): Promise<ReadyInfo> {
    await ctx.saveRuntime({ fake: true });
    this.guests.set(spec.id, { spec, ready: false });
    throw new TypeError("Cannot read properties of undefined (reading 'cid')");
  }
}

let d: TestDaemon | undefined;
let dir: ReturnType<typeof tempDir> | undefined;
afterEach(async () => {
  await d?.close();
  dir?.remove();
  d = dir = undefined;
});

async function createAndSettle(daemon: TestDaemon, key: string) {
  const r = await daemon.fetch("/v1/instances", { key, method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ public_key: ED }) });
  expect(r.status).toBe(202);
  const name = r.body.data.name;
  for (let i = 0; i < 100; i++) {
    const g = await daemon.fetch(`/v1/instances/${name}`, { key });
    if (g.body.data.status !== "provisioning") {
      const events = (await daemon.fetch(`/v1/instances/${name}/events`, { key })).body.data.events as Array<{ type: string; message: string }>;
      return { record: g.body.data, events };
    }
    await new Promise((res) => setTimeout(res, 50));
  }
  throw new Error(`instance ${name} still provisioning`);
}

describe("an unexpected error while provisioning", () => {
  test("ends in `internal`, with the error named in an event", async () => {
    dir = tempDir();
    d = await startTestDaemon({ dataDir: dir.path, driver: new ThrowingDriver() });
    const t = await d.tenant("acme");
    const { record, events } = await createAndSettle(d, t.apiKey);
    expect(record.status).toBe("failed");
    expect(record.failure_code).toBe("internal");
    // The tenant-facing message stays generic; the event says what broke.
    expect(record.failure_message).toBe("An internal error stopped provisioning.");
    expect(events.find((e) => e.type === "error")?.message).toBe("internal: TypeError: Cannot read properties of undefined (reading 'cid')");
  });

  test("after the driver handed over a running guest (the database refused `ready`): `internal`, and the guest is torn down", async () => {
    dir = tempDir();
    const driver = new FakeDriver();
    d = await startTestDaemon({ dataDir: dir.path, driver });
    // A real SQLite error on the ready transition only, so recording the failure still works.
    await d.db.exec(`CREATE TRIGGER refuse_ready BEFORE UPDATE OF status ON instances WHEN NEW.status = 'ready' BEGIN SELECT RAISE(ABORT, 'database refuses ready (test trigger)'); END`);
    const t = await d.tenant("acme");
    const { record, events } = await createAndSettle(d, t.apiKey);
    expect(record.failure_code).toBe("internal");
    expect(events.find((e) => e.type === "error")?.message).toMatch(/^internal: Error.*database refuses ready \(test trigger\)/);
    for (let i = 0; i < 50 && driver.destroyed.length === 0; i++) await new Promise((res) => setTimeout(res, 20));
    expect(driver.destroyed).toHaveLength(1);
    expect(driver.guests.size).toBe(0);
  });
});

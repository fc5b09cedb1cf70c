import { afterAll, describe, expect, it } from "vitest";
import { EgressStore } from "../../host/store/egress.js";
import { FakeDriver } from "../support/fake-driver.js";
import { tempDir } from "../support/daemon.js";
import { cvmctl, startCvmd } from "../support/processes.js";
import { sshKeyPair } from "../support/ssh-keys.js";
import { jsonPost, startOpsDaemon, until } from "../ops/helpers.js";

const ED = sshKeyPair("ed25519").public;

/**
 * cvmd serves authentication and GET /v1/instances/{name} from memory. Each case warms that
 * cache with a few requests first, changes the rows behind it (another process, or another part
 * of cvmd), and expects the very next request to show the change. The caches keep entries for up
 * to 5 s without a signal, so a missed invalidation shows up here as the old answer.
 */
describe("read caches follow every writer", () => {
  const dirs: Array<{ remove(): void }> = [];
  afterAll(() => dirs.forEach((d) => d.remove()));
  const dir = () => {
    const d = tempDir();
    dirs.push(d);
    return d.path;
  };
  const warm = async (req: () => Promise<Response>, status: number) => {
    for (let i = 0; i < 5; i++) expect((await req()).status).toBe(status);
  };

  it("cvmctl (another process) revokes, rotates, suspends and resumes while cvmd runs: the next request sees it", async () => {
    const env = { CVM_DATA_DIR: dir(), CVM_DRIVER: "none" };
    const cvmd = await startCvmd(env);
    try {
      const { api_key: first } = JSON.parse((await cvmctl(["tenant", "create", "acme", "--json"], env)).stdout) as { api_key: string };
      const { api_key: second } = JSON.parse((await cvmctl(["key", "create", "acme", "--json"], env)).stdout) as { api_key: string };
      const created = await fetch(`${cvmd.url}/v1/instances`, jsonPost({ public_key: ED }, { Authorization: `Bearer ${first}` }));
      expect(created.status).toBe(202);
      const name = ((await created.json()) as { data: { name: string } }).data.name;
      const get = (key: string) => fetch(`${cvmd.url}/v1/instances/${name}`, { headers: { Authorization: `Bearer ${key}` } });

      await warm(() => get(first), 200);
      await warm(() => get(second), 200);
      expect((await cvmctl(["key", "revoke", first.split("_")[1]!], env)).code).toBe(0);
      const revoked = await get(first);
      expect(revoked.status).toBe(401);
      expect(((await revoked.json()) as { error: { code: string } }).error.code).toBe("unauthenticated");
      expect((await get(second)).status).toBe(200);

      expect((await cvmctl(["tenant", "suspend", "acme"], env)).code).toBe(0);
      const suspended = await get(second);
      expect(suspended.status).toBe(403);
      expect(((await suspended.json()) as { error: { code: string } }).error.code).toBe("forbidden");
      expect((await cvmctl(["tenant", "resume", "acme"], env)).code).toBe(0);
      expect((await get(second)).status).toBe(200);

      await warm(() => get(second), 200);
      const rot = await cvmctl(["key", "rotate", second.split("_")[1]!, "--grace", "0s", "--json"], env);
      expect(rot.code).toBe(0);
      const rotated = (JSON.parse(rot.stdout) as { api_key: string }).api_key;
      expect((await get(second)).status).toBe(401);
      expect((await get(rotated)).status).toBe(200);
    } finally {
      await cvmd.kill();
    }
  });

  it("a status change by the lifecycle engine and an egress sample show in the next GET", async () => {
    const driver = new FakeDriver();
    driver.readyAfterMs = 400;
    const dataDir = dir();
    const d = await startOpsDaemon({ dataDir, driver });
    try {
      const key = await d.tenant("acme");
      const name = (await d.fetch("/v1/instances", { key, ...jsonPost({ public_key: ED }) })).body.data.name as string;
      const get = () => d.fetch(`/v1/instances/${name}`, { key });
      const row = () => d.db.get<{ id: string; status: string }>("SELECT id, status FROM instances WHERE name = ?", [name]);

      // Warm while provisioning, then wait on the database (not the API) for the engine's move to ready.
      for (let i = 0; i < 5; i++) expect((await get()).body.data.status).toBe("provisioning");
      expect((await until(row, (r) => r?.status === "ready"))!.status).toBe("ready");
      const ready = (await get()).body.data;
      expect(ready.status).toBe("ready");
      expect(ready.ssh).not.toBeNull();

      // The egress monitor's write, as it stores a host sample.
      expect((await get()).body.data.egress).toBeNull();
      const id = (await row())!.id;
      const sample = { id, limitBytes: 5000, blocked: false, bytes: 1234, packets: 3, quotaUsedBytes: 1234, afterBlockBytes: 0, afterBlockPackets: 0, droppedBytes: 0, droppedPackets: 0 };
      await d.db.tx(() => new EgressStore(d.db).recordHostSample(sample, new Date()));
      expect((await get()).body.data.egress).toMatchObject({ bytes: 1234, blocked: false });
      await d.db.tx(() => new EgressStore(d.db).recordHostSample({ ...sample, bytes: 5000, quotaUsedBytes: 5000, blocked: true }, new Date()));
      expect((await get()).body.data.egress).toMatchObject({ bytes: 5000, blocked: true });

      // An operator delete through cvmctl (cvmd's control socket, so cvmd's engine writes it).
      for (let i = 0; i < 3; i++) expect((await get()).body.data.status).toBe("ready");
      const del = await cvmctl(["instance", "delete", "--tenant", "acme", name], { CVM_DATA_DIR: dataDir });
      expect(del.code).toBe(0);
      expect(["terminating", "terminated"]).toContain((await get()).body.data.status);
      expect((await get()).body.data.terminated_reason).toBe("deleted_via_api");
    } finally {
      await d.close();
    }
  });
});

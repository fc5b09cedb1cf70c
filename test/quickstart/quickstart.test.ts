import { execFile } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FakeDriver } from "../support/fake-driver.js";
import { startTestDaemon, tempDir, type TestDaemon } from "../support/daemon.js";
import { sshKeyPair } from "../support/ssh-keys.js";

const exec = promisify(execFile);
const SCRIPT = new URL("./quickstart.sh", import.meta.url).pathname;

describe("the contract's quickstart, verbatim with curl and jq, against the daemon and the test-double driver", () => {
  const dir = tempDir();
  let d: TestDaemon;
  let key: string;
  const home = join(dir.path, "home");

  beforeAll(async () => {
    d = await startTestDaemon({ dataDir: join(dir.path, "data"), driver: new FakeDriver() });
    key = (await d.tenant("acme")).apiKey;
    const kp = sshKeyPair("ed25519");
    mkdirSync(join(home, ".ssh"), { recursive: true, mode: 0o700 });
    writeFileSync(join(home, ".ssh", "id_ed25519"), kp.private, { mode: 0o600 });
    writeFileSync(join(home, ".ssh", "id_ed25519.pub"), kp.public + "\n");
  });
  afterAll(async () => {
    await d.close();
    dir.remove();
  });

  it("creates, reads, polls to ready and deletes", async () => {
    const { stdout } = await exec("bash", [SCRIPT], {
      env: { PATH: process.env.PATH, HOME: home, API_BASE: d.url, TENANT_SLUG: "acme", CA_API_KEY: key },
      timeout: 60_000,
    });
    expect(stdout).toContain('"subscription_cost_usd": "200.00"');
    expect(stdout).toMatch(/"status": "provisioning"/);
    expect(stdout).toMatch(/status=ready/);
    const name = /Instance is ready: ([a-z0-9]{8})\.acme\.cvm\.localhost/.exec(stdout)?.[1];
    expect(name).toBeDefined();
    expect(stdout).toContain('"terminated_reason": "deleted_via_api"');
    const after = await d.fetch(`/v1/instances/${name}`, { key });
    expect(after.body.data.status).toBe("terminated");
  });
});

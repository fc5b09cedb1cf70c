import { chmod, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, test } from "vitest";
import { RootFs } from "../system/root-fs.js";
import { SystemdServiceManager, type ServiceSpec } from "./service-manager.js";

let dir: string;
afterEach(() => rm(dir, { recursive: true, force: true }));

const spec: ServiceSpec = {
  name: "cvm-openclaw",
  description: "OpenClaw gateway (cvm)",
  exec: ["/opt/node/bin/node", "/opt/openclaw/node_modules/openclaw/openclaw.mjs", "gateway", "run", "--port", "18789"],
  user: { name: "azureuser", uid: 1000, gid: 1000, home: "/home/azureuser" },
  env: { HOME: "/home/azureuser", OPENCLAW_NO_AUTO_UPDATE: "1" },
  secretEnv: { OPENCLAW_GATEWAY_TOKEN: "s3cret" },
  workingDir: "/home/azureuser",
};

describe("SystemdServiceManager", () => {
  test("writes a runtime unit and a 0600 env file, then daemon-reload and start (systemctl is a recording test double)", async () => {
    dir = await mkdtemp(join(tmpdir(), "systemd-"));
    // systemd is not pid 1 on this machine; this script stands in for systemctl and records its argv.
    const fakeSystemctl = join(dir, "FakeSystemctl.sh");
    await writeFile(fakeSystemctl, `#!/bin/sh\necho "$@" >> ${join(dir, "calls")}\n`);
    await chmod(fakeSystemctl, 0o755);
    const root = new RootFs(join(dir, "root"));
    const m = new SystemdServiceManager(root, { unitDir: "/run/systemd/system", envDir: "/run/cvm/env", systemctl: fakeSystemctl });
    await m.start(spec);
    const unit = await readFile(join(dir, "root/run/systemd/system/cvm-openclaw.service"), "utf8");
    expect(unit).toContain("User=azureuser");
    expect(unit).toContain("ExecStart=/opt/node/bin/node /opt/openclaw/node_modules/openclaw/openclaw.mjs gateway run --port 18789");
    expect(unit).toContain("Restart=on-failure");
    expect(unit).toContain('Environment="OPENCLAW_NO_AUTO_UPDATE=1"');
    expect(unit).toContain("EnvironmentFile=/run/cvm/env/cvm-openclaw.env");
    expect(unit).not.toContain("s3cret");
    const envFile = join(dir, "root/run/cvm/env/cvm-openclaw.env");
    expect(await readFile(envFile, "utf8")).toBe("OPENCLAW_GATEWAY_TOKEN=s3cret\n");
    expect((await stat(envFile)).mode & 0o777).toBe(0o600);
    expect(await readFile(join(dir, "calls"), "utf8")).toBe("daemon-reload\nstart cvm-openclaw.service\n");
    expect(await m.isRunning("cvm-openclaw")).toBe(true);
  });

  test("refuses arguments systemd would reinterpret", () => {
    const m = new SystemdServiceManager(new RootFs("/tmp"), { unitDir: "/x", envDir: "/y", systemctl: "systemctl" });
    expect(() => m.renderUnit({ ...spec, exec: ["/bin/sh", "-c", "rm -rf $HOME"] })).toThrow(/unsupported character/);
    expect(() => m.renderUnit({ ...spec, env: { X: 'a"b' } })).toThrow(/unsafe/);
  });
});

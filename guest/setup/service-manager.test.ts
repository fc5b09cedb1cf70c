import { chmod, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, test } from "vitest";
import { RootFs } from "../system/root-fs.js";
import pino from "pino";
import { DirectServiceManager, SystemdServiceManager, type ServiceSpec } from "./service-manager.js";

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

/**
 * TEST DOUBLE of systemctl (systemd is not pid 1 on this machine): records its argv, keeps whether the
 * unit was started, answers is-active from that (exit 3, systemd's "inactive", until then), and fails
 * `start` when `start-fails` exists, so the tests can see a failure reach the caller.
 */
async function fakeSystemctl(dir: string): Promise<string> {
  const path = join(dir, "FakeSystemctl.sh");
  await writeFile(
    path,
    `#!/bin/sh
echo "$@" >> ${join(dir, "calls")}
case "$1" in
  start) if [ -e ${join(dir, "start-fails")} ]; then echo "Job for $2 failed because the control process exited with error code." >&2; exit 1; fi
         touch ${join(dir, "active")} ;;
  is-active) [ -e ${join(dir, "active")} ] || exit 3 ;;
esac
`,
  );
  await chmod(path, 0o755);
  return path;
}

describe("SystemdServiceManager", () => {
  test("writes a runtime unit and a 0600 env file, then daemon-reload and start; running only once started", async () => {
    dir = await mkdtemp(join(tmpdir(), "systemd-"));
    const root = new RootFs(join(dir, "root"));
    const m = new SystemdServiceManager(root, { unitDir: "/run/systemd/system", envDir: "/run/cvm/env", systemctl: await fakeSystemctl(dir) });
    expect(await m.isRunning("cvm-openclaw")).toBe(false);
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
    expect(await m.isRunning("cvm-openclaw")).toBe(true);
    expect(await readFile(join(dir, "calls"), "utf8")).toBe(
      "is-active --quiet cvm-openclaw.service\ndaemon-reload\nstart cvm-openclaw.service\nis-active --quiet cvm-openclaw.service\n",
    );
  });

  test("a start systemctl refuses rejects with systemctl's stderr, and the service is not running", async () => {
    dir = await mkdtemp(join(tmpdir(), "systemd-"));
    await writeFile(join(dir, "start-fails"), "");
    const m = new SystemdServiceManager(new RootFs(join(dir, "root")), { unitDir: "/run/systemd/system", envDir: "/run/cvm/env", systemctl: await fakeSystemctl(dir) });
    await expect(m.start(spec)).rejects.toThrow(/start cvm-openclaw\.service failed \(1\): Job for cvm-openclaw\.service failed/);
    expect(await m.isRunning("cvm-openclaw")).toBe(false);
  });

  test("refuses arguments systemd would reinterpret", () => {
    const m = new SystemdServiceManager(new RootFs("/tmp"), { unitDir: "/x", envDir: "/y", systemctl: "systemctl" });
    expect(() => m.renderUnit({ ...spec, exec: ["/bin/sh", "-c", "rm -rf $HOME"] })).toThrow(/unsupported character/);
    expect(() => m.renderUnit({ ...spec, env: { X: 'a"b' } })).toThrow(/unsafe/);
  });
});

describe("service output and main pid (warm pool claim)", () => {
  test("systemd: MainPID from systemctl show, journal cursor as the mark, entries after it (commands are a recording test double)", async () => {
    const calls: string[][] = [];
    const out: Record<string, string> = {
      show: "4242\n",
      mark: '{"__CURSOR":"s=abc;i=12"}\n',
      since: "[reload] config hot reload applied (models)\n",
    };
    const run = (async (cmd: string, args: string[]) => {
      calls.push([cmd, ...args]);
      if (args[0] === "show") return { stdout: out.show!, stderr: "" };
      if (args.includes("--output=json")) return { stdout: out.mark!, stderr: "" };
      return { stdout: out.since!, stderr: "" };
    }) as unknown as typeof import("../../shared/util/run.js").run;
    const m = new SystemdServiceManager(new RootFs("/tmp"), { unitDir: "/x", envDir: "/y", systemctl: "systemctl", journalctl: "journalctl", run });
    expect(await m.mainPid("cvm-openclaw")).toBe(4242);
    const mark = await m.outputMark("cvm-openclaw");
    expect(mark).toBe("s=abc;i=12");
    expect(await m.outputSince("cvm-openclaw", mark)).toMatch(/hot reload applied/);
    expect(calls).toEqual([
      ["systemctl", "show", "--property=MainPID", "--value", "cvm-openclaw.service"],
      ["journalctl", "--boot", "--unit=cvm-openclaw.service", "--lines=1", "--output=json", "--output-fields=__CURSOR", "--no-pager", "--quiet"],
      ["journalctl", "--boot", "--unit=cvm-openclaw.service", "--after-cursor=s=abc;i=12", "--output=cat", "--no-pager", "--quiet"],
    ]);
    out.show = "0\n";
    out.mark = "";
    expect(await m.mainPid("cvm-openclaw")).toBeNull();
    expect(await m.outputMark("cvm-openclaw")).toBe("");
    await m.outputSince("cvm-openclaw", "");
    expect(calls.at(-1)).not.toContain("--after-cursor=");
  });

  test("direct: the pid survives the service renaming itself; output is read from a byte mark", async () => {
    dir = await mkdtemp(join(tmpdir(), "direct-"));
    const root = new RootFs(join(dir, "root"));
    const stateDir = join(dir, "state");
    const m = new DirectServiceManager(root, stateDir, pino({ level: "silent" }), false);
    expect(await m.outputMark("svc")).toBe("0");
    expect(await m.mainPid("svc")).toBeNull();
    // Like OpenClaw: prints, retitles itself (its cmdline no longer names the program), prints more on SIGUSR2.
    const script = `process.title="renamed-service";console.log("first");process.on("SIGUSR2",()=>console.log("second"));setInterval(()=>{},1000);`;
    const fsp = await import("node:fs/promises");
    await fsp.mkdir(join(dir, "root/home"), { recursive: true });
    await fsp.mkdir(join(dir, "root/opt/bin"), { recursive: true });
    await fsp.symlink(process.execPath, join(dir, "root/opt/bin/node"));
    await m.start({ ...spec, name: "svc", exec: ["/opt/bin/node", "-e", script], workingDir: "/home", env: {} });
    const pid = Number((await readFile(join(stateDir, "svc.pid"), "utf8")).split("\n")[0]);
    try {
      for (let i = 0; i < 100 && !(await readFile(join(stateDir, "svc.log"), "utf8")).includes("first"); i++) await new Promise((r) => setTimeout(r, 20));
      expect((await readFile(`/proc/${pid}/cmdline`, "utf8")).startsWith("renamed-service")).toBe(true);
      expect(await m.mainPid("svc")).toBe(pid);
      expect(await m.isRunning("svc")).toBe(true);
      const mark = await m.outputMark("svc");
      expect(Number(mark)).toBeGreaterThan(0);
      process.kill(pid, "SIGUSR2");
      for (let i = 0; i < 100 && !(await m.outputSince("svc", mark)).includes("second"); i++) await new Promise((r) => setTimeout(r, 20));
      expect(await m.outputSince("svc", mark)).toBe("second\n");
      expect(await m.outputSince("svc", "0")).toBe("first\nsecond\n");
    } finally {
      process.kill(pid, "SIGKILL");
    }
    for (let i = 0; i < 100 && (await m.mainPid("svc")) !== null; i++) await new Promise((r) => setTimeout(r, 20));
    expect(await m.mainPid("svc")).toBeNull();
  });
});

import { spawn } from "node:child_process";
import { existsSync, lstatSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { run } from "../../shared/util/run.js";
import { tempDir } from "../support/daemon.js";
import { prerequisites } from "../support/prerequisites.js";

const ROOT = new URL("../../", import.meta.url).pathname;

const missing = prerequisites("the systemd unit / make install tests", { tools: [["systemd-analyze", ["--version"]], ["make", ["--version"]]] });

/** The unit's directives as [key, value] pairs, per section, comments dropped. */
function directives(unit: string): Array<[string, string]> {
  return unit
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith("#") && !l.startsWith("["))
    .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)] as [string, string]);
}

describe.skipIf(missing !== null)("make install and the cvmd systemd unit", () => {
  const t = tempDir("cvm-install-");
  const prefix = join(t.path, "usr");
  const etc = join(t.path, "etc");
  const units = join(t.path, "units");
  const unitFile = join(units, "cvmd.service");
  // `build` is done here rather than by make: tsc emits even when some other file has a type error
  // (that is `make test`'s tsc step's job to report), and this test is about what install does.
  const install = () =>
    run("make", ["-C", ROOT, "-o", "deps", "-o", "build", "install", `PREFIX=${prefix}`, `SYSCONFDIR=${etc}`, `UNITDIR=${units}`], { timeoutMs: 300_000 });

  beforeAll(async () => {
    await run(process.execPath, [join(ROOT, "node_modules/typescript/bin/tsc"), "-p", join(ROOT, "tsconfig.json")], { timeoutMs: 300_000 }).catch((err: Error) => {
      if (!existsSync(join(ROOT, "dist/host/main.js"))) throw err;
    });
    await install();
  }, 600_000);
  afterAll(() => t.remove());

  it("installs the daemon, the CLI, the unit and a default configuration", () => {
    expect(lstatSync(join(prefix, "bin/cvmd")).isSymbolicLink()).toBe(true);
    expect(existsSync(join(prefix, "lib/cvm/dist/host/main.js"))).toBe(true);
    expect(existsSync(join(prefix, "lib/cvm/node_modules/prom-client/package.json"))).toBe(true);
    // Production dependencies only.
    expect(existsSync(join(prefix, "lib/cvm/node_modules/vitest"))).toBe(false);
    expect(readFileSync(join(prefix, "bin/cvmctl"), "utf8")).toContain(`CVM_CONFIG_FILE:=${etc}/cvm/cvmd.json`);
    const cfg = JSON.parse(readFileSync(join(etc, "cvm/cvmd.json"), "utf8")) as Record<string, string>;
    expect(cfg.CVM_DATA_DIR).toBe("/var/lib/cvm");
    expect(cfg.CVM_METRICS_LISTEN).toMatch(/^127\.0\.0\.1:\d+$/);
    const unit = readFileSync(unitFile, "utf8");
    expect(unit).toContain(`ExecStart=${prefix}/bin/cvmd`);
    expect(unit).toContain(`Environment=CVM_CONFIG_FILE=${etc}/cvm/cvmd.json`);
  });

  it("systemd-analyze verify accepts the installed unit without a single warning", async () => {
    const { stdout, stderr } = await run("systemd-analyze", ["verify", unitFile], { timeoutMs: 60_000 });
    expect(stdout + stderr).toBe("");
  });

  it("systemd-analyze verify would catch a broken directive (the check above can fail)", async () => {
    const broken = join(units, "broken.service");
    writeFileSync(broken, readFileSync(unitFile, "utf8").replace("KillMode=process", "KillMode=procss"));
    const { stdout, stderr } = await run("systemd-analyze", ["verify", broken], { timeoutMs: 60_000 });
    expect(stdout + stderr).toMatch(/kill mode/i);
  });

  it("leaves guests running on stop, restarts on failure, keeps QEMU/nft/netns possible", () => {
    const d = directives(readFileSync(unitFile, "utf8"));
    const get = (k: string) => d.filter(([key]) => key === k).map(([, v]) => v);
    expect(get("KillMode")).toEqual(["process"]);
    expect(get("Restart")).toEqual(["on-failure"]);
    expect(get("ExecReload")).toEqual(["/bin/kill -HUP $MAINPID"]);
    expect(get("StandardOutput")).toEqual(["journal"]);
    expect(get("NoNewPrivileges")).toEqual(["yes"]);
    const caps = get("CapabilityBoundingSet").join(" ").split(/\s+/);
    for (const c of ["CAP_NET_ADMIN", "CAP_SYS_ADMIN", "CAP_NET_RAW"]) expect(caps).toContain(c);
    expect(get("DeviceAllow")).toEqual(expect.arrayContaining(["/dev/kvm rw", "/dev/net/tun rw", "/dev/vhost-vsock rw"]));
    expect(get("RestrictNamespaces")[0]!.split(" ").sort()).toEqual(["mnt", "net"]);
    expect(get("RestrictAddressFamilies")[0]).toMatch(/AF_NETLINK/);
    // A private mount namespace would hide cvmd's /run/netns mounts from the host and from the next cvmd.
    for (const k of ["ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices", "ReadWritePaths", "ProtectKernelTunables", "ProtectControlGroups", "PrivateMounts"]) {
      expect(get(k), k).toEqual([]);
    }
  });

  it("the installed cvmd starts from its install dir, serves /metrics, and exits 0 on SIGTERM", async () => {
    const data = join(t.path, "data");
    const env = { PATH: process.env.PATH, CVM_CONFIG_FILE: join(etc, "cvm/cvmd.json"), CVM_DATA_DIR: data, CVM_LISTEN: "127.0.0.1:0", CVM_METRICS_LISTEN: "127.0.0.1:0", CVM_DRIVER: "none" };
    const created = await run(join(prefix, "bin/cvmctl"), ["tenant", "create", "acme", "--json"], { env: { ...env }, timeoutMs: 60_000 });
    expect(JSON.parse(created.stdout).slug).toBe("acme");
    const child = spawn(join(prefix, "bin/cvmd"), [], { env, stdio: ["ignore", "pipe", "pipe"] });
    const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
    try {
      const metricsUrl = await new Promise<string>((resolve, reject) => {
        let buf = "";
        const timer = setTimeout(() => reject(new Error(`no metrics listener: ${buf}`)), 30_000);
        child.stdout!.on("data", (c: Buffer) => {
          buf += c.toString();
          const m = /"url":"(http:\/\/127\.0\.0\.1:\d+)","msg":"metrics listener up"/.exec(buf);
          if (m) {
            clearTimeout(timer);
            resolve(m[1]!);
          }
        });
        child.once("exit", () => reject(new Error(`cvmd exited: ${buf}`)));
      });
      const text = await (await fetch(`${metricsUrl}/metrics`)).text();
      expect(text).toMatch(/^cvm_instances\{status="ready"\} 0$/m);
      expect(text).toMatch(/^cvm_process_resident_memory_bytes \d+/m);
    } finally {
      child.kill("SIGTERM");
    }
    expect(await exited).toBe(0);
  });

  it("a second make install keeps the operator's edited configuration", async () => {
    const cfg = join(etc, "cvm/cvmd.json");
    writeFileSync(cfg, JSON.stringify({ CVM_DATA_DIR: "/srv/cvm" }));
    await install();
    expect(JSON.parse(readFileSync(cfg, "utf8"))).toEqual({ CVM_DATA_DIR: "/srv/cvm" });
  }, 300_000);
});

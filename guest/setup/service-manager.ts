import { spawn } from "node:child_process";
import { openSync, closeSync } from "node:fs";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "pino";
import { run as defaultRun } from "../../shared/util/run.js";
import type { RootFs } from "../system/root-fs.js";
import { writeFileAtomic } from "./atomic-write.js";
import type { UserAccount } from "./user-accounts.js";

export interface ServiceSpec {
  /** Unit name without suffix, e.g. "cvm-openclaw". */
  name: string;
  description: string;
  /** argv; argv[0] is an absolute guest path. */
  exec: string[];
  user: UserAccount;
  env: Record<string, string>;
  /** Secrets for the service's environment, kept out of the unit file. */
  secretEnv: Record<string, string>;
  workingDir: string;
}

/** Starts a long-running service and keeps it running; start is idempotent. */
export interface ServiceManager {
  start(spec: ServiceSpec): Promise<void>;
  isRunning(name: string): Promise<boolean>;
}

type Run = typeof defaultRun;

const envLine = (k: string, v: string) => {
  if (!/^[A-Z_][A-Z0-9_]*$/.test(k) || /[\n"\\]/.test(v)) throw new Error(`unsafe environment entry ${k}`);
  return `${k}=${v}`;
};

/** systemd: a runtime unit in /run/systemd/system (gone at reboot, like the rest of the per-boot state). */
export class SystemdServiceManager implements ServiceManager {
  constructor(
    private readonly root: RootFs,
    private readonly opts: { unitDir: string; envDir: string; systemctl: string; run?: Run },
  ) {}

  renderUnit(spec: ServiceSpec): string {
    for (const a of spec.exec) if (/[\s"'\\%$]/.test(a)) throw new Error(`unsupported character in service argument ${a}`);
    return [
      "[Unit]",
      `Description=${spec.description}`,
      "After=network.target",
      "",
      "[Service]",
      "Type=simple",
      `User=${spec.user.name}`,
      `Group=${spec.user.gid}`,
      `WorkingDirectory=${spec.workingDir}`,
      ...Object.entries(spec.env).map(([k, v]) => `Environment="${envLine(k, v)}"`),
      `EnvironmentFile=${join(this.opts.envDir, `${spec.name}.env`)}`,
      `ExecStart=${spec.exec.join(" ")}`,
      "Restart=on-failure",
      "RestartSec=2",
      "NoNewPrivileges=yes",
      "",
      "[Install]",
      "WantedBy=multi-user.target",
      "",
    ].join("\n");
  }

  async start(spec: ServiceSpec): Promise<void> {
    const run = this.opts.run ?? defaultRun;
    const envFile = this.root.path(join(this.opts.envDir, `${spec.name}.env`));
    await mkdir(this.root.path(this.opts.envDir), { recursive: true, mode: 0o700 });
    await writeFileAtomic(envFile, Object.entries(spec.secretEnv).map(([k, v]) => envLine(k, v) + "\n").join(""), 0o600);
    const unitDir = this.root.path(this.opts.unitDir);
    await mkdir(unitDir, { recursive: true, mode: 0o755 });
    await writeFileAtomic(join(unitDir, `${spec.name}.service`), this.renderUnit(spec), 0o644);
    await run(this.opts.systemctl, ["daemon-reload"], { timeoutMs: 60_000 });
    await run(this.opts.systemctl, ["start", `${spec.name}.service`], { timeoutMs: 120_000 });
  }

  async isRunning(name: string): Promise<boolean> {
    try {
      await (this.opts.run ?? defaultRun)(this.opts.systemctl, ["is-active", "--quiet", `${name}.service`], { timeoutMs: 10_000 });
      return true;
    } catch {
      return false;
    }
  }
}

/**
 * Spawns the service itself, detached so it outlives an agent restart (as a systemd service would),
 * and remembers its pid under the state directory so a restarted agent does not start a second copy.
 * Used in tests and as the fallback where systemd is not pid 1.
 */
export class DirectServiceManager implements ServiceManager {
  constructor(
    private readonly root: RootFs,
    private readonly stateDir: string,
    private readonly logger: Logger,
    /** Drop privileges to the service user; only meaningful when the root is the real "/". */
    private readonly dropPrivileges: boolean,
  ) {}

  private pidFile(name: string): string {
    return join(this.stateDir, `${name}.pid`);
  }

  async start(spec: ServiceSpec): Promise<void> {
    if (await this.isRunning(spec.name)) return;
    await mkdir(this.stateDir, { recursive: true, mode: 0o755 });
    const logPath = join(this.stateDir, `${spec.name}.log`);
    const out = openSync(logPath, "a", 0o640);
    // No chroot here: guest paths in argv and the environment are mapped into the root instead.
    const mapPath = (v: string) => (v.startsWith("/") && !v.includes(":") ? this.root.path(v) : v);
    const [cmd, ...args] = spec.exec.map(mapPath);
    const env = Object.fromEntries(Object.entries(spec.env).map(([k, v]) => [k, mapPath(v)]));
    const child = spawn(cmd!, args, {
      cwd: this.root.path(spec.workingDir),
      env: { PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", ...env, ...spec.secretEnv },
      detached: true,
      stdio: ["ignore", out, out],
      ...(this.dropPrivileges ? { uid: spec.user.uid, gid: spec.user.gid } : {}),
    });
    closeSync(out);
    const pid = await new Promise<number>((resolve, reject) => {
      child.once("error", reject);
      child.once("spawn", () => resolve(child.pid!));
    });
    child.unref();
    await writeFile(this.pidFile(spec.name), `${pid}\n${cmd}\n`, { mode: 0o644 });
    this.logger.info({ service: spec.name, pid, log: logPath }, "service started directly");
  }

  async isRunning(name: string): Promise<boolean> {
    let pid: number;
    let cmd: string;
    try {
      const [p, c] = (await readFile(this.pidFile(name), "utf8")).split("\n");
      pid = Number(p);
      cmd = c ?? "";
    } catch {
      return false;
    }
    if (!Number.isInteger(pid) || pid <= 1) return false;
    try {
      // The pid must still be the program we started, not a recycled pid.
      const cmdline = (await readFile(`/proc/${pid}/cmdline`, "utf8")).split("\0");
      const stat = await readFile(`/proc/${pid}/stat`, "utf8");
      if (/\) Z /.test(stat)) return false;
      if (cmdline[0] === cmd) return true;
    } catch {
      /* gone */
    }
    await rm(this.pidFile(name), { force: true });
    return false;
  }
}

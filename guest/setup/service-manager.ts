import { spawn } from "node:child_process";
import { openSync, closeSync } from "node:fs";
import { mkdir, open, readFile, rm, stat, writeFile } from "node:fs/promises";
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
  /** The service's main process id, or null when it is not running. */
  mainPid(name: string): Promise<number | null>;
  /** An opaque position at the end of what the service has printed so far (stdout and stderr). */
  outputMark(name: string): Promise<string>;
  /** What the service printed after `mark`, at most `maxBytes` (the rest is left for a later call). */
  outputSince(name: string, mark: string, maxBytes?: number): Promise<string>;
}

const DEFAULT_OUTPUT_BYTES = 1024 * 1024;

type Run = typeof defaultRun;

const envLine = (k: string, v: string) => {
  if (!/^[A-Z_][A-Z0-9_]*$/.test(k) || /[\n"\\]/.test(v)) throw new Error(`unsafe environment entry ${k}`);
  return `${k}=${v}`;
};

/** systemd: a runtime unit in /run/systemd/system (gone at reboot, like the rest of the per-boot state). */
export class SystemdServiceManager implements ServiceManager {
  constructor(
    private readonly root: RootFs,
    private readonly opts: { unitDir: string; envDir: string; systemctl: string; journalctl?: string; run?: Run },
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

  async mainPid(name: string): Promise<number | null> {
    const { stdout } = await (this.opts.run ?? defaultRun)(this.opts.systemctl, ["show", "--property=MainPID", "--value", `${name}.service`], { timeoutMs: 10_000 });
    const pid = Number(stdout.trim());
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  }

  /** The journal cursor of the unit's latest entry this boot; "" when it has none yet (then: from the boot's start). */
  async outputMark(name: string): Promise<string> {
    const { stdout } = await (this.opts.run ?? defaultRun)(
      this.opts.journalctl ?? "journalctl",
      ["--boot", `--unit=${name}.service`, "--lines=1", "--output=json", "--output-fields=__CURSOR", "--no-pager", "--quiet"],
      { timeoutMs: 30_000 },
    );
    const line = stdout.trim().split("\n").pop() ?? "";
    if (!line) return "";
    const cursor = (JSON.parse(line) as { __CURSOR?: unknown }).__CURSOR;
    if (typeof cursor !== "string" || cursor.length === 0) throw new Error("journalctl printed an entry without a cursor");
    return cursor;
  }

  async outputSince(name: string, mark: string, maxBytes = DEFAULT_OUTPUT_BYTES): Promise<string> {
    const { stdout } = await (this.opts.run ?? defaultRun)(
      this.opts.journalctl ?? "journalctl",
      ["--boot", `--unit=${name}.service`, ...(mark ? [`--after-cursor=${mark}`] : []), "--output=cat", "--no-pager", "--quiet"],
      { timeoutMs: 30_000 },
    );
    return stdout.length > maxBytes ? stdout.slice(0, maxBytes) : stdout;
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
    // The start time identifies the process even after it renames itself (OpenClaw retitles to
    // "openclaw-gateway", so its cmdline no longer names the program that was started).
    const started = await processStartTime(pid).catch(() => "");
    await writeFile(this.pidFile(spec.name), `${pid}\n${cmd}\n${started}\n`, { mode: 0o644 });
    this.logger.info({ service: spec.name, pid, log: logPath }, "service started directly");
  }

  async isRunning(name: string): Promise<boolean> {
    return (await this.mainPid(name)) !== null;
  }

  async mainPid(name: string): Promise<number | null> {
    let pid: number;
    let cmd: string;
    let started: string;
    try {
      const [p, c, t] = (await readFile(this.pidFile(name), "utf8")).split("\n");
      pid = Number(p);
      cmd = c ?? "";
      started = t ?? "";
    } catch {
      return null;
    }
    if (!Number.isInteger(pid) || pid <= 1) return null;
    try {
      // The pid must still be the process we started, not a recycled pid.
      const stat = await readFile(`/proc/${pid}/stat`, "utf8");
      if (/\) Z /.test(stat)) return null;
      if (started) {
        if ((await processStartTime(pid)) === started) return pid;
      } else if ((await readFile(`/proc/${pid}/cmdline`, "utf8")).split("\0")[0] === cmd) return pid;
    } catch {
      /* gone */
    }
    await rm(this.pidFile(name), { force: true });
    return null;
  }

  /** The log file's current size in bytes. */
  async outputMark(name: string): Promise<string> {
    try {
      return String((await stat(join(this.stateDir, `${name}.log`))).size);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return "0";
      throw err;
    }
  }

  async outputSince(name: string, mark: string, maxBytes = DEFAULT_OUTPUT_BYTES): Promise<string> {
    const offset = Number(mark);
    if (!Number.isSafeInteger(offset) || offset < 0) throw new Error(`invalid output mark ${JSON.stringify(mark)}`);
    let fh;
    try {
      fh = await open(join(this.stateDir, `${name}.log`), "r");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return "";
      throw err;
    }
    try {
      const buf = Buffer.alloc(maxBytes);
      const { bytesRead } = await fh.read(buf, 0, maxBytes, offset);
      return buf.subarray(0, bytesRead).toString("utf8");
    } finally {
      await fh.close();
    }
  }
}

/** Field 22 of /proc/<pid>/stat (start time in clock ticks since boot), after the parenthesised comm. */
async function processStartTime(pid: number): Promise<string> {
  const stat = await readFile(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const t = fields[19];
  if (!t || !/^\d+$/.test(t)) throw new Error(`cannot parse /proc/${pid}/stat`);
  return t;
}

/** Shared fixtures for the agent system tests: a guest root tree, sshd, the compiled agent. */
import { Client } from "ssh2";
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { createWriteStream, existsSync, mkdirSync } from "node:fs";
import { chmod, copyFile, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import pino from "pino";
import { buildTreeListing } from "../../guest/setup/openclaw-tree.js";
import { createHash } from "node:crypto";
import { freePort, startSshd as startTestSshd, type Sshd } from "../support/sshd.js";

export { freePort, type Sshd };

export const REPO = fileURLToPath(new URL("../..", import.meta.url));
export const AGENT_MAIN = join(REPO, "dist/agent-test/guest/main.js");
const STAND_IN = fileURLToPath(new URL("./openclaw-stand-in.mjs", import.meta.url));


export function testLogger(name: string) {
  return pino({ level: process.env.CVM_TEST_LOG ?? "silent", name });
}

let built = false;
/** Compiles the agent (and its imports) into dist/agent-test; emits even if unrelated files have type errors. */
export function buildAgent(): void {
  if (built && existsSync(AGENT_MAIN)) return;
  try {
    execFileSync(join(REPO, "node_modules/.bin/tsc"), ["-p", join(REPO, "test/agent/tsconfig.agent.json")], { cwd: REPO, stdio: "pipe" });
  } catch (err) {
    // Type errors elsewhere still emit (noEmitOnError false); only a missing output is fatal.
    if (!existsSync(AGENT_MAIN)) throw err;
  }
  built = true;
}

export interface GuestRoot {
  dir: string;
  hostKeyPub: string;
  treeDigest: string;
  tenantKey: { privatePath: string; publicLine: string };
}

/** A guest filesystem tree: /etc (passwd, ssh host key), the pinned "OpenClaw" (the stand-in) and its manifest. */
export async function makeGuestRoot(opts: { readyDelayMs?: number; reload?: "hot" | "restart" } = {}): Promise<GuestRoot> {
  const dir = await mkdtemp(join(tmpdir(), "cvm-guest-root-"));
  await mkdir(join(dir, "etc/ssh"), { recursive: true });
  await mkdir(join(dir, "home"), { recursive: true });
  await mkdir(join(dir, "etc/cvm"), { recursive: true });
  await writeFile(join(dir, "etc/passwd"), "root:x:0:0:root:/root:/bin/bash\n");
  await writeFile(join(dir, "etc/group"), "root:x:0:\n");
  await writeFile(join(dir, "etc/shadow"), "root:*:19000:0:99999:7:::\n", { mode: 0o640 });
  await writeFile(join(dir, "etc/gshadow"), "root:*::\n", { mode: 0o640 });
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "host@guest", "-f", join(dir, "etc/ssh/ssh_host_ed25519_key")]);
  const hostKeyPub = (await readFile(join(dir, "etc/ssh/ssh_host_ed25519_key.pub"), "utf8")).trim();

  const pkg = join(dir, "opt/openclaw/node_modules/openclaw");
  await mkdir(pkg, { recursive: true });
  await writeFile(join(pkg, "package.json"), JSON.stringify({ name: "openclaw", version: "2026.9.6", type: "module", bin: { openclaw: "openclaw.mjs" } }, null, 2) + "\n");
  await copyFile(STAND_IN, join(pkg, "openclaw.mjs"));
  await chmod(join(pkg, "openclaw.mjs"), 0o755);
  await writeFile(join(pkg, "stand-in.json"), JSON.stringify({ ready_delay_ms: opts.readyDelayMs ?? 0, reload: opts.reload ?? "hot" }) + "\n");
  await mkdir(join(dir, "opt/node/bin"), { recursive: true });
  await symlink(process.execPath, join(dir, "opt/node/bin/node"));
  const listing = await buildTreeListing(join(dir, "opt/openclaw"));
  await mkdir(join(dir, "usr/share/cvm"), { recursive: true });
  await writeFile(join(dir, "usr/share/cvm/openclaw.listing"), listing);
  const treeDigest = createHash("sha256").update(listing).digest("hex");
  await writeFile(
    join(dir, "etc/cvm/openclaw.json"),
    JSON.stringify({ version: "2026.9.6", dir: "/opt/openclaw", node: "/opt/node/bin/node", tree_digest: treeDigest, listing: "/usr/share/cvm/openclaw.listing" }, null, 2),
  );
  await writeFile(join(dir, "cmdline"), "console=ttyS0 root=/dev/vda cvm.image=test-image-1 quiet\n");

  const keyDir = await mkdtemp(join(tmpdir(), "cvm-tenant-key-"));
  const privatePath = join(keyDir, "id_ed25519");
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "tenant@example", "-f", privatePath]);
  const publicLine = (await readFile(privatePath + ".pub", "utf8")).trim();
  return { dir, hostKeyPub, treeDigest, tenantKey: { privatePath, publicLine } };
}

/** A real OpenSSH sshd serving the guest root's host key and the authorized keys file the agent writes. */
export function startSshd(root: GuestRoot): Promise<Sshd> {
  return startTestSshd({
    dir: join(root.dir, "etc/ssh"),
    hostKey: join(root.dir, "etc/ssh/ssh_host_ed25519_key"),
    authorizedKeys: join(root.dir, "home/azureuser/.ssh/authorized_keys"),
  });
}

export interface AgentProcess {
  proc: ChildProcess;
  logPath: string;
  exited: Promise<number | null>;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

export function agentArgs(root: GuestRoot, extra: string[]): string[] {
  return [
    "--root",
    root.dir,
    "--cmdline",
    join(root.dir, "cmdline"),
    "--service-manager",
    "direct",
    "--sshd-timeout-ms",
    "10000",
    "--openclaw-ready-timeout-ms",
    "20000",
    "--heartbeat-ms",
    "500",
    ...extra,
  ];
}

/** `prefix` runs the agent under a wrapper, e.g. `ip netns exec <ns>` (which execs, keeping the pid). */
export function spawnAgent(args: string[], logName: string, prefix: string[] = []): AgentProcess {
  // One file per test role, overwritten on each run, kept for reading after a failure.
  const logDir = join(tmpdir(), "cvm-agent-test-logs");
  mkdirSync(logDir, { recursive: true });
  const logPath = join(logDir, `${logName}.log`);
  const out = createWriteStream(logPath);
  const argv = [...prefix, process.execPath, AGENT_MAIN, ...args];
  const proc = spawn(argv[0]!, argv.slice(1), { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, CVM_AGENT_LOG_LEVEL: "debug" } });
  proc.stdout!.pipe(out);
  proc.stderr!.pipe(out);
  const exited = new Promise<number | null>((resolve) => proc.once("exit", (code) => resolve(code)));
  return {
    proc,
    logPath,
    exited,
    kill: async (signal = "SIGTERM") => {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill(signal);
        await exited;
      }
    },
  };
}

/** Kills the OpenClaw stand-in the direct service manager left running (pid file under the state dir). */
export async function killStandIn(root: GuestRoot): Promise<void> {
  let pid = 0;
  try {
    pid = Number((await readFile(join(root.dir, "run/cvm/cvm-openclaw.pid"), "utf8")).split("\n")[0]);
  } catch {
    return; // not running
  }
  if (!(pid > 1)) return;
  const alive = () => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  // The real OpenClaw keeps writing its state while it shuts down: wait for it, then insist.
  if (alive()) process.kill(pid, "SIGTERM");
  for (let i = 0; i < 100 && alive(); i++) await new Promise((r) => setTimeout(r, 100));
  if (alive()) process.kill(pid, "SIGKILL");
}

export async function removeRoot(root: GuestRoot): Promise<void> {
  await rm(root.dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 200 });
  await rm(join(root.tenantKey.privatePath, ".."), { recursive: true, force: true });
}

export function once<T>(emitter: { once(ev: string, fn: (v: T) => void): unknown }, ev: string, timeoutMs: number, what = ev): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), timeoutMs);
    emitter.once(ev, (v: T) => {
      clearTimeout(t);
      resolve(v);
    });
  });
}

/** Runs `command` over SSH as root on 127.0.0.1:`port` (the test sshd) and returns its stdout. */
export function sshExec(port: number, privateKey: Buffer, command: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = new Client();
    c.on("ready", () => {
      c.exec(command, (err, ch) => {
        if (err) return reject(err);
        let out = "";
        ch.on("data", (d: Buffer) => (out += d.toString()));
        ch.on("close", () => {
          c.end();
          resolve(out);
        });
      });
    });
    c.on("error", reject);
    c.connect({ host: "127.0.0.1", port, username: "root", privateKey, readyTimeout: 10_000 });
  });
}

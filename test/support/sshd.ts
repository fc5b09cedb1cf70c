/** Real OpenSSH on loopback for system tests: sshd, its host keys, a free port, and the ssh client. */
import { execFile, execFileSync, spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { join } from "node:path";

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/** An ed25519 key pair made by ssh-keygen at `path` (private) and `path`.pub; returns the public line. */
export async function sshKeygen(path: string, comment: string): Promise<string> {
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path]);
  return (await readFile(path + ".pub", "utf8")).trim();
}

export interface Sshd {
  port: number;
  proc: ChildProcess;
  stop(): Promise<void>;
}

/**
 * A real OpenSSH sshd on 127.0.0.1 with the given host key and authorized keys file. Login is as root
 * (test trees have no other accounts); StrictModes is off because temp trees are not owned like /home.
 * Its config and pid file go into `dir`.
 */
export async function startSshd(o: { dir: string; hostKey: string; authorizedKeys: string }): Promise<Sshd> {
  if (!existsSync("/run/sshd")) await mkdir("/run/sshd", { mode: 0o755 }); // sshd's privilege-separation dir
  const port = await freePort();
  const cfg = join(o.dir, "sshd_config");
  await writeFile(
    cfg,
    [
      `Port ${port}`,
      "ListenAddress 127.0.0.1",
      `HostKey ${o.hostKey}`,
      `AuthorizedKeysFile ${o.authorizedKeys}`,
      "StrictModes no",
      "PubkeyAuthentication yes",
      "PasswordAuthentication no",
      "KbdInteractiveAuthentication no",
      "PermitRootLogin prohibit-password",
      "AllowUsers root",
      "UsePAM no",
      `PidFile ${join(o.dir, "sshd.pid")}`,
      "",
    ].join("\n"),
  );
  const proc = spawn("/usr/sbin/sshd", ["-D", "-e", "-f", cfg, "-o", `Port=${port}`, "-o", "ListenAddress=127.0.0.1"], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  proc.stderr!.on("data", (d) => (stderr += String(d)));
  const deadline = Date.now() + 10_000;
  while (!/Server listening/.test(stderr)) {
    if (proc.exitCode !== null) throw new Error(`sshd exited: ${stderr}`);
    if (Date.now() > deadline) throw new Error(`sshd did not start: ${stderr}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    port,
    proc,
    stop: async () => {
      if (proc.exitCode === null) {
        const exited = new Promise((r) => proc.once("exit", r));
        proc.kill("SIGTERM");
        await exited;
      }
    },
  };
}

/**
 * The OpenSSH client as a tenant runs it after cvm-verify: host keys only from `knownHosts`
 * (StrictHostKeyChecking=yes, no global file, no config), key auth with `identity`, no prompts.
 */
export function sshStrict(o: { knownHosts: string; identity: string; port: number; command: string }): Promise<{ code: number; stdout: string; stderr: string }> {
  const args = [
    "-F", "/dev/null",
    "-o", "StrictHostKeyChecking=yes",
    "-o", `UserKnownHostsFile=${o.knownHosts}`,
    "-o", "GlobalKnownHostsFile=/dev/null",
    "-o", "BatchMode=yes",
    "-o", "IdentitiesOnly=yes",
    "-o", "ConnectTimeout=10",
    "-i", o.identity,
    "-p", String(o.port),
    "root@127.0.0.1",
    o.command,
  ];
  return new Promise((resolve) =>
    execFile("ssh", args, { timeout: 30_000 }, (err, stdout, stderr) => resolve({ code: err ? (typeof err.code === "number" ? err.code : 255) : 0, stdout, stderr })),
  );
}

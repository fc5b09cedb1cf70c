import { execFile } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { linkLocalOf } from "../../host/net/tap-guard.js";
import { run } from "../../shared/util/run.js";
import { tempDir } from "../support/daemon.js";
import { cvmctl, startCvmd, type CvmdProcess } from "../support/processes.js";
import { sshKeyPair } from "../support/ssh-keys.js";
import { vmHostEnv } from "../support/vm-host.js";

/**
 * Neighbours in real VMs (QEMU, TCG), three tenants at once.
 *
 * Issue 21, must-show 7: three creates at the same moment on this 2-core machine all reach `ready`. Cold boots run
 * CVM_MAX_CONCURRENT_BOOTS at a time (1 here: half the CPUs), the others wait in the boot queue, and each one's events
 * show its wait and then its boot phases. Before the queue, two concurrent cold starts starved each other (one took
 * 733 s of setup, the other failed `agent_timeout` at 900 s). The deadlines are the defaults: they start with the boot.
 *
 * Issue 15, point 2: a victim tenant's VM and, next to it, an attacker tenant's VM. As root in its VM the attacker
 * claims the victim's IPv4 (unsolicited ARP replies, then the address itself and pings from it), its IPv6 link-local
 * address and its MAC. Afterwards the victim's SSH forward still reaches the victim (its host key, pinned before the
 * attack, still matches), cvmd's namespace still maps the victim's address to the victim's MAC, and the attacker's
 * tap guard counted the frames it dropped.
 */
const execP = promisify(execFile);
const ROOT = new URL("../../", import.meta.url).pathname;
const IMAGE_DIR = process.env.CVM_E2E_IMAGE_DIR ?? join(ROOT, "images/out/current");
/** Three boots one after another under TCG, ~4 min each on an idle machine. */
const ALL_READY_MS = 45 * 60_000;

interface Vm {
  tenant: string;
  key: string;
  name: string;
  port: number;
  ip: string;
  mac: string;
  dev: string;
}

describe("a root tenant cannot take over its neighbour's address (two real VMs, TCG)", () => {
  const dir = tempDir("cvmspoof-");
  const data = join(dir.path, "d");
  const home = join(dir.path, "home");
  const knownHosts = join(home, "known_hosts");
  const keyFile = join(home, "id_ed25519");
  let host: ReturnType<typeof vmHostEnv> | undefined;
  let env: Record<string, string>;
  let cvmd: CvmdProcess | undefined;
  let publicKey = "";
  const vms: Partial<Record<"victim" | "attacker" | "bystander", Vm>> = {};

  const api = async (key: string, path: string, init: RequestInit = {}) => {
    const res = await fetch(`${cvmd!.url}${path}`, { ...init, headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json" } });
    return (await res.json()) as { data: any; error?: { message: string } };
  };

  /** ssh to a VM's forward; `strict` refuses any host key but the one recorded before. */
  const ssh = (vm: Vm, command: string, strict: boolean, stdin?: string) =>
    new Promise<{ code: number; out: string }>((resolve) => {
      const args = [
        "-F", "/dev/null", "-i", keyFile, "-p", String(vm.port),
        "-o", `UserKnownHostsFile=${knownHosts}`, "-o", `StrictHostKeyChecking=${strict ? "yes" : "accept-new"}`,
        "-o", "BatchMode=yes", "-o", "ConnectTimeout=30", "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3",
        "azureuser@127.0.0.1", command,
      ];
      const child = execFile("ssh", args, { timeout: 180_000 }, (err, stdout, stderr) =>
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: stdout + stderr }),
      );
      child.stdin?.end(stdin ?? "");
    });

  type Who = "victim" | "attacker" | "bystander";
  type Event = { at: string; type: string; message: string };

  async function create(who: Who): Promise<{ who: Who; key: string; name: string }> {
    const key = JSON.parse((await cvmctl(["tenant", "create", who, "--json"], env)).stdout).api_key as string;
    const created = await api(key, "/v1/instances", { method: "POST", body: JSON.stringify({ public_key: publicKey, agent: "openclaw", inference_mode: "default_gateway" }) });
    expect(created.error, JSON.stringify(created)).toBeUndefined();
    return { who, key, name: created.data.name as string };
  }

  async function whenSettled(c: { who: Who; key: string; name: string }, t0: number): Promise<{ rec: any; events: Event[] }> {
    let rec: any;
    for (;;) {
      rec = (await api(c.key, `/v1/instances/${c.name}`)).data;
      if (rec.status === "ready" || rec.status === "failed" || Date.now() - t0 > ALL_READY_MS) break;
      await new Promise((r) => setTimeout(r, 5_000));
    }
    const events = (await api(c.key, `/v1/instances/${c.name}/events`)).data.events as Event[];
    console.log(`${c.who} ${c.name}: ${rec.status} after ${Math.round((Date.now() - t0) / 1000)} s\n${events.map((e) => `  ${e.at} ${e.type} ${e.message}`).join("\n")}`);
    return { rec, events };
  }

  async function inspect(c: { who: Who; key: string; name: string }, rec: any): Promise<Vm> {
    const vm: Vm = { tenant: c.who, key: c.key, name: c.name, port: rec.ssh.port, ip: "", mac: "", dev: "" };
    // First contact records the host key: from here on only this key is accepted for this forward.
    const r = await ssh(vm, "DEV=$(ip -o route show default | awk '{print $5}'); echo DEV=$DEV; echo MAC=$(cat /sys/class/net/$DEV/address); ip -o -4 addr show dev $DEV", false);
    expect(r.code, r.out).toBe(0);
    vm.dev = /DEV=(\S+)/.exec(r.out)![1];
    vm.mac = /MAC=(\S+)/.exec(r.out)![1];
    vm.ip = /inet (\d+\.\d+\.\d+\.\d+)\//.exec(r.out)![1];
    return vm;
  }

  const neighbour = async (ip: string) => (await run("ip", ["-n", env.CVM_NETNS!, "neigh", "show", ip])).stdout.trim();
  const spoofed = async (vm: Vm) => {
    const { stdout } = await run("ip", ["netns", "exec", env.CVM_NETNS!, "nft", "-j", "list", "counters", "table", "netdev", "cvm_guard"]);
    const tap = `tap${Number(vm.ip.split(".")[3])}`;
    const c = (JSON.parse(stdout) as { nftables: Array<{ counter?: { name: string; packets: number } }> }).nftables.find((o) => o.counter?.name === `spoofed_${tap}`);
    expect(c, `no spoofed_${tap} counter`).toBeDefined();
    return c!.counter!.packets;
  };

  beforeAll(async () => {
    expect(existsSync(join(IMAGE_DIR, "manifest.json")), `no guest image at ${IMAGE_DIR}: run \`make image\``).toBe(true);
    host = vmHostEnv(data, IMAGE_DIR, `s${process.pid.toString(36)}`, 83);
    // The default deadlines and the default boot limit (half of this machine's 2 CPUs): what an operator gets.
    env = { ...host.env };
    cvmd = await startCvmd(env);
    const kp = sshKeyPair("ed25519");
    mkdirSync(home, { recursive: true, mode: 0o700 });
    writeFileSync(keyFile, kp.private, { mode: 0o600 });
    publicKey = kp.public;
  });

  afterAll(async () => {
    await cvmd?.kill("SIGTERM");
    const { stdout } = await execP("sqlite3", [join(data, "cvm.sqlite"), "SELECT id FROM instances"]).catch(() => ({ stdout: "" }));
    for (const id of stdout.split("\n").filter(Boolean)) {
      const pids = await execP("pgrep", ["-f", `qemu-system-x86_64.*${id}`]).then((r) => r.stdout.split("\n").filter(Boolean).map(Number), () => []);
      for (const pid of pids) process.kill(pid, "SIGKILL");
    }
    await host?.cleanup();
    dir.remove();
  });

  it("three creates at once all reach ready: boots queued one at a time, each one's wait and phases in its events", { timeout: ALL_READY_MS + 120_000 }, async () => {
    const t0 = Date.now();
    const created = await Promise.all((["victim", "attacker", "bystander"] as const).map((who) => create(who)));
    const settled = await Promise.all(created.map((c) => whenSettled(c, t0)));
    for (const { rec } of settled) expect(rec.status, JSON.stringify(rec)).toBe("ready");
    const queued = settled.filter(({ events }) => events.some((e) => e.type === "queued"));
    expect(queued.length).toBe(2);
    for (const { events } of settled) {
      const types = events.map((e) => e.type);
      const phases = types.indexOf("cold_start");
      expect(phases, types.join(",")).toBeGreaterThan(0);
      if (types.includes("queued")) {
        expect(types.indexOf("queued")).toBeLessThan(types.indexOf("dequeued"));
        expect(types.indexOf("dequeued")).toBeLessThan(phases);
      }
      // The boot's own phases follow: QEMU, the agent's setup, SSH.
      expect(types.slice(phases)).toEqual(expect.arrayContaining(["vm", "ssh"]));
    }
    for (const [i, c] of created.entries()) vms[c.who] = await inspect(c, settled[i]!.rec);
    expect(await neighbour(vms.victim!.ip)).toContain(`lladdr ${vms.victim!.mac}`);
  });

  it("the attacker claims the victim's IPv4, IPv6 and MAC as root: dropped, counted, the victim's SSH unaffected", { timeout: 10 * 60_000 }, async () => {
    const victim = vms.victim!;
    const attacker = vms.attacker!;
    const before = await spoofed(attacker);
    expect(await spoofed(victim)).toBe(0);
    const vll = linkLocalOf(victim.mac);
    const attack = [
      "set -x",
      `DEV=${attacker.dev}`,
      "GW=$(ip -o route show default | awk '{print $3}')",
      // ARP replies and announcements: "the victim's address is at my MAC".
      `ip addr add ${victim.ip}/32 dev $DEV`,
      `busybox arping -A -c 5 -w 6 -s ${victim.ip} -I $DEV $GW || true`,
      `busybox arping -U -c 5 -w 6 -s ${victim.ip} -I $DEV $GW || true`,
      `busybox ping -c 5 -W 1 -I ${victim.ip} $GW || true`,
      `ip addr del ${victim.ip}/32 dev $DEV`,
      // The victim's IPv6 link-local address.
      "sysctl -qw net.ipv6.conf.$DEV.disable_ipv6=0",
      `ip -6 addr add ${vll}/64 dev $DEV nodad`,
      "busybox ping6 -c 5 -W 1 -I $DEV ff02::1 || true",
      `ip -6 addr del ${vll}/64 dev $DEV`,
      "echo ATTACK-IP-DONE",
      // The victim's MAC: this very SSH session dies with it, so it runs detached and puts the MAC back itself.
      `setsid sh -c 'OWN=$(cat /sys/class/net/${attacker.dev}/address); ip link set dev ${attacker.dev} address ${victim.mac}; busybox ping -c 8 -W 1 '$GW' ; ip link set dev ${attacker.dev} address $OWN' >/dev/null 2>&1 < /dev/null &`,
      "",
    ].join("\n");
    const r = await ssh(attacker, "sudo sh -s", true, attack);
    console.log(r.out);
    expect(r.out).toContain("ATTACK-IP-DONE");

    // The MAC attack runs for ~10 s; meanwhile the victim must still be the one that answers its forward.
    const during = await ssh(victim, "echo victim-$(id -un)", true);
    expect(during.out).toContain("victim-azureuser");
    await new Promise((res) => setTimeout(res, 20_000));

    const after = await spoofed(attacker);
    console.log(`attacker's tap guard: ${after - before} frames dropped as spoofed`);
    expect(after - before).toBeGreaterThanOrEqual(5 + 5 + 5 + 5);
    expect(await spoofed(victim)).toBe(0);
    expect(await neighbour(victim.ip)).toContain(`lladdr ${victim.mac}`);
    const again = await ssh(victim, "echo victim-$(id -un)", true);
    expect(again.code, again.out).toBe(0);
    expect(again.out).toContain("victim-azureuser");
    // The attacker, honest again, still has its own SSH.
    const own = await ssh(attacker, "echo attacker-$(id -un)", true);
    expect(own.out).toContain("attacker-azureuser");
  });
});

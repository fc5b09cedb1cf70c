import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, test } from "vitest";
import { AgentLink, AgentRequestError, UnixSocketConnector, checkSshHostKey } from "../../host/link/index.js";
import type { Progress, Ready, SetupParams } from "../../shared/protocol/messages.js";
import { eventDigest } from "../../guest/attest/tdx-digests.js";
import { renderOpenClawConfig } from "../../guest/setup/openclaw.js";
import {
  agentArgs,
  buildAgent,
  killStandIn,
  makeGuestRoot,
  once,
  removeRoot,
  spawnAgent,
  startSshd,
  testLogger,
  type AgentProcess,
  type GuestRoot,
  type Sshd,
  sshExec,
} from "./helpers.js";
import { freePort } from "./helpers.js";
import { prerequisites } from "../support/prerequisites.js";

const missing = prerequisites("agent system tests", { root: true, files: ["/usr/sbin/sshd", "/usr/bin/ssh-keygen"] });

describe.skipIf(missing !== null)("cvm-agent process over a Unix socket, with a real sshd", () => {
  let root: GuestRoot;
  let sshd: Sshd;
  const agents: AgentProcess[] = [];
  const links: AgentLink[] = [];

  beforeAll(() => buildAgent());

  afterEach(async () => {
    for (const l of links.splice(0)) await l.close();
    for (const a of agents.splice(0)) await a.kill("SIGKILL");
    if (root) await killStandIn(root);
    if (sshd) await sshd.stop();
    if (root) await removeRoot(root);
  });

  async function setupFixture(readyDelayMs = 0) {
    root = await makeGuestRoot({ readyDelayMs });
    sshd = await startSshd(root);
    const sock = join(root.dir, "agent.sock");
    const ocPort = await freePort();
    const args = agentArgs(root, ["--unix", sock, "--openclaw-port", String(ocPort), "--no-egress"]);
    const params: SetupParams = {
      public_key: root.tenantKey.publicLine,
      agent: "openclaw",
      inference_model: "llama-3.1-8b",
      gateway_address: "http://10.0.2.2:8080/v1",
      instance_name: "abcd1234",
    };
    return { sock, ocPort, args, params };
  }

  function newLink(sock: string) {
    const link = new AgentLink({
      connector: new UnixSocketConnector(sock),
      logger: testLogger("link"),
      instanceId: "abcd1234",
      backoff: { initialMs: 50, maxMs: 500 },
      helloTimeoutMs: 3000,
    });
    links.push(link);
    return link;
  }

  test("hello → setup → ready; the tenant logs in with the injected key; host key and event log check out", async () => {
    const { sock, ocPort, args, params } = await setupFixture();
    const agent = spawnAgent(args, "happy");
    agents.push(agent);
    const link = newLink(sock);
    const progress: Progress[] = [];
    link.on("progress", (p) => progress.push(p));
    const hello = once<import("../../shared/protocol/messages.js").AgentHello>(link, "hello", 15_000);
    link.start();
    const h = await hello;
    expect(h.image_id).toBe("test-image-1");
    expect(h.state.phase).toBe("awaiting_setup");
    expect(h.boot_id).toBe((await readFile("/proc/sys/kernel/random/boot_id", "utf8")).trim());

    const ready = once<Ready>(link, "ready", 30_000);
    const heartbeat = once<import("../../shared/protocol/messages.js").Heartbeat>(link, "heartbeat", 10_000);
    await link.setup(params);
    const r = await ready;
    expect(r.ssh_host_keys).toEqual([root.hostKeyPub.split(" ").slice(0, 2).join(" ")]);
    expect(r.openclaw_version).toBe("2026.9.6");
    expect(r.node_version).toBe(process.version);
    expect(progress.map((p) => p.stage)).toEqual(["accepted", "ssh_key", "openclaw_verify", "openclaw_config", "openclaw_start", "sshd_check", "openclaw_ready"]);
    expect((await heartbeat).mem_total_bytes).toBeGreaterThan(0);

    // authorized_keys: content, 0600, dir 0700, owned by the user useradd created in the guest root.
    const passwd = await readFile(join(root.dir, "etc/passwd"), "utf8");
    const uid = Number(/^azureuser:x:(\d+):/m.exec(passwd)![1]);
    const ak = join(root.dir, "home/azureuser/.ssh/authorized_keys");
    expect((await readFile(ak, "utf8")).trim()).toBe(root.tenantKey.publicLine);
    const st = await stat(ak);
    expect(st.mode & 0o777).toBe(0o600);
    expect(st.uid).toBe(uid);
    expect((await stat(join(root.dir, "home/azureuser/.ssh"))).mode & 0o777).toBe(0o700);

    // OpenClaw config as specified, and the stand-in really serves /readyz.
    const cfgText = await readFile(join(root.dir, "home/azureuser/.openclaw/openclaw.json"), "utf8");
    const cfg = JSON.parse(cfgText);
    expect(cfg.models.providers.cvm).toEqual({
      baseUrl: "http://10.0.2.2:8080/v1",
      apiKey: "cvm-gateway",
      api: "openai-completions",
      models: [{ id: "llama-3.1-8b", name: "llama-3.1-8b" }],
    });
    expect(cfg.agents.defaults.model.primary).toBe("cvm/llama-3.1-8b");
    expect(cfg.gateway).toMatchObject({ mode: "local", bind: "loopback", port: ocPort });
    expect((await fetch(`http://127.0.0.1:${ocPort}/readyz`)).status).toBe(200);

    // RTMR3 event log: the three trust-changing steps, with digests the verifier can recompute.
    const log = JSON.parse(await readFile(join(root.dir, "run/cvm/rtmr3-events.json"), "utf8"));
    const fp = "SHA256:" + createHash("sha256").update(Buffer.from(root.tenantKey.publicLine.split(" ")[1]!, "base64")).digest("base64").replace(/=+$/, "");
    const cfgDigest = createHash("sha256").update(renderOpenClawConfig(params, ocPort)).digest("hex");
    expect(cfgDigest).toBe(createHash("sha256").update(cfgText).digest("hex"));
    expect(log).toEqual([
      { imr: 3, event_type: "ssh-authorized-key", event: fp, digest: eventDigest("ssh-authorized-key", fp).toString("hex") },
      { imr: 3, event_type: "openclaw-tree", event: root.treeDigest, digest: eventDigest("openclaw-tree", root.treeDigest).toString("hex") },
      { imr: 3, event_type: "openclaw-config", event: cfgDigest, digest: eventDigest("openclaw-config", cfgDigest).toString("hex") },
    ]);

    // The host-side check the lifecycle engine runs, against the real sshd.
    expect(await checkSshHostKey({ host: "127.0.0.1", port: sshd.port, expectedHostKeys: r.ssh_host_keys, timeoutMs: 10_000 })).toMatchObject({ ok: true });
    const other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIL0Kb7yP5r0aU3yq0gq9G3u6Wl7yC0m2x1E5o3zq0h7d";
    const bad = await checkSshHostKey({ host: "127.0.0.1", port: sshd.port, expectedHostKeys: [other], timeoutMs: 10_000 });
    expect(bad.ok).toBe(false);
    expect(bad.presented).toBe(r.ssh_host_keys[0]);

    // The tenant logs in with the private key matching the injected public key.
    expect(await sshExec(sshd.port, await readFile(root.tenantKey.privatePath), "echo cvm-login-ok")).toBe("cvm-login-ok\n");

    // No TDX here: an honest "unavailable", never a fabricated quote; the event log still comes back.
    const q = await link.quote(Buffer.alloc(32, 7));
    expect(q.available).toBe(false);
    if (!q.available) expect(q.reason).toMatch(/no TDX quote interface/);
    expect(q.event_log).toHaveLength(3);

    // Setup is accepted once per boot: identical again is fine, different is refused.
    await expect(link.setup(params)).resolves.toBeUndefined();
    await expect(link.setup({ ...params, inference_model: "other-model" })).rejects.toMatchObject({ code: "setup_conflict" } satisfies Partial<AgentRequestError>);
    expect(existsSync(join(root.dir, "run/cvm/agent-state.json"))).toBe(true);
  });

  test("a rejected key fails with ssh_key_rejected and nothing is written", async () => {
    const { sock, args, params } = await setupFixture();
    agents.push(spawnAgent(args, "badkey"));
    const link = newLink(sock);
    link.start();
    await once(link, "hello", 15_000);
    const failed = once<import("../../shared/protocol/messages.js").Failed>(link, "failed", 15_000);
    await link.setup({ ...params, public_key: "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC0 tenant@example" });
    expect((await failed).code).toBe("ssh_key_rejected");
    expect(existsSync(join(root.dir, "home/azureuser/.ssh/authorized_keys"))).toBe(false);
  });

  test("a tampered OpenClaw tree fails with openclaw_digest_mismatch", async () => {
    const { sock, args, params } = await setupFixture();
    const { appendFile } = await import("node:fs/promises");
    await appendFile(join(root.dir, "opt/openclaw/node_modules/openclaw/openclaw.mjs"), "\n// tampered\n");
    agents.push(spawnAgent(args, "tampered"));
    const link = newLink(sock);
    link.start();
    await once(link, "hello", 15_000);
    const failed = once<import("../../shared/protocol/messages.js").Failed>(link, "failed", 15_000);
    await link.setup(params);
    const f = await failed;
    expect(f.code).toBe("openclaw_digest_mismatch");
    expect(f.message).toMatch(/openclaw\.mjs/);
  });

  test("agent SIGKILLed mid-setup and restarted: the link reconnects and the instance reaches ready", async () => {
    const { sock, args, params } = await setupFixture(2500);
    const first = spawnAgent(args, "kill1");
    agents.push(first);
    const link = newLink(sock);
    const disconnected = once<string>(link, "disconnected", 30_000);
    link.start();
    await once(link, "hello", 15_000);
    const started = new Promise<void>((resolve) => link.on("progress", (p) => p.stage === "openclaw_start" && resolve()));
    await link.setup(params);
    await started; // OpenClaw (stand-in) started, not ready for another ~2.5 s
    first.proc.kill("SIGKILL");
    await first.exited;
    await disconnected;
    const pidBefore = await readFile(join(root.dir, "run/cvm/cvm-openclaw.pid"), "utf8");

    const hellos: import("../../shared/protocol/messages.js").AgentHello[] = [];
    link.on("hello", (h) => hellos.push(h));
    const ready = once<Ready>(link, "ready", 30_000);
    agents.push(spawnAgent(args, "kill2"));
    const r = await ready;
    expect(r.ssh_host_keys).toHaveLength(1);
    expect(hellos[0]!.state.phase).toMatch(/setting_up|ready/);
    // Re-running the steps did not start a second OpenClaw or log events twice.
    expect(await readFile(join(root.dir, "run/cvm/cvm-openclaw.pid"), "utf8")).toBe(pidBefore);
    const log = JSON.parse(await readFile(join(root.dir, "run/cvm/rtmr3-events.json"), "utf8"));
    expect(log.map((e: { event_type: string }) => e.event_type)).toEqual(["ssh-authorized-key", "openclaw-tree", "openclaw-config"]);
    expect(await sshExec(sshd.port, await readFile(root.tenantKey.privatePath), "echo again")).toBe("again\n");
  });

  test("the host link survives being closed and recreated (host restart) and learns the agent is ready from hello", async () => {
    const { sock, args, params } = await setupFixture();
    agents.push(spawnAgent(args, "hostrestart"));
    const link1 = newLink(sock);
    link1.start();
    await once(link1, "hello", 15_000);
    const ready = once<Ready>(link1, "ready", 30_000);
    await link1.setup(params);
    await ready;
    await link1.close();
    const link2 = newLink(sock);
    const hello = once<import("../../shared/protocol/messages.js").AgentHello>(link2, "hello", 15_000);
    const ready2 = once<Ready>(link2, "ready", 15_000);
    link2.start();
    const h = await hello;
    expect(h.state.phase).toBe("ready");
    expect(h.state.ready?.ssh_host_keys).toHaveLength(1);
    await ready2;
  });
});

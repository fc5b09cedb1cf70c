/**
 * The warm pool's claim against the REAL OpenClaw (the pinned tree the image build caches), run
 * natively: the agent prepares it with the neutral configuration, then the claim writes the tenant's
 * and must see OpenClaw apply it without a restart. The agent and OpenClaw run in a network
 * namespace that has only a loopback interface, so nothing OpenClaw tries can leave the machine.
 *
 * Needs root, ip(8), tar, the cached Node 24 (images/cache/node-*) and the cached OpenClaw tree
 * (images/cache/openclaw/<key>/tree.tar + listing, from images/build.sh); the tree is unpacked once
 * into the temp dir and hard-linked into each guest root. CVM_OPENCLAW_CACHE overrides the cache dir.
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { mkdir, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { AgentLink, UnixSocketConnector } from "../../host/link/index.js";
import type { Prepared, Progress, Ready, SetupParams } from "../../shared/protocol/messages.js";
import { renderOpenClawConfig } from "../../guest/setup/openclaw.js";
import { parseTreeListing } from "../../guest/setup/openclaw-tree.js";
import { run } from "../../shared/util/run.js";
import { REPO, agentArgs, buildAgent, killStandIn, makeGuestRoot, once, removeRoot, spawnAgent, testLogger, type AgentProcess, type GuestRoot } from "./helpers.js";
import { prerequisites } from "../support/prerequisites.js";

const IP = "/usr/sbin/ip";
const CACHE = process.env.CVM_OPENCLAW_CACHE ?? join(REPO, "images/cache");

function findNode(): string | null {
  if (!existsSync(CACHE)) return null;
  const d = readdirSync(CACHE).filter((n) => /^node-\d+\./.test(n)).sort().at(-1);
  return d && existsSync(join(CACHE, d, "bin/node")) ? join(CACHE, d, "bin/node") : null;
}

/** The newest cached tree whose listing this build can read. */
function findTree(): { key: string; tar: string; listing: string; digest: string } | null {
  const dir = join(CACHE, "openclaw");
  if (!existsSync(dir)) return null;
  const keys = readdirSync(dir).filter((k) => existsSync(join(dir, k, "tree.tar")) && existsSync(join(dir, k, "listing")) && existsSync(join(dir, k, "digest")));
  keys.sort((a, b) => statSync(join(dir, b, "tree.tar")).mtimeMs - statSync(join(dir, a, "tree.tar")).mtimeMs);
  for (const key of keys) {
    const listing = readFileSync(join(dir, key, "listing"), "utf8");
    try {
      parseTreeListing(listing);
    } catch {
      continue;
    }
    return { key, tar: join(dir, key, "tree.tar"), listing, digest: readFileSync(join(dir, key, "digest"), "utf8").trim() };
  }
  return null;
}

const node = findNode();
const tree = findTree();
// The Node runtime and the OpenClaw tree are what images/build.sh caches, which `make test` runs first.
const missing = prerequisites("real OpenClaw warm claim test", {
  root: true,
  files: [IP],
  other: !node ? `no cached Node runtime under ${CACHE} (run images/build.sh)` : !tree ? `no cached OpenClaw tree under ${CACHE}/openclaw (run images/build.sh)` : null,
});

const NS = `cvmt-oc-${process.pid % 100000}`;

describe.skipIf(missing !== null)("warm claim against the real OpenClaw (native, loopback-only netns)", () => {
  let root: GuestRoot;
  let agent: AgentProcess | undefined;
  let portHolder: ChildProcess | undefined;

  beforeAll(async () => {
    buildAgent();
    const unpacked = join(tmpdir(), `cvm-openclaw-tree-${tree!.key}`);
    if (!existsSync(join(unpacked, ".complete"))) {
      await rm(unpacked, { recursive: true, force: true });
      await mkdir(join(unpacked, "tree"), { recursive: true });
      await run("tar", ["-C", join(unpacked, "tree"), "-xf", tree!.tar], { timeoutMs: 300_000 });
      await writeFile(join(unpacked, ".complete"), "");
    }
    root = await makeGuestRoot();
    // Replace the stand-in with the real tree (hard links: cheap, same bytes) and the real Node.
    await rm(join(root.dir, "opt/openclaw"), { recursive: true, force: true });
    await run("cp", ["-al", join(unpacked, "tree"), join(root.dir, "opt/openclaw")], { timeoutMs: 300_000 });
    await rm(join(root.dir, "opt/node/bin/node"));
    await symlink(node!, join(root.dir, "opt/node/bin/node"));
    await writeFile(join(root.dir, "usr/share/cvm/openclaw.listing"), tree!.listing);
    const manifest = JSON.parse(await readFile(join(root.dir, "etc/cvm/openclaw.json"), "utf8"));
    manifest.tree_digest = tree!.digest;
    await writeFile(join(root.dir, "etc/cvm/openclaw.json"), JSON.stringify(manifest, null, 2));

    await run(IP, ["netns", "del", NS]).catch(() => undefined);
    await run(IP, ["netns", "add", NS]);
    await run(IP, ["-n", NS, "link", "set", "lo", "up"]);
  }, 600_000);

  afterAll(async () => {
    await agent?.kill("SIGKILL");
    portHolder?.kill("SIGKILL");
    if (root) {
      // OpenClaw runs detached under the direct service manager; its pid file names it.
      await killStandIn(root);
      await new Promise((r) => setTimeout(r, 1000));
      await removeRoot(root);
    }
    await run(IP, ["netns", "del", NS]).catch(() => undefined);
  });

  test("prepare starts OpenClaw with the neutral config; the claim's config is hot-reloaded by the same process", async () => {
    const sock = join(root.dir, "agent.sock");
    const ocPort = 18789;
    const sshPort = 2222;
    // The agent's sshd check only needs a listener in its namespace; SSH login is covered with a real sshd elsewhere.
    portHolder = spawn(IP, ["netns", "exec", NS, process.execPath, "-e", `require("node:net").createServer((s)=>s.end("SSH-2.0-port-holder\\r\\n")).listen(${sshPort},"127.0.0.1")`], { stdio: "ignore" });
    const args = agentArgs(root, [
      "--unix", sock,
      "--openclaw-port", String(ocPort),
      "--sshd-port", String(sshPort),
      "--no-egress",
      "--no-gateway",
      "--openclaw-verify", "spot",
      "--openclaw-ready-timeout-ms", "240000",
      "--openclaw-reload-timeout-ms", "60000",
    ]);
    // Run the agent (and so OpenClaw) inside the loopback-only namespace.
    agent = spawnAgent(args, "real-openclaw", [IP, "netns", "exec", NS]);

    const link = new AgentLink({ connector: new UnixSocketConnector(sock), logger: testLogger("link"), instanceId: "real0001", backoff: { initialMs: 100, maxMs: 1000 }, helloTimeoutMs: 5000, idleTimeoutMs: 120_000, requestTimeoutMs: 60_000 });
    const progress: Array<Progress & { at: number }> = [];
    link.on("progress", (p) => progress.push({ ...p, at: performance.now() }));
    link.start();
    try {
      const prepared = once<Prepared>(link, "prepared", 300_000);
      const t0 = performance.now();
      await link.prepare();
      const p = await prepared;
      const prepareMs = performance.now() - t0;
      const pid = Number((await readFile(join(root.dir, "run/cvm/cvm-openclaw.pid"), "utf8")).split("\n")[0]);

      const params: SetupParams = {
        public_key: root.tenantKey.publicLine,
        agent: "openclaw",
        inference_model: "llama-3.1-8b",
        gateway_address: "http://127.0.0.1:18790/v1",
        instance_name: "real0001",
      };
      progress.length = 0;
      const ready = once<Ready>(link, "ready", 120_000);
      const t1 = performance.now();
      await link.setup(params);
      const r = await ready;
      const claimMs = performance.now() - t1;
      const written = progress.find((x) => x.stage === "openclaw_config")!;
      const reloaded = progress.find((x) => x.stage === "openclaw_reload");
      expect(reloaded, JSON.stringify(progress)).toBeDefined();
      console.log(
        `real OpenClaw ${p.openclaw_version} on node ${p.node_version}: prepare ${Math.round(prepareMs)} ms (agent: ${p.prepare_ms} ms); ` +
          `claim setup→ready ${Math.round(claimMs)} ms; config written→hot reload confirmed ${Math.round(reloaded!.at - written.at)} ms; ` +
          `stages ${progress.map((x) => x.stage).join(" → ")}; ${reloaded!.message}`,
      );
      expect(r.openclaw_version).toBe(p.openclaw_version);
      expect(reloaded!.message).toMatch(/agents\.defaults\.model/);
      expect(reloaded!.message).toMatch(/models/);
      expect(Number((await readFile(join(root.dir, "run/cvm/cvm-openclaw.pid"), "utf8")).split("\n")[0])).toBe(pid);
      process.kill(pid, 0);
      expect(await readFile(join(root.dir, "home/azureuser/.openclaw/openclaw.json"), "utf8")).toBe(renderOpenClawConfig(params, ocPort));
      const log = await readFile(join(root.dir, "run/cvm/cvm-openclaw.log"), "utf8");
      expect(log).not.toMatch(/requires gateway restart|received SIGUSR/);
      const strip = (l: string) => l.replace(/\x1b\[[0-9;]*m/g, "");
      console.log("OpenClaw reload/catalog lines:\n" + log.split("\n").map(strip).filter((l) => /\[reload\]|catalog|agent model/.test(l)).join("\n"));
      const readyz = execFileSync(IP, ["netns", "exec", NS, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", `http://127.0.0.1:${ocPort}/readyz`]).toString();
      expect(readyz).toBe("200");
    } finally {
      await link.close();
    }
  }, 600_000);
});

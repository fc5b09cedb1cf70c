import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { createConnection } from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { AgentLink, UnixSocketConnector } from "../../host/link/index.js";
import { encodeMessage } from "../../shared/protocol/codec.js";
import type { AgentHello, Heartbeat } from "../../shared/protocol/messages.js";
import { agentArgs, buildAgent, makeGuestRoot, once, removeRoot, spawnAgent, testLogger, type AgentProcess, type GuestRoot } from "./helpers.js";
import { prerequisites } from "../support/prerequisites.js";

const SOCAT = "/usr/bin/socat";
const missing = prerequisites("virtio-serial emulation test", { files: [SOCAT] });

/*
 * QEMU's virtio-serial port is, on the guest side, a character device the agent keeps open, and on the
 * host side a per-instance chardev Unix socket that host connections come and go on. socat reproduces
 * exactly that shape here: a pseudo-terminal (raw, no echo) as the guest's device, and a forking
 * UNIX-LISTEN as the chardev socket, every connection sharing the one device.
 */
describe.skipIf(missing !== null)("virtio-serial transport (emulated with a raw pty + chardev-style socket)", () => {
  let root: GuestRoot;
  let socat: ChildProcess;
  let agent: AgentProcess;
  let devPath: string;
  let chardev: string;

  beforeAll(async () => {
    buildAgent();
    root = await makeGuestRoot();
    devPath = join(root.dir, "virtio-port");
    chardev = join(root.dir, "chardev.sock");
    // -t 0.05: a forked child whose client left must exit at once; socat's default 0.5 s linger would
    // let it keep reading the shared pty and swallow bytes meant for the next client (QEMU's chardev
    // has no such second reader).
    socat = spawn(SOCAT, ["-d", "-d", "-t", "0.05", `PTY,link=${devPath},raw,echo=0`, `UNIX-LISTEN:${chardev},fork`], { stdio: ["ignore", "ignore", "pipe"] });
    for (let i = 0; i < 100 && !(existsSync(devPath) && existsSync(chardev)); i++) await new Promise((r) => setTimeout(r, 50));
    agent = spawnAgent(agentArgs(root, ["--virtio-port", devPath, "--no-egress", "--heartbeat-ms", "300"]), "virtio");
  });

  afterAll(async () => {
    await agent?.kill("SIGKILL");
    socat?.kill("SIGTERM");
    if (root) await removeRoot(root);
  });

  function link(id: string) {
    return new AgentLink({
      connector: new UnixSocketConnector(chardev),
      logger: testLogger(id),
      instanceId: id,
      backoff: { initialMs: 50, maxMs: 300 },
      helloTimeoutMs: 2000,
    });
  }

  test("hello, quote and heartbeats over the port; a new host after a torn frame is answered at once", async () => {
    const l1 = link("virtio-1");
    const hello1 = once<AgentHello>(l1, "hello", 15_000);
    l1.start();
    expect((await hello1).image_id).toBe("test-image-1");
    const q = await l1.quote(Buffer.alloc(32, 1));
    expect(q.available).toBe(false);
    await once<Heartbeat>(l1, "heartbeat", 5000);
    await l1.close();

    // A host connection that dies mid-frame: hello, then the first half of a setup frame.
    const raw = createConnection(chardev);
    await new Promise<void>((r) => raw.once("connect", () => r()));
    raw.write(encodeMessage({ type: "hello", id: 99, body: { versions: [1], host_version: "doomed" } }));
    const setup = encodeMessage({
      type: "setup",
      id: 100,
      body: { public_key: root.tenantKey.publicLine, agent: "openclaw", inference_model: "m", gateway_address: "http://10.0.2.2/v1", instance_name: "abcd1234" },
    });
    raw.write(setup.subarray(0, Math.floor(setup.length / 2)));
    await new Promise((r) => setTimeout(r, 300));
    raw.destroy();
    await new Promise((r) => setTimeout(r, 200)); // its socat child is gone (see -t above)

    // The next host gets its hello answered without waiting for the torn frame's missing bytes,
    // and the stale replies meant for the dead connection do not confuse it.
    const l2 = link("virtio-2");
    const t0 = Date.now();
    const hello2 = once<AgentHello>(l2, "hello", 5000);
    let disconnects = 0;
    l2.on("disconnected", () => disconnects++);
    l2.start();
    const h2 = await hello2;
    expect(Date.now() - t0).toBeLessThan(3000);
    expect(h2.state.phase).toBe("awaiting_setup"); // the torn setup was never applied
    await once<Heartbeat>(l2, "heartbeat", 5000);
    expect((await l2.quote(Buffer.alloc(32, 2))).available).toBe(false);
    expect(disconnects).toBe(0);
    await l2.close();
    expect(agent.proc.exitCode).toBeNull();
  });
});

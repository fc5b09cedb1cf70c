/** Fixtures for the gateway tests and benchmark: a real cvm-agent process on a Unix socket, linked by a real AgentLink. */
import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AgentLink, UnixSocketConnector } from "../../host/link/index.js";
import type { GatewayHandler } from "../../host/link/gateway-streams.js";
import { buildAgent, freePort, spawnAgent, testLogger, type AgentProcess } from "../agent/helpers.js";

export interface Guest {
  /** The agent's loopback gateway, as OpenClaw inside the guest would call it. */
  gatewayUrl: string;
  agent: AgentProcess;
  link: AgentLink;
  stop(): Promise<void>;
}

/**
 * Starts the agent with a throwaway root (the gateway needs no setup, sshd or OpenClaw) and links it.
 * The handler is bound to the link here, exactly as the driver binds it per instance.
 */
export async function startGuest(name: string, handler: GatewayHandler | null): Promise<Guest> {
  buildAgent();
  const dir = await mkdtemp(join(tmpdir(), `cvm-gw-guest-${name}-`));
  await writeFile(join(dir, "cmdline"), "console=ttyS0 cvm.image=gateway-test quiet\n");
  const sock = join(dir, "agent.sock");
  const port = await freePort();
  const agent = spawnAgent(
    ["--root", dir, "--cmdline", join(dir, "cmdline"), "--unix", sock, "--no-egress", "--service-manager", "direct", "--heartbeat-ms", "1000", "--gateway-port", String(port)],
    `gateway-${name}`,
  );
  for (let i = 0; i < 200 && !existsSync(sock); i++) {
    if (agent.proc.exitCode !== null) throw new Error(`agent ${name} exited early; see ${agent.logPath}`);
    await new Promise((r) => setTimeout(r, 25));
  }
  const link = new AgentLink({ connector: new UnixSocketConnector(sock), logger: testLogger(`link-${name}`), instanceId: name, backoff: { initialMs: 20, maxMs: 200 } });
  link.onGatewayRequest(handler);
  const connected = new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`agent ${name} never said hello; see ${agent.logPath}`)), 20_000);
    link.once("connected", () => {
      clearTimeout(t);
      resolve();
    });
  });
  link.start();
  await connected;
  if ((link.hello?.version ?? 0) < 2) throw new Error(`agent ${name} negotiated protocol ${link.hello?.version}`);
  return {
    gatewayUrl: `http://127.0.0.1:${port}/v1`,
    agent,
    link,
    stop: async () => {
      await link.close();
      await agent.kill("SIGKILL");
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Reads an SSE response as it arrives: each `data:` payload with the time it was received. */
export async function readSse(res: Response): Promise<Array<{ data: string; at: number }>> {
  const out: Array<{ data: string; at: number }> = [];
  const reader = res.body!.getReader();
  const dec = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let i: number;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const ev = buf.slice(0, i);
      buf = buf.slice(i + 2);
      for (const line of ev.split("\n")) if (line.startsWith("data: ")) out.push({ data: line.slice(6), at: performance.now() });
    }
  }
  return out;
}

import { join } from "node:path";
import { expect, test } from "vitest";
import { AgentLink, UnixSocketConnector } from "../host/link/index.js";
import type { Ready } from "../shared/protocol/messages.js";
import {
  agentArgs,
  buildAgent,
  freePort,
  killStandIn,
  makeGuestRoot,
  once,
  removeRoot,
  spawnAgent,
  startSshd,
  testLogger,
} from "../test/agent/helpers.js";

/*
 * setup → ready with the real agent process, a real sshd and the OpenClaw stand-in (which is ready as
 * soon as it listens). Measures the agent's own work: user creation, key write, tree verification,
 * config, service start, readiness probes. Real OpenClaw start-up time is not included.
 */
const RUNS = Number(process.env.CVM_BENCH_RUNS ?? 8);

test("agent setup → ready", async () => {
  buildAgent();
  const helloMs: number[] = [];
  const readyMs: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const root = await makeGuestRoot();
    const sshd = await startSshd(root);
    const sock = join(root.dir, "agent.sock");
    const agent = spawnAgent(agentArgs(root, ["--unix", sock, "--openclaw-port", String(await freePort()), "--no-egress"]), `bench-${i}`);
    const link = new AgentLink({ connector: new UnixSocketConnector(sock), logger: testLogger("bench"), instanceId: `bench${i}`, backoff: { initialMs: 20, maxMs: 100 } });
    try {
      const t0 = performance.now();
      const hello = once(link, "hello", 30_000);
      link.start();
      await hello;
      const t1 = performance.now();
      const ready = once<Ready>(link, "ready", 60_000);
      await link.setup({
        public_key: root.tenantKey.publicLine,
        agent: "openclaw",
        inference_model: "bench-model",
        gateway_address: "http://10.0.2.2:8080/v1",
        instance_name: `bench${String(i).padStart(3, "0")}`,
      });
      await ready;
      const t2 = performance.now();
      helloMs.push(t1 - t0);
      readyMs.push(t2 - t1);
    } finally {
      await link.close();
      await agent.kill("SIGKILL");
      await killStandIn(root);
      await sshd.stop();
      await removeRoot(root);
    }
  }
  const stats = (xs: number[]) => {
    const s = [...xs].sort((a, b) => a - b);
    return `min ${s[0]!.toFixed(1)} ms, median ${s[Math.floor(s.length / 2)]!.toFixed(1)} ms, max ${s[s.length - 1]!.toFixed(1)} ms`;
  };
  console.log(`agent-setup: ${RUNS} runs (agent process start + connect → hello): ${stats(helloMs)}`);
  console.log(`agent-setup: ${RUNS} runs (setup sent → ready received): ${stats(readyMs)}`);
  expect(readyMs).toHaveLength(RUNS);
});

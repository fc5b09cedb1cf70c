import { spawn } from "node:child_process";
import autocannon from "autocannon";
import { test } from "vitest";
import { tempDir } from "../test/support/daemon.js";
import { cvmctl, startCvmd, tsEntry } from "../test/support/processes.js";
import { sshKeyPair } from "../test/support/ssh-keys.js";

const DURATION_S = Number(process.env.BENCH_DURATION_S ?? 8);
const CONNECTIONS = 10;

function startBare(): Promise<{ url: string; stop(): void }> {
  const child = spawn(process.execPath, tsEntry("bench/support/bare-koa.ts"), { stdio: ["ignore", "pipe", "inherit"] });
  return new Promise((resolve, reject) => {
    child.stdout.once("data", (c: Buffer) => {
      const { port } = JSON.parse(c.toString()) as { port: number };
      resolve({ url: `http://127.0.0.1:${port}`, stop: () => child.kill("SIGTERM") });
    });
    child.once("exit", (code) => reject(new Error(`bare koa exited ${code}`)));
  });
}

async function load(opts: autocannon.Options): Promise<{ rps: number; p99: number; non2xx: number; errors: number }> {
  const r = await autocannon({ connections: CONNECTIONS, duration: DURATION_S, ...opts });
  return { rps: r.requests.average, p99: r.latency.p99, non2xx: r.non2xx, errors: r.errors };
}

test("API throughput: cvmd vs a bare Koa handler, same run", async () => {
  const dir = tempDir("cvm-bench-");
  const env = { CVM_DATA_DIR: dir.path, CVM_DRIVER: "none", CVM_LOG_LEVEL: "info", CVM_RATE_LIMIT: "0" };
  const cvmd = await startCvmd(env);
  const bare = await startBare();
  try {
    const { api_key: key } = JSON.parse((await cvmctl(["tenant", "create", "bench", "--json"], env)).stdout) as { api_key: string };
    const pub = sshKeyPair("ed25519").public;
    const body = JSON.stringify({ public_key: pub });
    const created = (await (await fetch(`${cvmd.url}/v1/instances`, { method: "POST", headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json" }, body })).json()) as { data: { name: string } };
    if (!created.data) throw new Error(`create failed: ${JSON.stringify(created)}`);
    const name = created.data.name;
    const auth = { Authorization: `Bearer ${key}` };

    // Warm both servers' JIT before measuring.
    await autocannon({ url: `${cvmd.url}/v1/instances/${name}`, headers: auth, connections: 4, amount: 2000 });
    await autocannon({ url: `${bare.url}/v1/instances/${name}`, connections: 4, amount: 2000 });

    const getBare = await load({ url: `${bare.url}/v1/instances/${name}` });
    const getCvmd = await load({ url: `${cvmd.url}/v1/instances/${name}`, headers: auth });
    const postBare = await load({ url: `${bare.url}/v1/instances`, method: "POST", headers: { "Content-Type": "application/json" }, body });
    const postCvmd = await load({ url: `${cvmd.url}/v1/instances`, method: "POST", headers: { ...auth, "Content-Type": "application/json" }, body });

    const row = (label: string, a: Awaited<ReturnType<typeof load>>, b: Awaited<ReturnType<typeof load>>) =>
      `${label.padEnd(28)} cvmd ${a.rps.toFixed(0).padStart(6)} req/s p99 ${String(a.p99).padStart(4)} ms | bare koa ${b.rps.toFixed(0).padStart(6)} req/s p99 ${String(b.p99).padStart(4)} ms | ratio ${((a.rps / b.rps) * 100).toFixed(1)}%  (cvmd non-2xx ${a.non2xx}, errors ${a.errors})`;
    console.log(`\nAPI benchmark: ${CONNECTIONS} connections, ${DURATION_S} s each, autocannon, loopback`);
    console.log(row("GET /v1/instances/{name}", getCvmd, getBare));
    console.log(row("POST /v1/instances", postCvmd, postBare));
    console.log(`target: authenticated GET ≥ 50% of bare → ${getCvmd.rps / getBare.rps >= 0.5 ? "met" : "NOT met"}`);
  } finally {
    bare.stop();
    await cvmd.kill("SIGTERM");
    dir.remove();
  }
});

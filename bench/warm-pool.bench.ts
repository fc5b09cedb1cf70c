import { existsSync } from "node:fs";
import { join } from "node:path";
import { test } from "vitest";
import { tempDir } from "../test/support/daemon.js";
import { cvmctl, startCvmd } from "../test/support/processes.js";
import { sshKeyPair } from "../test/support/ssh-keys.js";
import { vmHostEnv } from "../test/support/vm-host.js";

const ROOT = new URL("../", import.meta.url).pathname;
const IMAGE_DIR = process.env.CVM_E2E_IMAGE_DIR ?? join(ROOT, "images/out/current");
const RUNS = Number(process.env.BENCH_VM_RUNS ?? 3);
const LIMIT_MS = 20 * 60_000;

interface Ev {
  at: string;
  type: string;
  message: string;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/**
 * Create → ready from the warm pool next to a cold start, in one cvmd and one run, one VM at a
 * time (under TCG on 2 cores a second guest would slow the first). Each row lists the instance's
 * events as seconds since its creation (the event clock has 1 s resolution).
 */
// Each row is printed as soon as it is measured, so a run cut short still reports what it had.
test("warm claim vs cold start, create → ready, with phases", { timeout: 120 * 60_000 }, async () => {
  if (!existsSync(join(IMAGE_DIR, "manifest.json"))) throw new Error(`no image at ${IMAGE_DIR}: run make image`);
  const dir = tempDir("cvmpoolbench-");
  const host = vmHostEnv(join(dir.path, "d"), IMAGE_DIR, `p${process.pid.toString(36)}`, 82);
  const env = { ...host.env, CVM_WARM_POOL_SIZE: "0", CVM_WARM_POOL_REFILL_SECONDS: "5" };
  const cvmd = await startCvmd(env);
  try {
    const created = await cvmctl(["tenant", "create", "bench", "--json"], env);
    if (created.code !== 0) throw new Error(`cvmctl tenant create: exit ${created.code}: ${created.stderr}`);
    const key = JSON.parse(created.stdout).api_key as string;
    const auth = { Authorization: `Bearer ${key}` };
    const get = async (path: string) => ((await (await fetch(cvmd.url + path, { headers: auth })).json()) as { data: any }).data;

    async function once(): Promise<{ total: number; phases: string; kind: string }> {
      const t0 = performance.now();
      const res = await fetch(`${cvmd.url}/v1/instances`, { method: "POST", headers: { ...auth, "Content-Type": "application/json" }, body: JSON.stringify({ public_key: sshKeyPair("ed25519").public }) });
      const { name } = ((await res.json()) as { data: { name: string } }).data;
      let status = "provisioning";
      while (status === "provisioning" && performance.now() - t0 < LIMIT_MS) {
        await new Promise((r) => setTimeout(r, 250));
        status = (await get(`/v1/instances/${name}`)).status;
      }
      const total = (performance.now() - t0) / 1000;
      if (status !== "ready") throw new Error(`${name} ended ${status}`);
      const events = (await get(`/v1/instances/${name}/events`)).events as Ev[];
      const created = Date.parse(events[0]!.at);
      const phases = events
        .slice(1)
        .filter((e) => e.type !== "status" || e.message.startsWith("guest ready"))
        .map((e) => `${((Date.parse(e.at) - created) / 1000).toFixed(0)}s ${e.type}:${e.message.split(/[:(]/)[0]!.trim().slice(0, 40)}`)
        .join(" | ");
      await fetch(`${cvmd.url}/v1/instances/${name}`, { method: "DELETE", headers: auth });
      return { total, phases, kind: events.some((e) => e.type === "claim") ? "warm" : "cold" };
    }

    const cold: number[] = [];
    const warm: number[] = [];
    const rows: string[] = [];
    for (let i = 0; i < RUNS; i++) {
      const r = await once();
      if (r.kind !== "cold") throw new Error("expected a cold start with an empty pool");
      cold.push(r.total);
      rows.push(`cold ${i + 1}: ready ${r.total.toFixed(1).padStart(6)} s  ${r.phases}`);
      console.log(rows.at(-1));
    }
    await cvmctl(["pool", "resize", "1"], env);
    for (let i = 0; i < RUNS; i++) {
      // Not timed: the pool guest boots and prepares ahead of the tenant.
      const t = performance.now();
      for (;;) {
        const s = JSON.parse((await cvmctl(["pool", "--json"], env)).stdout) as { images: Array<{ current: boolean; warm: number }> };
        if ((s.images.find((x) => x.current)?.warm ?? 0) >= 1) break;
        if (performance.now() - t > LIMIT_MS) throw new Error("the pool did not warm up");
        await new Promise((r) => setTimeout(r, 2000));
      }
      const prepared = (performance.now() - t) / 1000;
      const r = await once();
      if (r.kind !== "warm") throw new Error("expected a warm claim");
      warm.push(r.total);
      rows.push(`warm ${i + 1}: ready ${r.total.toFixed(1).padStart(6)} s  (pool guest warm after ${prepared.toFixed(0)} s of waiting)  ${r.phases}`);
      console.log(rows.at(-1));
    }
    console.log(`\nwarm pool vs cold start, create → ready, plain profile, ${process.env.CVM_ACCEL ?? "auto"} accel (TCG here), ${RUNS} runs each, one VM at a time`);
    for (const r of rows) console.log(r);
    const mc = median(cold);
    const mw = median(warm);
    console.log(`median cold ${mc.toFixed(1)} s, median warm ${mw.toFixed(1)} s: warm = ${((mw / mc) * 100).toFixed(1)}% of cold (target < 10%)`);
  } finally {
    await cvmctl(["pool", "resize", "0"], env).catch(() => undefined);
    await cvmd.kill("SIGTERM");
    await host.cleanup();
    dir.remove();
  }
});

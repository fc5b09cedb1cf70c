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

interface Ev {
  at: string;
  type: string;
  message: string;
}

/** Seconds from instance creation to the first event whose message matches. */
function phaseAt(events: Ev[], created: number, re: RegExp): number | null {
  const e = events.find((x) => re.test(`${x.type} ${x.message}`));
  return e ? (Date.parse(e.at) - created) / 1000 : null;
}

test("create → ready under TCG, median of runs, with boot phases", async () => {
  if (!existsSync(join(IMAGE_DIR, "manifest.json"))) throw new Error(`no image at ${IMAGE_DIR}: run make image`);
  const dir = tempDir("cvmbench-");
  const host = vmHostEnv(join(dir.path, "d"), IMAGE_DIR, `b${process.pid.toString(36)}`, 81);
  const cvmd = await startCvmd(host.env);
  try {
    const key = JSON.parse((await cvmctl(["tenant", "create", "bench", "--json"], host.env)).stdout).api_key as string;
    const auth = { Authorization: `Bearer ${key}` };
    const rows: string[] = [];
    const totals: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const t0 = performance.now();
      const res = await fetch(`${cvmd.url}/v1/instances`, {
        method: "POST",
        headers: { ...auth, "Content-Type": "application/json" },
        body: JSON.stringify({ public_key: sshKeyPair("ed25519").public }),
      });
      const { data } = (await res.json()) as { data: { name: string; created_at: string } };
      let status = "provisioning";
      while (status === "provisioning" && performance.now() - t0 < 20 * 60_000) {
        await new Promise((r) => setTimeout(r, 1000));
        status = ((await (await fetch(`${cvmd.url}/v1/instances/${data.name}`, { headers: auth })).json()) as { data: { status: string } }).data.status;
      }
      const total = (performance.now() - t0) / 1000;
      if (status !== "ready") throw new Error(`run ${i + 1}: instance ended ${status}`);
      totals.push(total);
      const events = ((await (await fetch(`${cvmd.url}/v1/instances/${data.name}/events`, { headers: auth })).json()) as { data: { events: Ev[] } }).data.events;
      const created = Date.parse(events[0]!.at);
      const p = (re: RegExp) => phaseAt(events, created, re)?.toFixed(0).padStart(4) ?? "   -";
      rows.push(
        `run ${i + 1}: ready ${total.toFixed(1).padStart(6)} s | qemu ${p(/^vm QEMU running/)} kernel ${p(/^boot kernel/)} rootfs/systemd ${p(/^boot systemd/)} multi-user ${p(/^boot multi-user/)} agent hello ${p(/^agent /)} setup accepted ${p(/^setup accepted/)} openclaw started ${p(/openclaw_start/)} agent ready ${p(/^setup agent ready/)} ssh ok ${p(/^ssh /)}  (s since create, event clock 1 s resolution)`,
      );
      await fetch(`${cvmd.url}/v1/instances/${data.name}`, { method: "DELETE", headers: auth });
    }
    const sorted = [...totals].sort((a, b) => a - b);
    console.log(`\nVM create → ready, plain profile, ${process.env.CVM_ACCEL ?? "auto"} accel (TCG here), ${RUNS} runs, one at a time`);
    for (const r of rows) console.log(r);
    console.log(`median create → ready: ${sorted[Math.floor(sorted.length / 2)]!.toFixed(1)} s (min ${sorted[0]!.toFixed(1)}, max ${sorted.at(-1)!.toFixed(1)})`);
  } finally {
    await cvmd.kill("SIGTERM");
    await host.cleanup();
    dir.remove();
  }
});

import { afterAll, describe, expect, it } from "vitest";
import { tempDir } from "../support/daemon.js";
import { cvmctl, startCvmd } from "../support/processes.js";

describe("cvmctl against the data dir of a running cvmd", () => {
  const dir = tempDir();
  const env = { CVM_DATA_DIR: dir.path, CVM_DRIVER: "none" };
  afterAll(() => dir.remove());

  it("creates tenants and keys, lists without secrets, revokes", async () => {
    const daemon = await startCvmd(env);
    try {
      const t = await cvmctl(["tenant", "create", "acme", "--json"], env);
      expect(t.code).toBe(0);
      const out = JSON.parse(t.stdout);
      expect(Object.keys(out).sort()).toEqual(["api_key", "slug"]);
      expect(out.slug).toBe("acme");
      expect(out.api_key).toMatch(/^ca_[a-z0-9]{8}_[a-z0-9]{18}$/);
      expect((await fetch(`${daemon.url}/v1/usage`, { headers: { Authorization: `Bearer ${out.api_key}` } })).status).toBe(200);

      expect((await cvmctl(["tenant", "create", "acme"], env)).code).toBe(1);
      const bad = await cvmctl(["tenant", "create", "Not_A_Label"], env);
      expect(bad.code).toBe(1);
      expect(bad.stderr).toMatch(/lowercase DNS label/);

      const k2 = await cvmctl(["key", "create", "acme"], env);
      expect(k2.stdout).toMatch(/ca_[a-z0-9]{8}_[a-z0-9]{18}/);
      const list = await cvmctl(["key", "list", "acme"], env);
      const secret1 = out.api_key.split("_")[2];
      expect(list.stdout).toContain(out.api_key.split("_")[1]);
      expect(list.stdout).not.toContain(secret1);
      expect(list.stdout.trim().split("\n")).toHaveLength(3);

      const rev = await cvmctl(["key", "revoke", out.api_key.split("_")[1]], env);
      expect(rev.code).toBe(0);
      expect((await fetch(`${daemon.url}/v1/usage`, { headers: { Authorization: `Bearer ${out.api_key}` } })).status).toBe(401);

      const tl = await cvmctl(["tenant", "list", "--json"], env);
      expect(JSON.parse(tl.stdout).map((x: { slug: string }) => x.slug)).toEqual(["acme"]);
      expect((await cvmctl(["instances"], env)).code).toBe(0);
      expect((await cvmctl(["frobnicate"], env)).code).toBe(2);
    } finally {
      await daemon.kill();
    }
  });

  it("as a process: a flag the command does not take exits 2 with one line, and per-command help exits 0", async () => {
    const bad = await cvmctl(["tenant", "list", "--raw"], env);
    expect(bad.code).toBe(2);
    expect(bad.stdout).toBe("");
    expect(bad.stderr).toBe("cvmctl tenant list: unknown option '--raw' (an option of 'console'); see 'cvmctl help tenant list'\n");
    const help = await cvmctl(["help", "instances"], env);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^Usage: cvmctl instances \[--tenant SLUG\] \[--json\]\n/);
    expect(help.stdout).not.toContain("--raw");
  });

  it("bad configuration stops cvmd with one clear line", async () => {
    const err = await startCvmd({ ...env, CVM_LISTEN: "nowhere" }).catch((e: Error) => e.message);
    expect(err).toMatch(/CVM_LISTEN=nowhere: expected host:port/);
  });
});

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { InstanceStore } from "../../host/store/instances.js";
import { FakeDriver } from "../support/fake-driver.js";
import { startTestDaemon, tempDir, type TestDaemon } from "../support/daemon.js";
import { sshKeyPair } from "../support/ssh-keys.js";

const ED = sshKeyPair("ed25519").public;
const SEEDED = 250;

describe("GET /v1/instances pagination", () => {
  const dir = tempDir();
  const driver = new FakeDriver();
  let d: TestDaemon;
  let acme: { slug: string; apiKey: string };
  let other: { slug: string; apiKey: string };
  const seeded: string[] = [];

  beforeAll(async () => {
    d = await startTestDaemon({ dataDir: dir.path, driver, env: { CVM_RATE_LIMIT: "0" } });
    acme = await d.tenant("acme");
    other = await d.tenant("globex");
    const store = new InstanceStore(d.db);
    const tid = async (slug: string) => (await d.db.get<{ id: number }>("SELECT id FROM tenants WHERE slug = ?", [slug]))!.id;
    const [a, g] = [await tid("acme"), await tid("globex")];
    // Rows straight into the file, older than anything the API creates; every 10th pair shares a
    // created_at so the name has to break the tie.
    await d.db.tx(async () => {
      for (let i = 0; i < SEEDED; i++) {
        const name = `s${String(i).padStart(7, "0")}`;
        seeded.push(name);
        const createdAt = new Date(1_700_000_000_000 + i - (i % 10 === 1 ? 1 : 0));
        await store.insert({ id: `seed-${i}`, tenantId: a, name, agent: "openclaw", publicKey: ED, inferenceMode: "default_gateway", inferenceModel: "m", egressLimitBytes: 1, createdAt });
        await store.insert({ id: `other-${i}`, tenantId: g, name, agent: "openclaw", publicKey: ED, inferenceMode: "default_gateway", inferenceModel: "m", egressLimitBytes: 1, createdAt });
      }
    });
  });
  afterAll(async () => {
    await d.close();
    dir.remove();
  });

  const page = (q: string, key = acme.apiKey) => d.fetch(`/v1/instances${q}`, { key });

  async function walk(limit: number, between?: (i: number) => Promise<void>): Promise<{ names: string[]; pages: number }> {
    const names: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const r = await page(`?limit=${limit}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
      expect(r.status).toBe(200);
      const got = r.body.data.instances as Array<{ name: string }>;
      cursor = r.body.data.next_cursor;
      // next_cursor is null only on the last page: a non-null one always leads to more.
      if (cursor !== null) expect(got).toHaveLength(limit);
      names.push(...got.map((i) => i.name));
      await between?.(pages);
      pages++;
      expect(pages).toBeLessThan(1000);
    } while (cursor !== null);
    return { names, pages };
  }

  it("defaults to 100, walks every instance once in creation order, and the last page's next_cursor is null", async () => {
    const first = await page("");
    expect(first.body.data.instances).toHaveLength(100);
    expect(first.body.data.next_cursor).toEqual(expect.any(String));
    for (const limit of [1, 7, 50, 125, 250, 1000]) {
      const { names, pages } = await walk(limit);
      expect(names).toEqual(seeded);
      expect(pages).toBe(Math.max(1, Math.ceil(SEEDED / limit)));
    }
    const all = await page("?limit=1000");
    expect(all.body.data.next_cursor).toBeNull();
  });

  it("yields every instance exactly once while instances are created and deleted between pages", async () => {
    const created: string[] = [];
    const deleted: string[] = [];
    const { names } = await walk(20, async (i) => {
      const c = await d.fetch("/v1/instances", { key: acme.apiKey, method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ public_key: ED }) });
      expect(c.status).toBe(202);
      created.push(c.body.data.name);
      // Delete one already listed and one not reached yet: both stay listed (terminated) as the
      // contract keeps terminated instances for 30 days.
      for (const name of [seeded[i * 20], seeded[SEEDED - 1 - i]]) {
        if (!name || deleted.includes(name)) continue;
        expect((await d.fetch(`/v1/instances/${name}`, { key: acme.apiKey, method: "DELETE" })).status).toBe(202);
        deleted.push(name);
      }
    });
    expect(new Set(names).size).toBe(names.length);
    for (const n of seeded) expect(names).toContain(n);
    // Those created during the walk sort after it; all but possibly the last one were reached.
    for (const n of created.slice(0, -1)) expect(names).toContain(n);
    expect(deleted.length).toBeGreaterThan(10);
    // And after it, a fresh walk sees all of them once.
    const after = await walk(33);
    expect(after.names).toEqual([...seeded, ...created]);
  });

  it("a page read again after a write shows the write (the page cache follows every instance change)", async () => {
    const q = `?limit=10&cursor=${encodeURIComponent((await page("?limit=40")).body.data.next_cursor)}`;
    const before = (await page(q)).body.data.instances as Array<{ name: string; status: string }>;
    const victim = before.find((i) => i.status !== "terminated" && i.status !== "terminating")!;
    expect(victim).toBeDefined();
    expect((await d.fetch(`/v1/instances/${victim.name}`, { key: acme.apiKey, method: "DELETE" })).status).toBe(202);
    const after = (await page(q)).body.data.instances as Array<{ name: string; status: string }>;
    expect(after.map((i) => i.name)).toEqual(before.map((i) => i.name));
    expect(["terminating", "terminated"]).toContain(after.find((i) => i.name === victim.name)!.status);
  });

  it("never shows another tenant's instances", async () => {
    const mine = (await page("?limit=1000")).body.data.instances.map((i: { name: string }) => i.name);
    const theirs = (await page("?limit=1000", other.apiKey)).body.data.instances.map((i: { name: string }) => i.name);
    expect(theirs).toEqual(seeded);
    expect(mine).not.toEqual(theirs);
  });

  it("refuses a bad limit or cursor with invalid_request naming the parameter", async () => {
    for (const [q, param] of [
      ["?limit=0", "limit"],
      ["?limit=1001", "limit"],
      ["?limit=abc", "limit"],
      ["?limit=1.5", "limit"],
      ["?limit=1&limit=2", "limit"],
      ["?cursor=", "cursor"],
      ["?cursor=nonsense", "cursor"],
      [`?cursor=c1${Buffer.from("x:y").toString("base64url")}`, "cursor"],
      [`?cursor=${"c1".padEnd(200, "A")}`, "cursor"],
    ] as const) {
      const r = await page(q);
      expect(r.status, q).toBe(400);
      expect(r.body.error.code).toBe("invalid_request");
      expect(r.body.error.param, q).toBe(param);
    }
  });
});

import { describe, expect, test } from "vitest";
import { ConfigfsTsmQuoteProvider, type TsmFs } from "./configfs-tsm-quote.js";

/**
 * Test double for configfs-tsm (needs TDX hardware): mkdir of a report entry creates provider,
 * generation, inblob and outblob; writing inblob bumps generation; outblob is a fake "quote" that
 * embeds the inblob so the test can see which REPORTDATA it was made over.
 */
class FakeConfigfsTsm implements TsmFs {
  entries = new Map<string, { inblob: Buffer; generation: number }>();
  provider = "tdx_guest\n";
  interfere = false;
  constructor(readonly dir: string) {}
  async exists(p: string) {
    return p === this.dir;
  }
  async mkdir(p: string) {
    this.entries.set(p, { inblob: Buffer.alloc(0), generation: 0 });
  }
  async rmdir(p: string) {
    this.entries.delete(p);
  }
  private entry(p: string) {
    const dir = p.slice(0, p.lastIndexOf("/"));
    const e = this.entries.get(dir);
    if (!e) throw Object.assign(new Error("ENOENT"), { code: "ENOENT" });
    return { e, file: p.slice(p.lastIndexOf("/") + 1) };
  }
  async readFile(p: string) {
    const { e, file } = this.entry(p);
    if (file === "provider") return Buffer.from(this.provider);
    if (file === "generation") return Buffer.from(`${e.generation}\n`);
    if (file === "outblob") {
      if (this.interfere) e.generation++;
      return Buffer.concat([Buffer.from("FAKEQUOTE-HEADER-".padEnd(48, "-")), e.inblob]);
    }
    throw new Error(`unexpected read ${file}`);
  }
  async writeFile(p: string, d: Buffer) {
    const { e, file } = this.entry(p);
    if (file !== "inblob") throw new Error(`unexpected write ${file}`);
    e.inblob = Buffer.from(d);
    e.generation++;
  }
}

describe("ConfigfsTsmQuoteProvider", () => {
  const rd = Buffer.alloc(64, 0xab);

  test("writes REPORTDATA to inblob, returns outblob, removes its entry", async () => {
    const fs = new FakeConfigfsTsm("/cfg/tsm/report");
    const q = await new ConfigfsTsmQuoteProvider("/cfg/tsm/report", fs).getQuote(rd);
    expect(q.available).toBe(true);
    if (q.available) expect(q.quote.subarray(48)).toEqual(rd);
    expect(fs.entries.size).toBe(0);
  });

  test("no interface → unavailable with the reason, never a quote", async () => {
    const q = await new ConfigfsTsmQuoteProvider("/nope").getQuote(rd);
    expect(q).toEqual({ available: false, reason: expect.stringMatching(/no TDX quote interface: \/nope/) });
  });

  test("a provider other than tdx_guest is refused", async () => {
    const fs = new FakeConfigfsTsm("/r");
    fs.provider = "sev_guest\n";
    expect(await new ConfigfsTsmQuoteProvider("/r", fs).getQuote(rd)).toMatchObject({ available: false, reason: expect.stringMatching(/not tdx_guest/) });
  });

  test("a concurrent writer (generation jumped) discards the quote", async () => {
    const fs = new FakeConfigfsTsm("/r");
    fs.interfere = true;
    expect(await new ConfigfsTsmQuoteProvider("/r", fs).getQuote(rd)).toMatchObject({ available: false, reason: expect.stringMatching(/concurrently/) });
  });

  test("REPORTDATA must be 64 bytes", async () => {
    await expect(new ConfigfsTsmQuoteProvider("/r", new FakeConfigfsTsm("/r")).getQuote(Buffer.alloc(32))).rejects.toThrow(RangeError);
  });
});

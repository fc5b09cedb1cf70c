import { mkdirSync, mkdtempSync, readdirSync, writeFileSync } from "node:fs";
import { mkdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, test } from "vitest";
import { eventDigest, replayRtmr } from "../../shared/tdx/event-log.js";
import { FIXTURES_DIR, loadFixture } from "../../shared/tdx/test/fixtures.js";
import { main } from "./main.js";
import type { TsmFs } from "./tsm.js";

async function cli(argv: string[], tsmFs?: TsmFs) {
  let out = "";
  let err = "";
  const code = await main(argv, { io: { out: (t) => (out += t), err: (t) => (err += t) }, tsmFs });
  return { code, out, err, json: () => JSON.parse(out) as Record<string, any> };
}

const fx = (name: string, file: string) => join(FIXTURES_DIR, name, file);
const tmp = () => mkdtempSync(join(tmpdir(), "cvm-verify-"));

describe("cvm-verify offline", () => {
  test("UpToDate fixture: exit 0, JSON has ok, status, advisory_ids, reason, measurements", async () => {
    const f = loadFixture("tdx-v4-uptodate");
    const r = await cli(["--quote", fx(f.name, "quote.bin"), "--collateral", fx(f.name, "collateral.json"), "--at", String(f.expected.at_unix), "--json"]);
    expect(r.err).toBe("");
    expect(r.code).toBe(0);
    const j = r.json();
    expect(j).toMatchObject({ ok: true, status: "UpToDate", advisory_ids: [], reason: null, fmspc: f.expected.fmspc });
    expect(j.measurements).toMatchObject({ mrtd: f.expected.mr_td, rtmr0: f.expected.rtmr0, rtmr3: f.expected.rtmr3, report_data: f.expected.report_data });
  });

  test("no-TCB-level fixture: exit 1 with the reason", async () => {
    const f = loadFixture("tdx-v5-no-tcb-level");
    const r = await cli(["--quote", fx(f.name, "quote.bin"), "--collateral", fx(f.name, "collateral.json"), "--at", String(f.expected.at_unix), "--json"]);
    expect(r.code).toBe(1);
    expect(r.json()).toMatchObject({ ok: false, status: null, advisory_ids: [] });
    expect(r.json().reason).toMatch(/^No matching TCB level found/);
    expect(r.json().measurements.mrtd).toBe(f.expected.mr_td);
  });

  test("OutOfDate: exit 1 by default, 0 when --accept-tcb-status widens; human summary", async () => {
    const f = loadFixture("gcp-cos-v4-outofdate");
    const args = ["--quote", fx(f.name, "quote.bin"), "--collateral", fx(f.name, "collateral.json"), "--at", new Date(f.expected.at_unix! * 1000).toISOString()];
    const strict = await cli(args);
    expect(strict.code).toBe(1);
    expect(strict.out).toMatch(/FAIL/);
    expect(strict.out).toMatch(/TCB status   OutOfDate .*not accepted/);
    expect(strict.out).toMatch(/advisories   INTEL-SA-00960, INTEL-SA-00982, INTEL-SA-00986/);
    const wide = await cli([...args, "--accept-tcb-status", "UpToDate,OutOfDate", "--json"]);
    expect(wide.code).toBe(0);
    expect(wide.json()).toMatchObject({ ok: true, status: "OutOfDate", accepted_statuses: ["UpToDate", "OutOfDate"] });
    const human = await cli([...args, "--accept-tcb-status", "OutOfDate"]);
    expect(human.out).toMatch(/cvm-verify \(offline\): OK/);
    expect(human.out).toMatch(/TCB status   OutOfDate .*, accepted/);
  });

  test("the gcp-automata OutOfDate quote: the same policy (exit 1 by default, 0 when accepted)", async () => {
    const f = loadFixture("gcp-automata-v4-outofdate");
    const args = ["--quote", fx(f.name, "quote.bin"), "--collateral", fx(f.name, "collateral.json"), "--at", String(f.expected.at_unix), "--json"];
    const strict = await cli(args);
    expect(strict.code).toBe(1);
    expect(strict.json()).toMatchObject({ ok: false, status: "OutOfDate", accepted_statuses: ["UpToDate"], reason: "TCB status OutOfDate is not accepted (accepted: UpToDate)" });
    expect((await cli([...args, "--accept-tcb-status", "OutOfDate"])).code).toBe(0);
  });

  describe("a manifest that leaves RTMR0 null (fail-closed)", () => {
    const f = loadFixture("tdx-v4-uptodate");
    const d = tmp();
    const manifest = join(d, "manifest.json");
    // The shape images/tools/image-tool.mjs writes: rtmr0 cannot be predicted from the image's files.
    writeFileSync(manifest, JSON.stringify({ image_id: "cvm-x", expected_measurements: { mrtd: f.expected.mr_td, rtmr0: null, rtmr1: f.expected.rtmr1, rtmr2: f.expected.rtmr2, notes: "build notes are ignored" } }));
    const base = ["--quote", fx(f.name, "quote.bin"), "--collateral", fx(f.name, "collateral.json"), "--at", String(f.expected.at_unix), "--manifest", manifest];

    test("exit 1, ok false naming rtmr0; each register listed as matched / unchecked", async () => {
      const r = await cli([...base, "--json"]);
      expect(r.code).toBe(1);
      const j = r.json();
      expect(j.ok).toBe(false);
      expect(j.verdict.ok).toBe(true);
      expect(j.reason).toMatch(/no expected value for rtmr0, so it was not checked \(waive explicitly with allow-unchecked rtmr0\)/);
      expect(j.manifest).toMatchObject({ ok: false, path: manifest, checked: 3, matched: ["mrtd", "rtmr1", "rtmr2"], unchecked: ["rtmr0"], mismatched: [], allow_unchecked: [] });
      expect(j.manifest.checks.map((c: { name: string; result: string }) => `${c.name}:${c.result}`)).toEqual(["mrtd:matched", "rtmr0:unchecked", "rtmr1:matched", "rtmr2:matched"]);
      const human = await cli(base);
      expect(human.out).toMatch(/FAIL/);
      expect(human.out).toMatch(/manifest     .*manifest\.json: mrtd matched, rtmr0 unchecked, rtmr1 matched, rtmr2 matched/);
    });

    test("--allow-unchecked rtmr0: exit 0, and the waiver is in the JSON and the human summary", async () => {
      const r = await cli([...base, "--allow-unchecked", "rtmr0", "--json"]);
      expect(r.err).toBe("");
      expect(r.code).toBe(0);
      const j = r.json();
      expect(j).toMatchObject({ ok: true, reason: null, allow_unchecked: ["rtmr0"] });
      expect(j.manifest).toMatchObject({ ok: true, allow_unchecked: ["rtmr0"], unchecked: ["rtmr0"] });
      expect(j.manifest.checks[1]).toEqual({ name: "rtmr0", result: "unchecked", expected: null, actual: f.expected.rtmr0, waived: true });
      const human = await cli([...base, "--allow-unchecked", "rtmr0"]);
      expect(human.code).toBe(0);
      expect(human.out).toMatch(/rtmr0 unchecked \(waived\)/);
      expect(human.out).toMatch(/waived       rtmr0 \(--allow-unchecked\)/);
    });

    test("a waiver does not excuse a mismatch, and unknown register names are refused", async () => {
      const bad = join(d, "bad.json");
      writeFileSync(bad, JSON.stringify({ expected_measurements: { mrtd: f.expected.mr_td, rtmr0: "00".repeat(48), rtmr1: f.expected.rtmr1, rtmr2: f.expected.rtmr2 } }));
      const r = await cli([...base.slice(0, -1), bad, "--allow-unchecked", "rtmr0", "--json"]);
      expect(r.code).toBe(1);
      expect(r.json().manifest).toMatchObject({ mismatched: ["rtmr0"], checks: expect.arrayContaining([expect.objectContaining({ name: "rtmr0", result: "mismatched", waived: false })]) });
      const typo = await cli([...base, "--allow-unchecked", "rtmr3"]);
      expect(typo.code).toBe(2);
      expect(typo.err).toMatch(/--allow-unchecked: "rtmr3" is not one of mrtd, rtmr0, rtmr1, rtmr2/);
      const noManifest = await cli(base.slice(0, -2).concat(["--allow-unchecked", "rtmr0"]));
      expect(noManifest.code).toBe(2);
      expect(noManifest.err).toMatch(/pass --manifest FILE too/);
    });
  });

  test("quote files as hex and base64 text are auto-detected", async () => {
    const f = loadFixture("dcap-qvl-near-v4-uptodate");
    const d = tmp();
    writeFileSync(join(d, "q.hex"), f.quote.toString("hex") + "\n");
    writeFileSync(join(d, "q.b64"), f.quote.toString("base64").replace(/(.{76})/g, "$1\n"));
    for (const file of ["q.hex", "q.b64"]) {
      const r = await cli(["--quote", join(d, file), "--collateral", fx(f.name, "collateral.json"), "--at", String(f.expected.at_unix)]);
      expect(r.code, file).toBe(0);
    }
  });

  test("manifest and event log: match passes, mismatch fails with its reason", async () => {
    const f = loadFixture("gcp-automata-v4-outofdate"); // RTMR3 is zero: an empty log replays to it
    const d = tmp();
    const good = { expected_measurements: { mrtd: f.expected.mr_td, rtmr0: f.expected.rtmr0, rtmr1: f.expected.rtmr1, rtmr2: f.expected.rtmr2 } };
    writeFileSync(join(d, "m.json"), JSON.stringify(good));
    writeFileSync(join(d, "bad.json"), JSON.stringify({ expected_measurements: { ...good.expected_measurements, rtmr1: "11".repeat(48) } }));
    writeFileSync(join(d, "empty.json"), "[]");
    const ev = { imr: 3, event_type: "openclaw-tree", event: "{}", digest: eventDigest("openclaw-tree", "{}").toString("hex") };
    writeFileSync(join(d, "one.json"), JSON.stringify([ev]));
    const base = ["--quote", fx(f.name, "quote.bin"), "--collateral", fx(f.name, "collateral.json"), "--at", String(f.expected.at_unix), "--accept-tcb-status", "OutOfDate", "--json"];
    const ok = await cli([...base, "--manifest", join(d, "m.json"), "--event-log", join(d, "empty.json")]);
    expect(ok.code).toBe(0);
    expect(ok.json().manifest.checks.map((c: { result: string }) => c.result)).toEqual(["matched", "matched", "matched", "matched"]);
    expect(ok.json().event_log).toMatchObject({ ok: true, events: 0 });
    const badM = await cli([...base, "--manifest", join(d, "bad.json")]);
    expect(badM.code).toBe(1);
    expect(badM.json().reason).toMatch(/measurements differ from the manifest: rtmr1/);
    const badE = await cli([...base, "--event-log", join(d, "one.json")]);
    expect(badE.code).toBe(1);
    expect(badE.json().reason).toMatch(/RTMR3 event log: replaying 1 events gives/);
    expect(replayRtmr([ev]).toString("hex")).toBe(badE.json().event_log.replayed);
  });

  test("cannot run: exit 2 for bad arguments and unreadable input", async () => {
    const f = loadFixture("tdx-v4-uptodate");
    expect((await cli(["--bogus"])).code).toBe(2);
    expect((await cli(["--quote", fx(f.name, "quote.bin")])).err).toMatch(/needs --collateral/);
    expect((await cli(["--quote", "/nonexistent/q", "--collateral", fx(f.name, "collateral.json")])).code).toBe(2);
    expect((await cli(["--quote", fx(f.name, "quote.bin"), "--collateral", "/nonexistent/c"])).code).toBe(2);
    expect((await cli(["--quote", fx(f.name, "quote.bin"), "--collateral", fx(f.name, "collateral.json"), "--at", "yesterday"])).code).toBe(2);
    expect((await cli(["--quote", fx(f.name, "quote.bin"), "--collateral", fx(f.name, "collateral.json"), "--accept-tcb-status", "Fine"])).code).toBe(2);
    const missingManifest = await cli(["--quote", fx(f.name, "quote.bin"), "--collateral", fx(f.name, "collateral.json"), "--manifest", "/nonexistent/m.json", "--json"]);
    expect(missingManifest.code).toBe(2);
    expect(missingManifest.json()).toMatchObject({ ok: false, error: "cannot_run" });
  });
});

describe("cvm-verify live", () => {
  test("no configfs-tsm: prints the reason and exits 2", async () => {
    const r = await cli(["--tsm-root", "/nonexistent/tsm"]);
    expect(r.code).toBe(2);
    expect(r.err).toContain("no TDX: /nonexistent/tsm not present (not a TDX guest or kernel lacks configfs-tsm)");
  });

  /**
   * FakeConfigfsTsmTree: a test double of the kernel's configfs-tsm in a temp dir. Creating a report
   * entry makes provider/outblob appear as the kernel would (outblob is a saved fixture quote, so it
   * cannot carry our REPORTDATA); writing inblob bumps generation.
   */
  function fakeConfigfsTsmTree(root: string, quote: Buffer): TsmFs {
    mkdirSync(join(root, "report"), { recursive: true });
    return {
      exists: async (p) => stat(p).then(() => true, () => false),
      mkdir: async (p) => {
        await mkdir(p);
        await writeFile(join(p, "provider"), "tdx_guest\n");
        await writeFile(join(p, "outblob"), quote);
        await writeFile(join(p, "generation"), "0\n");
      },
      writeFile: async (p, data) => {
        await writeFile(p, data);
        if (p.endsWith("/inblob")) await writeFile(join(p, "..", "generation"), "1\n");
      },
      readFile: (p) => readFile(p),
      // configfs removes an entry's attribute files with the directory
      rmdir: (p) => rm(p, { recursive: true }),
    };
  }

  test("fake configfs-tsm returning a fixture quote: verifies, but fails the REPORTDATA binding", async () => {
    const f = loadFixture("tdx-v4-uptodate");
    const d = tmp();
    const ssh = join(d, "ssh");
    mkdirSync(ssh);
    writeFileSync(join(ssh, "ssh_host_ed25519_key.pub"), "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl root@cvm\n");
    const manifest = join(d, "manifest.json");
    writeFileSync(manifest, JSON.stringify({ expected_measurements: { mrtd: f.expected.mr_td } }));
    const events = join(d, "events.json");
    const ev = { imr: 3, event_type: "ssh-authorized-key", event: '{"fingerprint":"SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"}' };
    writeFileSync(events, JSON.stringify([{ ...ev, digest: eventDigest(ev.event_type, ev.event).toString("hex") }]));
    const tsmRoot = join(d, "tsm");
    const r = await cli(
      ["--collateral", fx(f.name, "collateral.json"), "--at", String(f.expected.at_unix), "--tsm-root", tsmRoot, "--ssh-dir", ssh, "--manifest", manifest, "--event-log", events, "--json"],
      fakeConfigfsTsmTree(tsmRoot, f.quote),
    );
    expect(r.code).toBe(1);
    const j = r.json();
    expect(j.mode).toBe("live");
    expect(j.verdict.ok).toBe(true);
    expect(j.status).toBe("UpToDate");
    expect(j.report_data_binding.ok).toBe(false);
    expect(j.report_data_binding.actual).toBe(f.expected.report_data);
    expect(j.reason).toMatch(/^REPORTDATA does not bind this verifier's nonce/);
    expect(j.manifest.checks[0]).toMatchObject({ name: "mrtd", result: "matched" });
    // the fixture's RTMR3 was not produced by this log, so the injected-key list is not trusted
    expect(j.event_log).toMatchObject({ ok: false, events: 1 });
    expect(j.reason).toMatch(/; RTMR3 event log: replaying 1 events gives/);
    expect(j.ssh_keys.note).toMatch(/injected SSH keys unknown/);
    // the entry was removed again
    expect(await stat(join(tsmRoot, "report")).then(() => true)).toBe(true);
    expect(readdirSync(join(tsmRoot, "report"))).toEqual([]);
  });

  /** A guest as cvm-verify sees it: a fake configfs-tsm answering with a fixture quote, and SSH host keys. */
  function fakeGuest(f: ReturnType<typeof loadFixture>) {
    const d = tmp();
    const ssh = join(d, "ssh");
    mkdirSync(ssh);
    writeFileSync(join(ssh, "ssh_host_ed25519_key.pub"), "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl root@cvm\n");
    const tsmRoot = join(d, "tsm");
    return { d, args: ["--collateral", fx(f.name, "collateral.json"), "--at", String(f.expected.at_unix), "--tsm-root", tsmRoot, "--ssh-dir", ssh, "--json"], tsm: fakeConfigfsTsmTree(tsmRoot, f.quote) };
  }

  test("without --manifest: exit 1 and the reason says which file to pass (no default that the image does not ship)", async () => {
    const f = loadFixture("tdx-v4-uptodate");
    const g = fakeGuest(f);
    writeFileSync(join(g.d, "events.json"), "[]");
    const r = await cli([...g.args, "--event-log", join(g.d, "events.json")], g.tsm);
    expect(r.code).toBe(1);
    const j = r.json();
    expect(j.manifest).toMatchObject({ path: null, checked: 0 });
    expect(j.reason).toMatch(/no image manifest: pass --manifest FILE, the manifest\.json the operator publishes for this instance's image/);
    expect(j.manifest.note).toBe(j.reason.split("; ").find((x: string) => x.startsWith("no image manifest")));
  });

  test("a missing event log is a failed check, not 'not checked'", async () => {
    const f = loadFixture("tdx-v4-uptodate");
    const g = fakeGuest(f);
    const manifest = join(g.d, "m.json");
    writeFileSync(manifest, JSON.stringify({ expected_measurements: { mrtd: f.expected.mr_td, rtmr0: f.expected.rtmr0, rtmr1: f.expected.rtmr1, rtmr2: f.expected.rtmr2 } }));
    const missing = join(g.d, "no-such-events.json");
    const r = await cli([...g.args, "--manifest", manifest, "--event-log", missing], g.tsm);
    expect(r.code).toBe(1);
    const j = r.json();
    expect(j.manifest.ok).toBe(true);
    expect(j.event_log).toEqual({ path: missing, ok: false, note: `no RTMR3 event log at ${missing} (is cvm-agent running? pass --event-log FILE)` });
    expect(j.reason).toContain(`no RTMR3 event log at ${missing}`);
  });
});

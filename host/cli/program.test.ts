import { describe, expect, it } from "vitest";
import { run } from "./program.js";

// Parsing and help never load the configuration or open the database, so these run in-process; the
// data dir points nowhere to make sure of it.
// A data dir under a path that does not exist: a command that wrongly runs fails instead of creating it.
const ENV = { CVM_DATA_DIR: "/proc/cvmctl-test-no-such-dir" };

async function cvmctl(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await run(argv, ENV, { out: (l) => out.push(l), err: (l) => err.push(l) });
  return { code, out: out.join("\n"), err: err.join("\n") };
}

/** The long flags in a help text's Options section. */
function optionsIn(help: string): string[] {
  const section = help.split(/^Options:$/m)[1]?.split(/^\S/m)[0] ?? "";
  return [...section.matchAll(/^ {2}(?:-\w, )?(--[\w-]+)/gm)].map((m) => m[1]!).filter((f) => f !== "--help");
}

describe("cvmctl command line", () => {
  it("an unknown flag is a usage error: exit 2, one line naming the flag and the command", async () => {
    const r = await cvmctl("tenant", "list", "--frobnicate");
    expect(r.code).toBe(2);
    expect(r.out).toBe("");
    expect(r.err.split("\n")).toEqual(["cvmctl tenant list: unknown option '--frobnicate'; see 'cvmctl help tenant list'"]);
  });

  it("a flag of another command is refused by this one, naming the commands that take it", async () => {
    const log = await cvmctl("tenant", "create", "acme", "--log");
    expect(log.code).toBe(2);
    expect(log.err).toBe("cvmctl tenant create: unknown option '--log' (an option of 'console'); see 'cvmctl help tenant create'");
    const tenant = await cvmctl("key", "list", "acme", "--tenant", "acme");
    expect(tenant.code).toBe(2);
    expect(tenant.err).toMatch(/^cvmctl key list: unknown option '--tenant' \(an option of 'instances', 'instance delete', 'console'\)/);
    // The subcommand's flag is not the parent command's, nor the reverse.
    expect((await cvmctl("pool", "--image", "x")).err).toMatch(/^cvmctl pool: unknown option '--image' \(an option of 'pool resize'\)/);
    expect((await cvmctl("pool", "resize", "2", "--json")).code).toBe(2);
  });

  it("a misspelt flag gets a suggestion on the same line", async () => {
    const r = await cvmctl("instances", "--jsn");
    expect(r.code).toBe(2);
    expect(r.err).not.toContain("\n");
    expect(r.err).toContain("(Did you mean --json?)");
  });

  it("missing, surplus or unknown words are usage errors too", async () => {
    expect(await cvmctl("frobnicate")).toMatchObject({ code: 2, err: "cvmctl: unknown command 'frobnicate'; see 'cvmctl help'" });
    expect(await cvmctl("tenant", "create")).toMatchObject({ code: 2, err: "cvmctl tenant create: missing required argument 'SLUG'; see 'cvmctl help tenant create'" });
    expect((await cvmctl("backup", "a", "b")).code).toBe(2);
    expect((await cvmctl("instance", "delete", "box")).err).toMatch(/^cvmctl instance delete: required option '--tenant <SLUG>' not specified/);
    expect((await cvmctl("instance", "cleanup", "--older-than", "1h")).code).toBe(2);
    expect((await cvmctl("help", "tenant", "frob")).err).toBe("cvmctl: no command 'tenant frob'; see 'cvmctl help'");
  });

  it("each command's help lists only its own options", async () => {
    const expected: Record<string, string[]> = {
      "tenant create": ["--json"],
      "tenant list": ["--json"],
      "tenant suspend": [],
      "tenant resume": [],
      "key create": ["--json"],
      "key list": ["--json"],
      "key revoke": [],
      "key rotate": ["--grace", "--json"],
      instances: ["--tenant", "--json"],
      "instance delete": ["--tenant", "--json"],
      "instance cleanup": ["--failed", "--older-than", "--json"],
      backup: [],
      restore: [],
      "image list": ["--json"],
      "image add": ["--use"],
      "image use": [],
      "image rm": [],
      console: ["--tenant", "--log", "--raw"],
      pool: ["--json"],
      "pool resize": ["--image"],
      netns: [],
      "netns takeover": [],
    };
    for (const [cmd, flags] of Object.entries(expected)) {
      const viaFlag = await cvmctl(...cmd.split(" "), "--help");
      expect(viaFlag.code, cmd).toBe(0);
      expect(viaFlag.out, cmd).toMatch(new RegExp(`^Usage: cvmctl ${cmd}( |$)`));
      expect(optionsIn(viaFlag.out), cmd).toEqual(flags);
      expect(await cvmctl("help", ...cmd.split(" ")), cmd).toEqual(viaFlag);
    }
  });

  it("the overview lists every command with its synopsis; bare cvmctl shows it and exits 2", async () => {
    const help = await cvmctl("--help");
    expect(help.code).toBe(0);
    expect(help.out).toMatch(/^ {2}instance delete --tenant SLUG NAME \[--json\] +delete an instance/m);
    expect(help.out).toMatch(/^ {2}key rotate PREFIX \[--grace D\] \[--json\] /m);
    expect(help.out).toMatch(/^ {2}console NAME \[--tenant SLUG\] \[--log\] \[--raw\] /m);
    expect(help.out).toContain("CVM_DATA_DIR");
    expect(await cvmctl("help")).toEqual(help);
    expect(await cvmctl()).toEqual({ ...help, code: 2 });
  });

  it("usage errors and help do not need a valid configuration; a command does (exit 78)", async () => {
    const bad = { ...ENV, CVM_PROFILE: "sev" };
    const io = { out: () => {}, err: () => {} };
    expect(await run(["tenant", "list", "--log"], bad, io)).toBe(2);
    expect(await run(["tenant", "list", "--help"], bad, io)).toBe(0);
    const err: string[] = [];
    expect(await run(["tenant", "list"], bad, { out: () => {}, err: (l) => err.push(l) })).toBe(78);
    expect(err).toEqual(["cvmctl: configuration error: CVM_PROFILE=sev: expected plain or tdx"]);
  });
});

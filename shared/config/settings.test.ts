import { execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, describe, expect, test } from "vitest";
import { commaList, ConfigError, divisorOf60, hostPort, integer, lookupOf, oneOf, optional, parseSetting, readSettings, secondsAsMs, setting, type Value } from "./settings.js";

const ok = <T>(v: Value<T>, raw: string): T => parseSetting("X", v, raw);
const bad = (v: Value<unknown>, raw: string): string => {
  try {
    parseSetting("X", v, raw);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as Error).message;
  }
  throw new Error(`X=${raw} was accepted`);
};

describe("value types", () => {
  test("integer: decimal digits within the bounds, nothing else", () => {
    expect(ok(integer(0, 10), "0")).toBe(0);
    expect(ok(integer(0, 10), "10")).toBe(10);
    expect(ok(integer(0, 10), "007")).toBe(7);
    for (const raw of ["11", "-1", "1.0", "1e1", " 1", "0x1", "", "12345678901234567"]) expect(bad(integer(0, 10), raw)).toBe(`X=${raw}: expected an integer between 0 and 10`);
  });

  test("seconds become milliseconds after the bounds are checked in seconds", () => {
    expect(ok(secondsAsMs(5, 60), "60")).toBe(60_000);
    expect(bad(secondsAsMs(5, 60), "61")).toBe("X=61: expected an integer between 5 and 60");
  });

  test("oneOf lists the choices; host:port, divisors of 60 and comma lists say what they expect", () => {
    expect(bad(oneOf(["a", "b", "c"]), "d")).toBe("X=d: expected a, b or c");
    expect(ok(hostPort("h:1"), "[::1]:53")).toEqual({ host: "::1", port: 53 });
    expect(bad(hostPort("h:1"), "h:65536")).toBe("X=h:65536: expected host:port, e.g. h:1");
    expect(ok(divisorOf60, "20")).toBe(20);
    expect(bad(divisorOf60, "7")).toMatch(/must divide 60/);
    expect(ok(commaList(integer(1, 9)), " 1, 2,,3 ")).toEqual([1, 2, 3]);
    expect(bad(commaList(integer(1, 9)), "1,x")).toBe("X=1,x: expected an integer between 1 and 9");
  });
});

describe("settings", () => {
  const shape = {
    size: setting("SIZE", integer(1, 9), "3"),
    double: setting("DOUBLE", integer(0, 99), (get) => String(2 * Number(get("SIZE") ?? 3))),
    key: optional("KEY", integer(0, 9), { secret: true }),
  };

  test("defaults, worked-out defaults, optional settings; the first source that gives a value wins, empty is unset", () => {
    expect(readSettings(shape, lookupOf({}))).toEqual({ size: 3, double: 6, key: null });
    expect(readSettings(shape, lookupOf({ SIZE: "4" }))).toEqual({ size: 4, double: 8, key: null });
    expect(readSettings(shape, lookupOf({ SIZE: "", KEY: "1" }, { SIZE: "5", KEY: "2" }))).toEqual({ size: 5, double: 10, key: 1 });
    expect(readSettings(shape, () => "")).toEqual({ size: 3, double: 6, key: null });
  });

  test("a secret's value is never in the message", () => {
    expect(() => readSettings(shape, lookupOf({ KEY: "hunter2" }))).toThrow(/^KEY: expected an integer between 0 and 9$/);
  });
});

describe("cvm-agent's flags use the same types", () => {
  const root = mkdtempSync(join(tmpdir(), "cvm-agent-flags-"));
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  test.each([
    [["--heartbeat-ms", "1.5"], "--heartbeat-ms=1.5: expected an integer between 50 and 3600000"],
    [["--openclaw-verify", "none"], "--openclaw-verify=none: expected spot or full"],
    [["--service-manager", "runit"], "--service-manager=runit: expected systemd or direct"],
  ])("%j: exit 78 and one line naming the flag, before the agent starts", async (flag, message) => {
    const entry = new URL("../../guest/main.ts", import.meta.url).pathname;
    const args = ["--import", "tsx", entry, "--root", root, "--unix", join(root, "agent.sock"), "--service-manager", "direct", "--no-egress", "--no-gateway", "--log-level", "silent", ...flag];
    const r = await promisify(execFile)(process.execPath, args, { env: { PATH: process.env.PATH }, timeout: 60_000 }).then(
      () => ({ code: 0, stderr: "" }),
      (e: { code: number; stderr: string }) => e,
    );
    expect(r.code).toBe(78);
    expect(r.stderr).toBe(`cvm-agent: configuration error: ${message}\n`);
  }, 60_000);
});

import { createHmac, randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, test } from "vitest";
import { hostPattern, installKnownHosts, knownHostsLines, namesPattern } from "./known-hosts.js";

const KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
const KEY_B = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBmGHkWDnb6W3Ssd8p8cRUzlgPGTd2lkNXCx2n9tJfJP";
const hashed = (name: string) => {
  const salt = randomBytes(20);
  return `|1|${salt.toString("base64")}|${createHmac("sha1", salt).update(name).digest("base64")}`;
};

describe("known_hosts lines", () => {
  test("the pattern is what ssh looks up: the bare host on port 22, [host]:port otherwise, lowercased", () => {
    expect(hostPattern("Host.Example", 22)).toBe("host.example");
    expect(hostPattern("127.0.0.1", 2201)).toBe("[127.0.0.1]:2201");
    expect(hostPattern("::1", 2201)).toBe("[::1]:2201");
  });

  test("one line per key, comments dropped from the key and replaced by ours", () => {
    expect(knownHostsLines(["[h]:2"], [`${KEY_A} root@guest`, KEY_B], "cvm:abc")).toEqual([`[h]:2 ${KEY_A} cvm:abc`, `[h]:2 ${KEY_B} cvm:abc`]);
    expect(knownHostsLines(["[n.acme.example]:2", "[h]:2", "[h]:2"], [KEY_A], "cvm:abc")).toEqual([`[n.acme.example]:2,[h]:2 ${KEY_A} cvm:abc`]);
  });

  test("names the pattern in a list or hashed, not another port or host", () => {
    expect(namesPattern("[h]:2201", "[h]:2201")).toBe(true);
    expect(namesPattern("other,[H]:2201", "[h]:2201")).toBe(true);
    expect(namesPattern(hashed("[h]:2201"), "[h]:2201")).toBe(true);
    expect(namesPattern(hashed("[h]:2202"), "[h]:2201")).toBe(false);
    expect(namesPattern("[h]:22010", "[h]:2201")).toBe(false);
    expect(namesPattern("h", "[h]:2201")).toBe(false);
  });
});

describe("installKnownHosts", () => {
  const dir = () => mkdtempSync(join(tmpdir(), "cvm-kh-"));

  test("a new file is created 0600 with the lines", async () => {
    const f = join(dir(), "known_hosts");
    expect(await installKnownHosts(f, ["[h]:2"], [`[h]:2 ${KEY_A} cvm:x`])).toEqual({ replaced: 0, others: 0 });
    expect(readFileSync(f, "utf8")).toBe(`[h]:2 ${KEY_A} cvm:x\n`);
    expect(statSync(f).mode & 0o777).toBe(0o600);
  });

  test("drops only its own earlier lines for those names (plain names, lists); counts, and keeps, other keys trusted for them; keeps everything else and the mode", async () => {
    const f = join(dir(), "known_hosts");
    const others = ["# my hosts", `github.com ${KEY_B}`, `[h]:3 ${KEY_B} cvm:old`, `@cert-authority *.example ${KEY_B}`, "", `*.h ${KEY_B}`];
    const ours = [`[h]:2 ${KEY_B} cvm:old`, `[n.example]:2,[h]:2 ${KEY_B} cvm:older`];
    const foreign = [`${hashed("[h]:2")} ${KEY_B}`, `x,[h]:2 ${KEY_B} me@laptop`, `[n.example]:2 ${KEY_A}`];
    writeFileSync(f, [others[0], ours[0], others[1], foreign[0], others[2], foreign[1], ours[1], foreign[2], ...others.slice(3)].join("\n") + "\n", { mode: 0o644 });
    // foreign[2] trusts the key being written: not counted as another key.
    expect(await installKnownHosts(f, ["[n.example]:2", "[h]:2"], [`[n.example]:2,[h]:2 ${KEY_A} cvm:x`])).toEqual({ replaced: 2, others: 2 });
    expect(readFileSync(f, "utf8")).toBe([others[0], others[1], foreign[0], others[2], foreign[1], foreign[2], ...others.slice(3), `[n.example]:2,[h]:2 ${KEY_A} cvm:x`].join("\n") + "\n");
    expect(statSync(f).mode & 0o777).toBe(0o644);
  });

  test("an API that names someone else's host cannot make the tenant lose its pin for it", async () => {
    const f = join(dir(), "known_hosts");
    writeFileSync(f, `github.com ${KEY_B}\n`);
    expect(await installKnownHosts(f, ["github.com"], [`github.com ${KEY_A} cvm:x`])).toEqual({ replaced: 0, others: 1 });
    expect(readFileSync(f, "utf8")).toBe(`github.com ${KEY_B}\ngithub.com ${KEY_A} cvm:x\n`);
  });

  test("a file without a final newline, and a symlink: the target is rewritten, the link stays", async () => {
    const d = dir();
    const target = join(d, "real");
    writeFileSync(target, `github.com ${KEY_B}`);
    symlinkSync(target, join(d, "link"));
    await installKnownHosts(join(d, "link"), ["h"], [`h ${KEY_A} cvm:x`]);
    expect(readFileSync(target, "utf8")).toBe(`github.com ${KEY_B}\nh ${KEY_A} cvm:x\n`);
  });
});

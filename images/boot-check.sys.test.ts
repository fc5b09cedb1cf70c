import { join } from "node:path";
import { describe, expect, test } from "vitest";
import { run } from "../shared/util/run.js";
import { prerequisites } from "../test/support/prerequisites.js";

// Boots the built image under QEMU TCG (no NIC) via images/boot-check.sh: dm-verity root,
// multi-user.target, sshd with a per-boot host key, and refusal of a tampered root.
const here = import.meta.dirname;
const image = join(here, "out", "current");
// The image is what `make test` builds first (make image); a bare `npx vitest run` may lack it.
const reason = prerequisites("guest image boot check", { tools: [["qemu-system-x86_64", ["--version"]]], files: [join(image, "manifest.json")] });

describe.skipIf(reason !== null)("guest image boot (QEMU TCG)", () => {
  test("boots through dm-verity to multi-user with sshd, and a tampered root does not boot", async () => {
    const { stdout, stderr } = await run("bash", [join(here, "boot-check.sh"), image, "--tamper", "--timeout", "420"], {
      timeoutMs: 660_000,
    });
    console.log(stderr.split("\n").filter((l) => l.includes("PASS")).join("\n"));
    expect(stderr).toMatch(/PASS verity root mounted after \d+s, multi-user \+ sshd after \d+s/);
    expect(stderr).toMatch(/PASS tampered root refused by dm-verity/);
    expect(stdout).toContain("all checks passed");
  }, 700_000);
});

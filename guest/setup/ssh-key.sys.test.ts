import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { RootFs } from "../system/root-fs.js";
import { AuthorizedKeyInstaller, SshKeyRejected } from "./ssh-key.js";
import { UseraddAccounts } from "./user-accounts.js";
import { prerequisites } from "../../test/support/prerequisites.js";

const missing = prerequisites("authorized key tests", { root: true, files: ["/usr/sbin/useradd"] });

const ED = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl tenant";
let dir: string;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "guest-root-"));
  await mkdir(join(dir, "etc"));
  await writeFile(join(dir, "etc/passwd"), "root:x:0:0:root:/root:/bin/bash\n");
  await writeFile(join(dir, "etc/group"), "root:x:0:\n");
  await writeFile(join(dir, "etc/shadow"), "root:*:19000:0:99999:7:::\n");
  await writeFile(join(dir, "etc/gshadow"), "root:*::\n");
});
afterEach(() => rm(dir, { recursive: true, force: true }));

describe.skipIf(missing !== null)("AuthorizedKeyInstaller (useradd --prefix into a temp root)", () => {
  test("creates the user once and writes authorized_keys 0600 in a 0700 dir, owned by the user", async () => {
    const root = new RootFs(dir);
    const inst = new AuthorizedKeyInstaller(root, new UseraddAccounts(root, "/usr/sbin/useradd"), "azureuser");
    const key = inst.parse(ED);
    await inst.install(key);
    await inst.install(key); // idempotent
    const passwd = await readFile(join(dir, "etc/passwd"), "utf8");
    expect(passwd.match(/^azureuser:/gm)).toHaveLength(1);
    const uid = Number(/^azureuser:x:(\d+):/m.exec(passwd)![1]);
    const f = join(dir, "home/azureuser/.ssh/authorized_keys");
    expect(await readFile(f, "utf8")).toBe(ED + "\n");
    const st = await stat(f);
    expect([st.mode & 0o777, st.uid]).toEqual([0o600, uid]);
    const d = await stat(join(dir, "home/azureuser/.ssh"));
    expect([d.mode & 0o777, d.uid]).toEqual([0o700, uid]);
    // Nothing leaked to the real system.
    expect(await readFile("/etc/passwd", "utf8")).not.toMatch(new RegExp(`:${dir}`));
  });

  test.each([
    ["rsa", "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC0 x", /ssh-rsa keys are not accepted/],
    ["dsa", "ssh-dss AAAAB3NzaC1kc3MAAACBAP x", /DSA/],
    ["label/blob mismatch", "ssh-ed25519 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBA== x", /does not match|truncated|ecdsa/],
    ["two keys", ED + "\n" + ED, /one key/],
    ["options prefix", 'command="sh" ' + ED, /must start with/],
    ["garbage", "hello", /must start with/],
  ])("refuses %s", (_n, key, reason) => {
    const root = new RootFs(dir);
    const inst = new AuthorizedKeyInstaller(root, new UseraddAccounts(root), "azureuser");
    expect(() => inst.parse(key)).toThrow(SshKeyRejected);
    expect(() => inst.parse(key)).toThrow(reason);
  });
});

import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";

import { afterAll, expect, test } from "vitest";

import { runPaths } from "../../host/vmm/run-dir.js";
import { tempDir } from "../support/daemon.js";
import { FakeDriver } from "../support/fake-driver.js";
import { cvmctl } from "../support/processes.js";
import { sshKeyPair } from "../support/ssh-keys.js";
import { jsonPost, startOpsDaemon } from "./helpers.js";

const ED = sshKeyPair("ed25519").public;
const dir = tempDir();
afterAll(() => dir.remove());

test("cvmctl console --log shows a guest's escape sequences as text, and passes them through only with --raw", async () => {
  const d = await startOpsDaemon({ dataDir: dir.path, driver: new FakeDriver() });
  let name: string;
  let id: string;
  try {
    const key = await d.tenant("acme");
    name = ((await d.fetch("/v1/instances", { key, ...jsonPost({ public_key: ED }) })).body.data as { name: string }).name;
    // The run dir is named by the internal id, which the API does not show.
    id = (await d.db.get<{ id: string }>("SELECT id FROM instances WHERE name = ?", [name]))!.id;
  } finally {
    await d.close();
  }
  // What a root tenant can print on ttyS0: retitle the operator's window, clear the screen, hide a line behind a CR.
  const run = runPaths(dir.path, id).dir;
  mkdirSync(run, { recursive: true });
  writeFileSync(join(run, "serial.log.1"), "boot ok\r\n");
  writeFileSync(join(run, "serial.log"), "\x1b]0;pwned\x07\x1b[2Jevil\rgood\n");
  const env = { CVM_DATA_DIR: dir.path, CVM_DRIVER: "none" };

  const safe = await cvmctl(["console", name, "--log"], env);
  expect(safe.code).toBe(0);
  expect(safe.stdout).toBe("boot ok\r\n\\x1b]0;pwned\\x07\\x1b[2Jevil\\x0dgood\n\n");

  const raw = await cvmctl(["console", name, "--log", "--raw"], env);
  expect(raw.stdout).toBe("boot ok\r\n\x1b]0;pwned\x07\x1b[2Jevil\rgood\n\n");

  // No cvmd, so nobody serves the console: one clear line instead of socat's error.
  const attach = await cvmctl(["console", name], env);
  expect(attach.code).toBe(1);
  expect(attach.stderr).toMatch(/has no console socket: cvmd serves it while it runs/);
});

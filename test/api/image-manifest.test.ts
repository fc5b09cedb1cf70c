import { createHash } from "node:crypto";
import { mkdirSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestDaemon, tempDir, type TestDaemon } from "../support/daemon.js";
import { FakeDriver } from "../support/fake-driver.js";

/** images/out as `make image` leaves it: one directory per image id, `current` pointing at the newest. */
function imagesOut(root: string, manifests: Record<string, string>, current: string): string {
  for (const [id, text] of Object.entries(manifests)) {
    mkdirSync(join(root, id), { recursive: true });
    writeFileSync(join(root, id, "manifest.json"), text);
  }
  symlinkSync(current, join(root, "current"));
  return join(root, "current");
}

describe("GET /v1/images/{id}/manifest", () => {
  const dir = tempDir();
  // Formatted as image-tool writes it: the digest is over these bytes, not over a re-serialisation.
  const newer = JSON.stringify({ image_id: "cvm-00000000000000b2", expected_measurements: { mrtd: null, rtmr0: null } }, null, 2) + "\n";
  const older = JSON.stringify({ image_id: "cvm-00000000000000a1", expected_measurements: {} }) + "\n";
  let d: TestDaemon;
  let key: string;

  beforeAll(async () => {
    const current = imagesOut(join(dir.path, "out"), { "cvm-00000000000000b2": newer, "cvm-00000000000000a1": older, "not-an-image": older }, "cvm-00000000000000b2");
    d = await startTestDaemon({ dataDir: join(dir.path, "data"), driver: new FakeDriver(), env: { CVM_IMAGE_DIR: current } });
    key = (await d.tenant("acme")).apiKey;
  });
  afterAll(async () => {
    await d.close();
    dir.remove();
  });

  it("the current image and an older one beside it: the parsed manifest and the sha256 of the file's bytes", async () => {
    for (const [id, text] of [["cvm-00000000000000b2", newer], ["cvm-00000000000000a1", older]] as const) {
      const r = await d.fetch(`/v1/images/${id}/manifest`, { key });
      expect(r.status, id).toBe(200);
      expect(r.body.data).toEqual({ image_id: id, sha256: createHash("sha256").update(text).digest("hex"), manifest: JSON.parse(text) });
    }
  });

  it("unknown ids, a directory whose manifest names another image, and path tricks are not_found; no key is 401", async () => {
    for (const id of ["cvm-ffffffffffffffff", "not-an-image", "..", "current%2F..%2Fcvm-00000000000000a1", "%2e%2e"]) {
      const r = await d.fetch(`/v1/images/${id}/manifest`, { key });
      expect(r.status, id).toBe(404);
      expect(r.body.error.code).toBe("not_found");
    }
    expect((await d.fetch("/v1/images/cvm-00000000000000b2/manifest")).status).toBe(401);
  });
});

import { execFile } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, describe, expect, test } from "vitest";
import { CatalogueError, validateCatalogue } from "../../host/gateway/catalogue.js";
import { tempDir } from "../support/daemon.js";
import { tsEntry } from "../support/processes.js";

const model = (base_url: string) => ({ id: "gpt-secret", upstream: { base_url, api_key_env: null }, price_per_mtok_usd: { input: "1.00", output: "2.00" } });

describe("a catalogue upstream URL with credentials", () => {
  const dir = tempDir("cvm-catalogue-test-");
  afterAll(() => dir.remove());

  test("is refused naming the model and the variable, never echoing the URL", () => {
    for (const url of ["https://alice:hunter2-pw@llm.example.com/v1", "https://alice@llm.example.com/v1", "http://:hunter2-pw@127.0.0.1:9/v1"]) {
      let err: unknown;
      try {
        validateCatalogue({ default: "gpt-secret", models: [model(url)] }, "CVM_MODELS_FILE /etc/cvm/models.json");
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(CatalogueError);
      const msg = (err as Error).message;
      expect(msg).toContain("CVM_MODELS_FILE");
      expect(msg).toContain("gpt-secret");
      expect(msg).not.toContain("hunter2");
      expect(msg).not.toContain("alice");
    }
    expect(validateCatalogue({ default: "gpt-secret", models: [model("https://llm.example.com/v1")] }, "x").models).toHaveLength(1);
  });

  test("stops cvmd at start-up with exit code 78 and one line", async () => {
    const file = join(dir.path, "models.json");
    writeFileSync(file, JSON.stringify({ default: "gpt-secret", models: [model("https://alice:hunter2-pw@127.0.0.1:9/v1")] }));
    const r = await promisify(execFile)(process.execPath, tsEntry("host/main.ts"), {
      env: { PATH: process.env.PATH, CVM_DATA_DIR: join(dir.path, "data"), CVM_LISTEN: "127.0.0.1:0", CVM_DRIVER: "none", CVM_MODELS_FILE: file },
      timeout: 60_000,
    }).then(
      () => ({ code: 0, stdout: "", stderr: "" }),
      (e: { code: number; stdout: string; stderr: string }) => e,
    );
    expect(r.code).toBe(78);
    const lines = r.stderr.trim().split("\n");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^cvmd: configuration error: CVM_MODELS_FILE .*models\.json: model gpt-secret: upstream\.base_url carries credentials/);
    expect(r.stderr + r.stdout).not.toContain("hunter2");
  });
});

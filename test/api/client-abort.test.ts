import { connect } from "node:net";
import { afterAll, describe, expect, it } from "vitest";
import { tempDir } from "../support/daemon.js";
import { cvmctl, startCvmd, type CvmdProcess } from "../support/processes.js";

describe("a client that hangs up mid-request", () => {
  const dir = tempDir();
  let cvmd: CvmdProcess | undefined;
  afterAll(async () => {
    await cvmd?.kill("SIGKILL");
    dir.remove();
  });

  it("is not an error line and is counted as 499, not 500", async () => {
    const env = { CVM_DATA_DIR: dir.path, CVM_DRIVER: "none", CVM_METRICS_LISTEN: "127.0.0.1:0", CVM_LOG_LEVEL: "debug" };
    cvmd = await startCvmd(env);
    const metricsUrl = cvmd.logs.map((l) => /"url":"([^"]+)","msg":"metrics listener up"/.exec(l)?.[1]).find(Boolean)!;
    expect(metricsUrl).toMatch(/^http:/);
    const { api_key: key } = JSON.parse((await cvmctl(["tenant", "create", "acme", "--json"], env)).stdout) as { api_key: string };
    const { port, hostname } = new URL(cvmd.url);
    for (let i = 0; i < 3; i++) {
      // A create whose body never arrives in full: the client promised 1000 bytes and left after 10.
      await new Promise<void>((resolve, reject) => {
        const s = connect(Number(port), hostname, () => {
          s.write(`POST /v1/instances HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${key}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"public_k`);
          setTimeout(() => {
            s.destroy();
            resolve();
          }, 200);
        });
        s.on("error", reject);
      });
    }
    // Let cvmd notice the hang-ups before scraping.
    const deadline = Date.now() + 10_000;
    let text = "";
    while (Date.now() < deadline) {
      text = await (await fetch(`${metricsUrl}/metrics`)).text();
      if (/cvm_api_requests_total\{[^}]*status="499"[^}]*\} 3/.test(text)) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(text).toMatch(/cvm_api_requests_total\{[^}]*route="\/v1\/instances"[^}]*status="499"[^}]*\} 3/);
    expect(text).not.toMatch(/cvm_api_requests_total\{[^}]*status="500"/);
    const lines = cvmd.logs.join("\n");
    expect(lines).not.toMatch(/unhandled error/);
    expect(lines).not.toMatch(/"level":50/);
  }, 60_000);
});

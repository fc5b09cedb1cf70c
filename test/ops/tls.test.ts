import { X509Certificate } from "node:crypto";
import { copyFileSync, readFileSync, writeFileSync } from "node:fs";
import { request } from "node:https";
import { join } from "node:path";
import { connect } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { run } from "../../shared/util/run.js";
import { tempDir } from "../support/daemon.js";
import { startCvmd, type CvmdProcess } from "../support/processes.js";

async function selfSigned(dir: string, name: string): Promise<{ cert: string; key: string; fingerprint: string }> {
  const cert = join(dir, `${name}.crt`);
  const key = join(dir, `${name}.key`);
  await run(
    "openssl",
    ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", `/CN=${name}`,
      "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", key, "-out", cert],
    { timeoutMs: 30_000 },
  );
  return { cert, key, fingerprint: new X509Certificate(readFileSync(cert)).fingerprint256 };
}

/** The certificate the server presents on a fresh connection. */
function servedFingerprint(url: string): Promise<string> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const s = connect({ host: u.hostname, port: Number(u.port), rejectUnauthorized: false, servername: "localhost" }, () => {
      resolve(s.getPeerX509Certificate()!.fingerprint256);
      s.end();
    });
    s.once("error", reject);
  });
}

/** GET over HTTPS trusting only `ca`. */
function get(url: string, ca: Buffer): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { ca, agent: false }, (res) => {
      let body = "";
      res.on("data", (c: Buffer) => (body += c.toString()));
      res.on("end", () => resolve({ status: res.statusCode!, body }));
    });
    req.once("error", reject);
    req.end();
  });
}

describe("native HTTPS on the tenant listener (real cvmd process)", () => {
  const dir = tempDir();
  let a: Awaited<ReturnType<typeof selfSigned>>;
  let b: Awaited<ReturnType<typeof selfSigned>>;
  let cvmd: CvmdProcess;
  const live = { cert: join(dir.path, "live.crt"), key: join(dir.path, "live.key") };

  beforeAll(async () => {
    a = await selfSigned(dir.path, "cert-a");
    b = await selfSigned(dir.path, "cert-b");
    copyFileSync(a.cert, live.cert);
    copyFileSync(a.key, live.key);
    cvmd = await startCvmd({ CVM_DATA_DIR: join(dir.path, "data"), CVM_DRIVER: "none", CVM_TLS_CERT: live.cert, CVM_TLS_KEY: live.key });
  });
  afterAll(async () => {
    await cvmd?.kill();
    dir.remove();
  });

  async function waitForLog(msg: string, after: number): Promise<void> {
    for (let i = 0; i < 200; i++) {
      if (cvmd.logs.slice(after).some((l) => l.includes(`"msg":"${msg}"`))) return;
      await new Promise((r) => setTimeout(r, 25));
    }
    throw new Error(`no "${msg}" in the log`);
  }

  it("serves the API over HTTPS with the operator's certificate", async () => {
    expect(cvmd.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    expect(await servedFingerprint(cvmd.url)).toBe(a.fingerprint);
    const r = await get(`${cvmd.url}/v1/openapi.json`, readFileSync(a.cert));
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body).openapi).toMatch(/^3\.1/);
    // Plain HTTP on the TLS port gets nowhere.
    await expect(fetch(cvmd.url.replace("https:", "http:") + "/v1/openapi.json")).rejects.toThrow();
  });

  it("SIGHUP reloads a renewed certificate; a broken one is refused and the last good one stays", async () => {
    copyFileSync(b.cert, live.cert);
    copyFileSync(b.key, live.key);
    let mark = cvmd.logs.length;
    cvmd.child.kill("SIGHUP");
    await waitForLog("tls reloaded", mark);
    expect(await servedFingerprint(cvmd.url)).toBe(b.fingerprint);
    expect((await get(`${cvmd.url}/v1/openapi.json`, readFileSync(b.cert))).status).toBe(200);
    await expect(get(`${cvmd.url}/v1/openapi.json`, readFileSync(a.cert))).rejects.toThrow(/self[- ]signed|unable to verify|certificate/i);

    // A key that does not match the certificate (half-finished renewal): keep serving B.
    copyFileSync(a.key, live.key);
    mark = cvmd.logs.length;
    cvmd.child.kill("SIGHUP");
    await waitForLog("tls reload failed; the previous certificate stays in use", mark);
    expect(await servedFingerprint(cvmd.url)).toBe(b.fingerprint);
    writeFileSync(live.key, "garbage");
    mark = cvmd.logs.length;
    cvmd.child.kill("SIGHUP");
    await waitForLog("tls reload failed; the previous certificate stays in use", mark);
    expect((await get(`${cvmd.url}/v1/openapi.json`, readFileSync(b.cert))).status).toBe(200);
    expect(cvmd.child.exitCode).toBeNull();
  });

  it("refuses to start with only one of the pair, or with unreadable files", async () => {
    const half = await startCvmd({ CVM_DATA_DIR: join(dir.path, "d2"), CVM_DRIVER: "none", CVM_TLS_CERT: live.cert }).catch((e: Error) => e.message);
    expect(half).toMatch(/CVM_TLS_KEY: CVM_TLS_CERT and CVM_TLS_KEY go together/);
    const missing = await startCvmd({ CVM_DATA_DIR: join(dir.path, "d3"), CVM_DRIVER: "none", CVM_TLS_CERT: join(dir.path, "nope.crt"), CVM_TLS_KEY: live.key }).catch(
      (e: Error) => e.message,
    );
    expect(missing).toMatch(/CVM_TLS_CERT=.*nope\.crt: ENOENT/);
  });
});

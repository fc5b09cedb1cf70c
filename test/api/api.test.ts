import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FakeDriver } from "../support/fake-driver.js";
import { startTestDaemon, tempDir, type TestDaemon } from "../support/daemon.js";
import { sshKeyPair } from "../support/ssh-keys.js";
import { bareApp } from "../support/bare-app.js";

const ED = sshKeyPair("ed25519").public;
const json = (body: unknown) => ({ method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });

async function until<T>(fn: () => Promise<T>, ok: (v: T) => boolean, ms = 5000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (ok(v) || Date.now() > end) return v;
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("tenant API over HTTP against a real SQLite file", () => {
  const dir = tempDir();
  const driver = new FakeDriver();
  let d: TestDaemon;
  let acme: { slug: string; apiKey: string };
  let other: { slug: string; apiKey: string };

  beforeAll(async () => {
    d = await startTestDaemon({ dataDir: dir.path, driver });
    acme = await d.tenant("acme");
    other = await d.tenant("globex");
  });
  afterAll(async () => {
    await d.close();
    dir.remove();
  });

  describe("envelope", () => {
    it("wraps success with a server request id mirrored in X-Request-ID, ignoring the client's", async () => {
      const r = await d.fetch("/v1/usage", { key: acme.apiKey, headers: { "X-Request-ID": "client-chosen" } });
      expect(r.status).toBe(200);
      expect(r.body.request_id).toMatch(/^[0-9a-f]{32}$/);
      expect(r.body.request_id).not.toBe("client-chosen");
      expect(r.headers.get("x-request-id")).toBe(r.body.request_id);
      expect(r.body.correlation_id).toBeNull();
      expect(r.headers.get("x-correlation-id")).toBeNull();
      expect(Object.keys(r.body).sort()).toEqual(["correlation_id", "data", "request_id"]);
    });

    it("echoes X-Correlation-ID in body and header, on errors too", async () => {
      const r = await d.fetch("/v1/instances/zzzzzzzz", { key: acme.apiKey, headers: { "X-Correlation-ID": "venice-job-1" } });
      expect(r.status).toBe(404);
      expect(r.body).toMatchObject({ correlation_id: "venice-job-1", error: { code: "not_found" } });
      expect(r.headers.get("x-correlation-id")).toBe("venice-job-1");
      expect(r.body.data).toBeUndefined();
    });

    it("gives unknown routes and methods the not_found envelope", async () => {
      for (const [method, path] of [["GET", "/nope"], ["GET", "/v1/widgets"], ["PUT", "/v1/instances"], ["PATCH", "/v1/usage"]] as const) {
        const r = await d.fetch(path, { method, key: acme.apiKey });
        expect(r.status, `${method} ${path}`).toBe(404);
        expect(r.body.error.code).toBe("not_found");
        expect(r.body.request_id).toMatch(/^[0-9a-f]{32}$/);
      }
    });
  });

  describe("auth", () => {
    const cases: Array<[string, Record<string, string>]> = [
      ["missing", {}],
      ["not bearer", { Authorization: "Basic abc" }],
      ["malformed", { Authorization: "Bearer ca_short_x" }],
      ["uppercase", { Authorization: "Bearer ca_ABCDEFGH_abcdefghijklmnopqr" }],
      ["unknown", { Authorization: "Bearer ca_abcdefgh_abcdefghijklmnopqr" }],
    ];
    it.each(cases)("%s token → 401 unauthenticated", async (_, headers) => {
      const r = await d.fetch("/v1/instances", { headers });
      expect(r.status).toBe(401);
      expect(r.body.error).toEqual({ code: "unauthenticated", message: "missing or invalid Bearer token" });
    });

    it("a known prefix with a wrong secret is 401, also once the right secret was verified and cached", async () => {
      const prefix = acme.apiKey.split("_")[1];
      const wrong = { Authorization: `Bearer ca_${prefix}_aaaaaaaaaaaaaaaaaa` };
      expect((await d.fetch("/v1/usage", { headers: wrong })).status).toBe(401);
      expect((await d.fetch("/v1/usage", { key: acme.apiKey })).status).toBe(200);
      expect((await d.fetch("/v1/usage", { headers: wrong })).status).toBe(401);
      // Differs from the right secret only in its last character.
      const secret = acme.apiKey.split("_")[2]!;
      const near = `ca_${prefix}_${secret.slice(0, -1)}${secret.endsWith("a") ? "b" : "a"}`;
      expect((await d.fetch("/v1/usage", { key: near })).status).toBe(401);
      expect((await d.fetch("/v1/usage", { key: acme.apiKey })).status).toBe(200);
    });

    it("a revoked key is 401 while the tenant's other key still works", async () => {
      const extra = await d.key("acme");
      expect((await d.fetch("/v1/usage", { key: extra })).status).toBe(200);
      const { ApiKeyStore } = await import("../../host/store/api-keys.js");
      await d.db.tx(() => new ApiKeyStore(d.db).revoke(extra.split("_")[1]!, new Date()));
      expect((await d.fetch("/v1/usage", { key: extra })).status).toBe(401);
      expect((await d.fetch("/v1/usage", { key: acme.apiKey })).status).toBe(200);
    });

    it("stores only a hash of the secret", async () => {
      const rows = await d.db.all<{ prefix: string; secret_hash: Buffer }>("SELECT prefix, secret_hash FROM api_keys");
      const secret = acme.apiKey.split("_")[2]!;
      for (const r of rows) expect(Buffer.from(r.secret_hash).toString("latin1")).not.toContain(secret);
    });
  });

  describe("create validation", () => {
    const ecdsa = sshKeyPair("ecdsa", 384).public;
    const rsa = sshKeyPair("rsa").public;
    const edBlob = ED.split(" ")[1]!;
    const bad: Array<[string, unknown, string | undefined]> = [
      ["missing public_key", { agent: "openclaw" }, "public_key"],
      ["public_key not a string", { public_key: 42 }, "public_key"],
      ["ssh-rsa", { public_key: rsa }, "public_key"],
      ["ssh-dss", { public_key: "ssh-dss AAAAB3NzaC1kc3MAAACBAP== x" }, "public_key"],
      ["garbage", { public_key: "hello world" }, "public_key"],
      ["bad base64", { public_key: "ssh-ed25519 !!!!" }, "public_key"],
      ["label/blob mismatch", { public_key: `ecdsa-sha2-nistp256 ${edBlob}` }, "public_key"],
      ["truncated blob", { public_key: `ssh-ed25519 ${edBlob.slice(0, 40)}` }, "public_key"],
      ["two keys", { public_key: `${ED}\n${ED}` }, "public_key"],
      ["options prefix", { public_key: `command="/bin/sh" ${ED}` }, "public_key"],
      ["empty", { public_key: "" }, "public_key"],
      ["unsupported agent", { public_key: ED, agent: "autogpt" }, "agent"],
      ["agent not a string", { public_key: ED, agent: ["openclaw"] }, "agent"],
      ["unsupported inference_mode", { public_key: ED, inference_mode: "byo" }, "inference_mode"],
      ["unknown model", { public_key: ED, inference_model: "gpt-9" }, "inference_model"],
      ["unknown field", { public_key: ED, name: "mine" }, "name"],
    ];
    it.each(bad)("%s → 400 invalid_request", async (_, body, param) => {
      const r = await d.fetch("/v1/instances", { key: acme.apiKey, ...json(body) });
      expect(r.status).toBe(400);
      expect(r.body.error.code).toBe("invalid_request");
      expect(r.body.error.param).toBe(param);
      expect(r.body.error.message.length).toBeGreaterThan(5);
    });

    it("malformed JSON, non-object JSON, wrong content type and oversized bodies are invalid_request", async () => {
      const send = (body: string, type = "application/json") =>
        d.fetch("/v1/instances", { key: acme.apiKey, method: "POST", headers: { "Content-Type": type }, body });
      for (const r of [
        await send("{not json"),
        await send("[1,2]"),
        await send("null"),
        await send(JSON.stringify({ public_key: ED }), "text/plain"),
        await send(JSON.stringify({ public_key: ED, pad: "x".repeat(70_000) })),
      ]) {
        expect(r.status).toBe(400);
        expect(r.body.error.code).toBe("invalid_request");
      }
    });

    it("accepts ed25519 and ecdsa keys, fills defaults and answers the contract's record", async () => {
      const r = await d.fetch("/v1/instances", { key: acme.apiKey, ...json({ public_key: ecdsa }) });
      expect(r.status).toBe(202);
      expect(r.body.data).toMatchObject({
        status: "provisioning",
        agent: "openclaw",
        inference_mode: "default_gateway",
        inference_model: d.config.catalogue.default,
        egress_limit_bytes: 5368709120,
        public_key: ecdsa,
        failure_code: null,
        ready_at: null,
        terminated_at: null,
      });
      expect(r.body.data.name).toMatch(/^[a-z0-9]{8}$/);
      expect(r.body.data.hostname).toBe(`${r.body.data.name}.acme.cvm.localhost`);
      expect(r.body.data.created_at).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    });
  });

  describe("idempotency", () => {
    it("replays the original result with a fresh request_id and the current correlation_id", async () => {
      const h = { "Idempotency-Key": "retry-1" };
      const first = await d.fetch("/v1/instances", { key: acme.apiKey, ...json({ public_key: ED }), headers: { ...h, "Content-Type": "application/json", "X-Correlation-ID": "a" } });
      const again = await d.fetch("/v1/instances", { key: acme.apiKey, ...json({ public_key: ED }), headers: { ...h, "Content-Type": "application/json", "X-Correlation-ID": "b" } });
      expect(first.status).toBe(202);
      expect(again.status).toBe(202);
      expect(again.body.data).toEqual(first.body.data);
      expect(again.body.request_id).not.toBe(first.body.request_id);
      expect(again.body.correlation_id).toBe("b");
    });

    it("the same key with a different body is 409 conflict", async () => {
      const headers = { "Idempotency-Key": "retry-2", "Content-Type": "application/json" };
      expect((await d.fetch("/v1/instances", { key: acme.apiKey, ...json({ public_key: ED }), headers })).status).toBe(202);
      const r = await d.fetch("/v1/instances", { key: acme.apiKey, ...json({ public_key: ED, agent: "openclaw" }), headers });
      expect(r.status).toBe(409);
      expect(r.body.error.code).toBe("conflict");
    });

    it("keys are per tenant", async () => {
      const headers = { "Idempotency-Key": "shared-key", "Content-Type": "application/json" };
      const a = await d.fetch("/v1/instances", { key: acme.apiKey, ...json({ public_key: ED }), headers });
      const b = await d.fetch("/v1/instances", { key: other.apiKey, ...json({ public_key: ED }), headers });
      expect(a.status).toBe(202);
      expect(b.status).toBe(202);
      expect(b.body.data.hostname).toContain(".globex.");
    });

    it("20 concurrent identical requests create exactly one instance", async () => {
      const before = (await d.db.get<{ n: number }>("SELECT COUNT(*) AS n FROM instances"))!.n;
      const headers = { "Idempotency-Key": "burst-20", "Content-Type": "application/json" };
      const results = await Promise.all(Array.from({ length: 20 }, () => d.fetch("/v1/instances", { key: acme.apiKey, ...json({ public_key: ED }), headers })));
      expect(results.map((r) => r.status)).toEqual(Array(20).fill(202));
      expect(new Set(results.map((r) => r.body.data.name)).size).toBe(1);
      expect(new Set(results.map((r) => r.body.request_id)).size).toBe(20);
      const after = (await d.db.get<{ n: number }>("SELECT COUNT(*) AS n FROM instances"))!.n;
      expect(after - before).toBe(1);
    });
  });

  describe("isolation and lifecycle", () => {
    it("another tenant's instance is not_found for get, delete and events", async () => {
      const mine = await d.fetch("/v1/instances", { key: acme.apiKey, ...json({ public_key: ED }) });
      const name = mine.body.data.name;
      for (const [method, path] of [["GET", `/v1/instances/${name}`], ["DELETE", `/v1/instances/${name}`], ["GET", `/v1/instances/${name}/events`]] as const) {
        const r = await d.fetch(path, { method, key: other.apiKey });
        expect(r.status, `${method} ${path}`).toBe(404);
        expect(r.body.error.code).toBe("not_found");
      }
      const list = await d.fetch("/v1/instances", { key: other.apiKey });
      expect(list.body.data.instances.map((i: { name: string }) => i.name)).not.toContain(name);
      expect((await d.fetch(`/v1/instances/${name}`, { key: acme.apiKey })).body.data.status).not.toBe("terminating");
    });

    it("provisioning → ready → delete → terminated, with every transition an event, and a second delete is fine", async () => {
      const created = await d.fetch("/v1/instances", { key: acme.apiKey, ...json({ public_key: ED }) });
      const name = created.body.data.name;
      const ready = await until(() => d.fetch(`/v1/instances/${name}`, { key: acme.apiKey }), (r) => r.body.data.status === "ready");
      expect(ready.body.data.status).toBe("ready");
      expect(ready.body.data.ready_at).not.toBeNull();
      expect(ready.body.data.ssh).toEqual({ host: `${name}.acme.cvm.localhost`, port: 22, user: "azureuser" });
      const del = await d.fetch(`/v1/instances/${name}`, { method: "DELETE", key: acme.apiKey });
      expect(del.status).toBe(202);
      expect(del.body.data.status).toBe("terminated");
      expect(del.body.data.terminated_reason).toBe("deleted_via_api");
      expect(del.body.data.terminated_at).not.toBeNull();
      const again = await d.fetch(`/v1/instances/${name}`, { method: "DELETE", key: acme.apiKey });
      expect(again.status).toBe(202);
      expect(again.body.data.status).toBe("terminated");
      const ev = await d.fetch(`/v1/instances/${name}/events`, { key: acme.apiKey });
      const transitions = ev.body.data.events.filter((e: { type: string }) => e.type === "status").map((e: { from_status: string; to_status: string }) => `${e.from_status}→${e.to_status}`);
      expect(transitions).toEqual(["null→provisioning", "provisioning→ready", "ready→terminating", "terminating→terminated"]);
      const seqs = ev.body.data.events.map((e: { seq: number }) => e.seq);
      expect(seqs).toEqual(seqs.map((_: number, i: number) => i + 1));
      const list = await d.fetch("/v1/instances", { key: acme.apiKey });
      expect(list.body.data.next_cursor).toBeNull();
      expect(list.body.data.instances.find((i: { name: string }) => i.name === name).status).toBe("terminated");
    });

    it("a slow teardown answers terminating, then reaches terminated", async () => {
      driver.destroyDelayMs = 2500;
      try {
        const created = await d.fetch("/v1/instances", { key: acme.apiKey, ...json({ public_key: ED }) });
        const name = created.body.data.name;
        const del = await d.fetch(`/v1/instances/${name}`, { method: "DELETE", key: acme.apiKey });
        expect(del.body.data.status).toBe("terminating");
        const second = await d.fetch(`/v1/instances/${name}`, { method: "DELETE", key: acme.apiKey });
        expect(second.status).toBe(202);
        const done = await until(() => d.fetch(`/v1/instances/${name}`, { key: acme.apiKey }), (r) => r.body.data.status === "terminated", 8000);
        expect(done.body.data.status).toBe("terminated");
      } finally {
        driver.destroyDelayMs = 0;
      }
    });

    it("a driver failure ends in failed with a stable failure_code", async () => {
      driver.failWith = "boot_timeout";
      try {
        const created = await d.fetch("/v1/instances", { key: acme.apiKey, ...json({ public_key: ED }) });
        const r = await until(() => d.fetch(`/v1/instances/${created.body.data.name}`, { key: acme.apiKey }), (x) => x.body.data.status === "failed");
        expect(r.body.data).toMatchObject({ status: "failed", failure_code: "boot_timeout" });
        expect(r.body.data.failure_message).toMatch(/boot/);
      } finally {
        driver.failWith = null;
      }
    });

    it("a guest that dies after ready is failed with vm_exited", async () => {
      const created = await d.fetch("/v1/instances", { key: acme.apiKey, ...json({ public_key: ED }) });
      const name = created.body.data.name;
      await until(() => d.fetch(`/v1/instances/${name}`, { key: acme.apiKey }), (r) => r.body.data.status === "ready");
      const id = (await d.db.get<{ id: string }>("SELECT id FROM instances WHERE name = ?", [name]))!.id;
      driver.crash(id);
      const r = await until(() => d.fetch(`/v1/instances/${name}`, { key: acme.apiKey }), (x) => x.body.data.status === "failed");
      expect(r.body.data.failure_code).toBe("vm_exited");
    });
  });

  describe("openapi", () => {
    it("documents every route the router serves", async () => {
      const r = await d.fetch("/v1/openapi.json");
      expect(r.status).toBe(200);
      expect(r.body.openapi).toBe("3.1.0");
      const { routes } = bareApp({ catalogue: d.config.catalogue });
      expect(routes.length).toBeGreaterThanOrEqual(6);
      for (const { method, path } of routes) {
        const oaPath = path.replace(/:(\w+)/g, "{$1}");
        expect(r.body.paths[oaPath]?.[method.toLowerCase()], `${method} ${path}`).toBeDefined();
      }
    });
  });
});

import { describe, expect, test } from "vitest";
import { configDigest, renderNeutralOpenClawConfig, renderOpenClawConfig } from "./openclaw.js";
import { onlyExpectedPaths, reloadVerdict } from "./openclaw-reload.js";

// Lines as OpenClaw 2026.9.6 printed them on stdout when run natively here (colours included).
const DETECTED = "\x1b[90m2026-11-24T04:48:14.439+00:00\x1b[39m \x1b[34m[reload]\x1b[39m \x1b[36mconfig change detected; evaluating reload (agents.defaults.model, models)\x1b[39m";
const APPLIED = "\x1b[90m2026-11-24T04:48:14.591+00:00\x1b[39m \x1b[34m[reload]\x1b[39m \x1b[36mconfig hot reload applied (agents.defaults.model, models)\x1b[39m";
const RESTART = "2026-11-24T04:48:50.400+00:00 [reload] config change requires gateway restart (gateway.controlUi.basePath) — preparing";
const INVALID = '2026-11-24T04:48:38.443+00:00 [reload] config reload skipped (invalid config): discovery.wideArea: Unrecognized key: "enabled"';

describe("reloadVerdict", () => {
  test("pending until an outcome line; applied with the reported paths", () => {
    expect(reloadVerdict("")).toEqual({ kind: "pending" });
    expect(reloadVerdict(DETECTED + "\n")).toEqual({ kind: "pending" });
    expect(reloadVerdict(`${DETECTED}\n${APPLIED}\n`)).toEqual({ kind: "applied", paths: ["agents.defaults.model", "models"] });
    expect(reloadVerdict("[reload] config change applied (dynamic reads: agents.list)\n")).toEqual({ kind: "applied", paths: ["agents.list"] });
  });

  test("a restart or a rejected config is not an application", () => {
    expect(reloadVerdict(`${RESTART}\n`)).toEqual({ kind: "restart", detail: "gateway.controlUi.basePath" });
    expect(reloadVerdict("2026-11-24T04:48:50.978+00:00 [gateway] received SIGUSR2; restarting\n").kind).toBe("restart");
    expect(reloadVerdict(`${INVALID}\n`)).toMatchObject({ kind: "rejected", detail: expect.stringMatching(/^config reload skipped \(invalid config\)/) });
    expect(reloadVerdict("[reload] config reload disabled (gateway.reload.mode=off)\n").kind).toBe("rejected");
  });

  test("the first outcome counts (a later restart line belongs to a later change)", () => {
    expect(reloadVerdict(`${APPLIED}\n${RESTART}\n`).kind).toBe("applied");
  });

  test("only paths under models and agents.defaults.model are expected at a claim", () => {
    // What the real OpenClaw reported for neutral → tenant in test/agent/openclaw-warm-claim.sys.test.ts.
    expect(onlyExpectedPaths(["models.catalogRefresh", "models.mode", "models.providers", "agents.defaults.model"])).toBe(true);
    expect(onlyExpectedPaths(["agents.defaults.model", "models"])).toBe(true);
    expect(onlyExpectedPaths(["models", "gateway.auth"])).toBe(false);
    expect(onlyExpectedPaths(["agents.defaults.modelPolicy"])).toBe(false);
    expect(onlyExpectedPaths([])).toBe(false);
  });
});

describe("OpenClaw configurations", () => {
  const params = { public_key: "k", agent: "openclaw" as const, inference_model: "llama-3.1-8b", gateway_address: "http://127.0.0.1:18790/v1", instance_name: "abcd1234" };

  test("the tenant configuration is byte-for-byte what it was before the warm pool (tenants recompute its digest)", () => {
    // Digest of the text the pre-warm-pool renderOpenClawConfig produced for these parameters.
    expect(configDigest(renderOpenClawConfig(params, 18789))).toBe("f6d4baa036efae695482dfca851ef048a1c39177998233a4d86724769286e085");
  });

  test("the neutral configuration has the tenant's gateway and update sections exactly, no model, and no catalog fetch", () => {
    const tenant = JSON.parse(renderOpenClawConfig(params, 18789));
    const neutral = JSON.parse(renderNeutralOpenClawConfig(18789));
    expect(neutral.gateway).toEqual(tenant.gateway);
    expect(JSON.stringify(neutral.gateway)).toBe(JSON.stringify(tenant.gateway));
    expect(neutral.update).toEqual(tenant.update);
    expect(neutral.agents).toBeUndefined();
    expect(neutral.models).toEqual({ catalogRefresh: { enabled: false } });
    // Everything that differs lies under the hot-reloaded prefixes.
    const differing = Object.keys({ ...tenant, ...neutral }).filter((k) => JSON.stringify(tenant[k]) !== JSON.stringify(neutral[k]));
    expect(differing.sort()).toEqual(["agents", "models"]);
  });
});

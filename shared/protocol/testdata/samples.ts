import type { AgentMessage, AgentStateSummary, HostMessage } from "../messages.js";

/**
 * A hello state as version 1 and 2 agents send it: without `prepared` (it decodes as null). Cast so
 * those goldens keep the exact bytes of their protocol version.
 */
const legacyState = (s: Omit<AgentStateSummary, "prepared">) => s as AgentStateSummary;

/** What a sample decodes to: a hello state without `prepared` (versions 1 and 2) decodes with null. */
export function decodedForm(m: AgentMessage): AgentMessage {
  if (m.type !== "hello" || Object.hasOwn(m.body.state, "prepared")) return m;
  return { ...m, body: { ...m.body, state: { ...m.body.state, prepared: null } } };
}

/** One representative of every message; golden frames in golden-frames.json are their encodings. */
const KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGVwZWNhZ2VudGF0dGVzdGF0aW9uZ29sZGVua2V5MDE= tenant@example";
const HOSTKEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGhvc3RrZXlnb2xkZW5mcmFtZXNzaG91bGRuZXZlcmNoYW4=";
const DIGEST384 = "a".repeat(96);

export const HOST_SAMPLES: Record<string, HostMessage> = {
  hello: { type: "hello", id: 1, body: { versions: [1], host_version: "cvmd/0.1.0" } },
  setup: {
    type: "setup",
    id: 2,
    body: {
      public_key: KEY,
      agent: "openclaw",
      inference_model: "llama-3.1-8b",
      gateway_address: "http://10.0.2.2:8080/v1",
      instance_name: "abcd1234",
    },
  },
  quote: { type: "quote", id: 3, body: { nonce: Buffer.alloc(32, 0x5a) } },
  bye: { type: "bye", body: { reason: "host shutting down" } },
  hello_v2: { type: "hello", id: 9, body: { versions: [2, 1], host_version: "cvmd/0.2.0" } },
  gw_response: {
    type: "gw_response",
    body: { stream: 1, status: 200, headers: { "content-type": "text/event-stream", "x-request-id": "gw_0123456789abcdef" }, body: Buffer.alloc(0), end: false },
  },
  gw_response_whole: {
    type: "gw_response",
    body: { stream: 2, status: 429, headers: { "content-type": "application/json", "retry-after": "3" }, body: Buffer.from('{"error":{"code":"rate_limit_exceeded"}}'), end: true },
  },
  gw_response_body: { type: "gw_response_body", body: { stream: 1, data: Buffer.from('data: {"choices":[]}\n\n'), end: true } },
  gw_reset: { type: "gw_reset", body: { stream: 1, reason: "upstream response exceeded 16777216 bytes" } },
  hello_v3: { type: "hello", id: 11, body: { versions: [3, 2, 1], host_version: "cvmd/0.3.0" } },
  prepare: { type: "prepare", id: 12, body: {} },
};

export const AGENT_SAMPLES: Record<string, AgentMessage> = {
  hello: {
    type: "hello",
    re: 1,
    body: {
      version: 1,
      agent_version: "0.1.0",
      boot_id: "6f1c0f2e-7a51-4b0e-9d3a-0c6b7f0a1d2e",
      image_id: "cvm-2026.11.1",
      state: legacyState({ phase: "awaiting_setup", setup_digest: null, stage: null, ready: null, failed: null }),
    },
  },
  hello_ready: {
    type: "hello",
    re: 7,
    body: {
      version: 1,
      agent_version: "0.1.0",
      boot_id: "6f1c0f2e-7a51-4b0e-9d3a-0c6b7f0a1d2e",
      image_id: null,
      state: legacyState({
        phase: "ready",
        setup_digest: "0".repeat(64),
        stage: "ready",
        ready: { ssh_host_keys: [HOSTKEY], openclaw_version: "2026.9.6", node_version: "v24.21.0" },
        failed: null,
      }),
    },
  },
  ack: { type: "ack", re: 2, body: { already_applied: false } },
  quote_reply: {
    type: "quote_reply",
    re: 3,
    body: {
      available: true,
      quote: Buffer.alloc(64, 0x01),
      report_data: Buffer.alloc(64, 0x02),
      event_log: [{ imr: 3, digest: DIGEST384, event_type: "ssh-authorized-key", event: "SHA256:abc" }],
    },
  },
  quote_unavailable: {
    type: "quote_reply",
    re: 4,
    body: { available: false, reason: "no TDX: /sys/kernel/config/tsm/report is missing", event_log: [] },
  },
  error: { type: "error", re: 5, body: { code: "setup_conflict", message: "a different setup was already applied in this boot" } },
  progress: { type: "progress", body: { stage: "ssh_key", message: "authorized_keys written" } },
  ready: { type: "ready", body: { ssh_host_keys: [HOSTKEY], openclaw_version: "2026.9.6", node_version: "v24.21.0" } },
  failed: { type: "failed", body: { code: "openclaw_digest_mismatch", message: "tree digest does not match /etc/cvm/openclaw.json" } },
  heartbeat: {
    type: "heartbeat",
    body: { uptime_s: 12.5, load: [0.25, 0.5, 1], mem_total_bytes: 4294967296, mem_available_bytes: 3221225472, openclaw: "healthy" },
  },
  egress: { type: "egress", body: { bytes: 1048576, packets: 1024, sampled_at: "2026-11-24T02:10:00.000Z" } },
  bye: { type: "bye", body: { reason: "protocol violation: unknown host message type" } },
  hello_v2: {
    type: "hello",
    re: 9,
    body: {
      version: 2,
      agent_version: "0.2.0",
      boot_id: "6f1c0f2e-7a51-4b0e-9d3a-0c6b7f0a1d2e",
      image_id: "cvm-2026.12.1",
      state: legacyState({ phase: "awaiting_setup", setup_digest: null, stage: null, ready: null, failed: null }),
    },
  },
  gw_request: {
    type: "gw_request",
    body: {
      stream: 1,
      method: "POST",
      path: "/v1/chat/completions",
      headers: { accept: "text/event-stream", "content-type": "application/json" },
      body: Buffer.from('{"model":"llama-3.1-8b","stream":true,"messages":[{"role":"user","content":"hi"}]}'),
      end: true,
    },
  },
  gw_request_partial: {
    type: "gw_request",
    body: { stream: 2, method: "POST", path: "/v1/embeddings", headers: { "content-type": "application/json" }, body: Buffer.from('{"input":"'), end: false },
  },
  gw_request_body: { type: "gw_request_body", body: { stream: 2, data: Buffer.from('abc"}'), end: true } },
  gw_cancel: { type: "gw_cancel", body: { stream: 1 } },
  hello_v3_prepared: {
    type: "hello",
    re: 11,
    body: {
      version: 3,
      agent_version: "0.3.0",
      boot_id: "6f1c0f2e-7a51-4b0e-9d3a-0c6b7f0a1d2e",
      image_id: "cvm-2027.01.1",
      state: {
        phase: "prepared",
        setup_digest: null,
        stage: "openclaw_ready",
        ready: null,
        failed: null,
        prepared: { openclaw_version: "2026.9.6", node_version: "v24.21.0", prepare_ms: 23456 },
      },
    },
  },
  ack_prepare: { type: "ack", re: 12, body: { already_applied: true } },
  progress_prepare: { type: "progress", body: { stage: "openclaw_start", message: "OpenClaw service started with the neutral configuration" } },
  prepared: { type: "prepared", body: { openclaw_version: "2026.9.6", node_version: "v24.21.0", prepare_ms: 23456 } },
};

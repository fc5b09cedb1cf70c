import { API_ERROR_CODES, INSTANCE_STATUSES } from "../../shared/api/types.js";
import { ERROR_DOCS, HTTP_STATUS } from "./errors.js";

/** OpenAPI 3.1 description of /v1; a test checks it against the router's routes. */
export function openApiDocument(opts: { version: string; models: string[] }) {
  const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
  const envelope = (data: object) => ({
    type: "object",
    required: ["request_id", "correlation_id", "data"],
    properties: { request_id: { type: "string" }, correlation_id: { type: ["string", "null"] }, data },
  });
  const errors = (...codes: (typeof API_ERROR_CODES)[number][]) =>
    Object.fromEntries(
      codes.map((c) => [String(HTTP_STATUS[c]), { description: `${c}: ${ERROR_DOCS[c]}`, content: { "application/json": { schema: ref("ErrorEnvelope") } } }]),
    );
  const ok = (status: number, description: string, data: object) => ({
    [String(status)]: { description, content: { "application/json": { schema: envelope(data) } } },
  });
  const nameParam = { name: "name", in: "path", required: true, schema: { type: "string", pattern: "^[a-z0-9]{8}$" } };
  const common = ["unauthenticated", "forbidden", "rate_limited", "internal_error"] as const;

  return {
    openapi: "3.1.0",
    info: { title: "Confidential Agents API (cvm)", version: opts.version },
    servers: [{ url: "/" }],
    security: [{ bearer: [] }],
    paths: {
      "/v1/instances": {
        post: {
          operationId: "createInstance",
          parameters: [
            { name: "Idempotency-Key", in: "header", required: false, schema: { type: "string", maxLength: 255 } },
            { name: "X-Correlation-ID", in: "header", required: false, schema: { type: "string" } },
          ],
          requestBody: { required: true, content: { "application/json": { schema: ref("CreateInstance") } } },
          responses: { ...ok(202, "Accepted; status is provisioning", ref("Instance")), ...errors("invalid_request", "conflict", ...common) },
        },
        get: {
          operationId: "listInstances",
          responses: {
            ...ok(200, "The tenant's instances, terminated ones for 30 days", {
              type: "object",
              required: ["instances", "next_cursor"],
              properties: { instances: { type: "array", items: ref("Instance") }, next_cursor: { type: "null" } },
            }),
            ...errors(...common),
          },
        },
      },
      "/v1/instances/{name}": {
        get: { operationId: "getInstance", parameters: [nameParam], responses: { ...ok(200, "The instance", ref("Instance")), ...errors("not_found", ...common) } },
        delete: {
          operationId: "deleteInstance",
          parameters: [nameParam],
          responses: { ...ok(202, "terminating or terminated", ref("Instance")), ...errors("not_found", ...common) },
        },
      },
      "/v1/instances/{name}/events": {
        get: {
          operationId: "listInstanceEvents",
          description: "Extension: the instance's status transitions and provisioning progress, in sequence order.",
          parameters: [nameParam],
          responses: {
            ...ok(200, "Events", {
              type: "object",
              properties: { events: { type: "array", items: ref("InstanceEvent") }, next_cursor: { type: "null" } },
            }),
            ...errors("not_found", ...common),
          },
        },
      },
      "/v1/usage": {
        get: { operationId: "getUsage", responses: { ...ok(200, "Current billing window", ref("Usage")), ...errors(...common) } },
      },
      "/v1/openapi.json": {
        get: { operationId: "getOpenApi", security: [], responses: { "200": { description: "This document (not enveloped)" } } },
      },
    },
    components: {
      securitySchemes: { bearer: { type: "http", scheme: "bearer", description: "ca_<8 lowercase alphanumerics>_<18 lowercase alphanumerics>" } },
      schemas: {
        CreateInstance: {
          type: "object",
          additionalProperties: false,
          required: ["public_key"],
          properties: {
            public_key: { type: "string", description: "One OpenSSH public key: ssh-ed25519 or ecdsa-sha2-nistp256/384/521. ssh-rsa is rejected." },
            agent: { type: "string", enum: ["openclaw"], default: "openclaw" },
            inference_mode: { type: "string", enum: ["default_gateway"], default: "default_gateway" },
            inference_model: { type: "string", enum: opts.models },
          },
        },
        Instance: {
          type: "object",
          required: [
            "name", "status", "agent", "hostname", "public_key", "inference_mode", "inference_model", "egress_limit_bytes",
            "failure_code", "failure_message", "terminated_reason", "created_at", "ready_at", "terminated_at",
          ],
          properties: {
            name: { type: "string", pattern: "^[a-z0-9]{8}$" },
            status: { type: "string", enum: [...INSTANCE_STATUSES] },
            agent: { type: "string" },
            hostname: { type: "string" },
            public_key: { type: "string" },
            inference_mode: { type: "string" },
            inference_model: { type: "string" },
            egress_limit_bytes: { type: "integer" },
            failure_code: { type: ["string", "null"] },
            failure_message: { type: ["string", "null"] },
            terminated_reason: { type: ["string", "null"], enum: ["deleted_via_api", null] },
            created_at: { type: "string", format: "date-time" },
            ready_at: { type: ["string", "null"], format: "date-time" },
            terminated_at: { type: ["string", "null"], format: "date-time" },
            ssh: {
              description: "Extension: how to reach the instance over SSH (null until ready).",
              oneOf: [{ type: "null" }, { type: "object", properties: { host: { type: "string" }, port: { type: "integer" }, user: { type: "string" } } }],
            },
            egress: {
              description: "Extension: egress the host counted for this instance against egress_limit_bytes (null before the first sample).",
              oneOf: [
                { type: "null" },
                {
                  type: "object",
                  properties: {
                    bytes: { type: "integer" },
                    observed_at: { type: "string", format: "date-time" },
                    blocked: { type: "boolean" },
                    block_applied_at: { type: ["string", "null"], format: "date-time" },
                  },
                },
              ],
            },
          },
        },
        InstanceEvent: {
          type: "object",
          properties: {
            seq: { type: "integer" },
            type: { type: "string" },
            from_status: { type: ["string", "null"] },
            to_status: { type: ["string", "null"] },
            message: { type: ["string", "null"] },
            at: { type: "string", format: "date-time" },
          },
        },
        Usage: {
          type: "object",
          properties: {
            pricing: {
              type: "object",
              properties: {
                period_start: { type: "string", format: "date-time" },
                period_end: { type: "string", format: "date-time" },
                subscription_cost_usd: { type: "string" },
                instance_hours_included: { type: "integer" },
                overage_per_hour_usd: { type: "string" },
              },
            },
            usage: {
              type: "object",
              properties: {
                instance_hours_used: { type: "number" },
                inference_cost_usd: { type: "string" },
                egress_bytes: { type: "integer" },
                egress_limit_bytes: { type: "integer" },
                egress_observed_at: { type: ["string", "null"], format: "date-time" },
                egress_blocked: { type: "boolean" },
                egress_block_applied_at: { type: ["string", "null"], format: "date-time" },
              },
            },
          },
        },
        ErrorEnvelope: {
          type: "object",
          required: ["request_id", "correlation_id", "error"],
          properties: {
            request_id: { type: "string" },
            correlation_id: { type: ["string", "null"] },
            error: {
              type: "object",
              required: ["code", "message"],
              properties: { code: { type: "string", enum: [...API_ERROR_CODES] }, message: { type: "string" }, param: { type: "string" } },
            },
          },
        },
      },
    },
  };
}

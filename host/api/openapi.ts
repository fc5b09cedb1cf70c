import { API_ERROR_CODES, INSTANCE_STATUSES } from "../../shared/api/types.js";
import { MANIFEST_MEASUREMENTS, TCB_STATUSES } from "../../shared/tdx/index.js";
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
  const hexString = { type: "string", pattern: "^[0-9a-f]*$" };
  const measurementReport = {
    type: "object",
    description:
      "Fail-closed comparison of MRTD and RTMR0–2: ok only when all four matched, or the unchecked ones (no expected value) were waived by allow_unchecked; " +
      "checked (how many were compared), checks [{name, result: matched|mismatched|unchecked, expected (null when absent), actual, waived}], matched, mismatched, unchecked, allow_unchecked, reason.",
  };

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
          parameters: [
            { name: "limit", in: "query", required: false, description: "Instances per page.", schema: { type: "integer", minimum: 1, maximum: 1000, default: 100 } },
            { name: "cursor", in: "query", required: false, description: "The next_cursor of the previous page; opaque.", schema: { type: "string", maxLength: 64 } },
          ],
          responses: {
            ...ok(200, "A page of the tenant's instances (terminated ones for 30 days), oldest first; next_cursor is null only on the last page", {
              type: "object",
              required: ["instances", "next_cursor"],
              properties: { instances: { type: "array", items: ref("Instance") }, next_cursor: { type: ["string", "null"] } },
            }),
            ...errors("invalid_request", ...common),
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
      "/v1/instances/{name}/attestation": {
        get: {
          operationId: "getInstanceAttestation",
          description:
            "Extension: asks the instance's agent for a fresh TDX quote whose REPORTDATA is SHA-512(\"cvm-attest-v1\\0\" ‖ u32be len ‖ nonce ‖ per sorted SSH host key \"type base64\": u32be len ‖ key), " +
            "and verifies it on the host: DCAP (PCK chain to Intel's SGX Root CA, CRLs, QE report, signature, TCB status) with collateral from CVM_COLLATERAL_FILE or CVM_PCCS_URL at the server's current time, " +
            "REPORTDATA recomputed from the nonce and the host keys the agent reported at ready (and SSH confirmed), MRTD/RTMR0–2 against the manifest of the image the instance booted from, and RTMR3 by replaying the event log. " +
            "Where the guest has no TDX (no quote interface, or a driver whose guests cannot attest) the answer is 200 with available=false, the agent's reason, its event log and verdict=null: no quote is ever fabricated. " +
            "Verify the quote yourself too (cvm-verify in the instance, or POST /v1/attestation/verify): the host's verdict is a convenience, not a root of trust.",
          parameters: [
            nameParam,
            { name: "nonce", in: "query", required: true, description: "Your fresh random challenge, hex, 16 to 64 bytes.", schema: { type: "string", pattern: "^([0-9a-fA-F]{2}){16,64}$" } },
            {
              name: "allow_unchecked",
              in: "query",
              required: false,
              description: "Comma list of mrtd, rtmr0, rtmr1, rtmr2 you accept unchecked where the image manifest has no value (it never excuses a mismatch).",
              schema: { type: "string", pattern: "^(mrtd|rtmr[012])(,(mrtd|rtmr[012]))*$" },
            },
          ],
          responses: {
            ...ok(200, "Evidence and the host's verdict (available=true), or why there is none (available=false, verdict=null)", ref("InstanceAttestation")),
            ...errors("invalid_request", "not_found", "conflict", "unavailable", ...common),
          },
        },
      },
      "/v1/attestation/verify": {
        post: {
          operationId: "verifyQuote",
          description:
            "Extension: verifies a TDX quote you supply (no instance needed). Collateral: the one in the body, else the server's (CVM_COLLATERAL_FILE, then CVM_PCCS_URL, chosen by the quote's FMSPC); " +
            "with neither, ok=false and reason says so. A quote that fails verification (including one that does not parse, or an SGX quote) is still 200 with ok=false, reason and failure; " +
            "malformed input (quote neither base64 nor hex, body over 64 KiB, collateral of the wrong shape, bad at or report_data) is 400 invalid_request naming the field.",
          requestBody: { required: true, content: { "application/json": { schema: ref("VerifyQuote") } } },
          responses: { ...ok(200, "The verdict", ref("QuoteVerdict")), ...errors("invalid_request", ...common) },
        },
      },
      "/v1/images/{id}/manifest": {
        get: {
          operationId: "getImageManifest",
          description:
            "Extension: the manifest.json of an image this server has (the current one, or one beside it that instances booted from; an attestation answer's image_id names it), " +
            "for comparison with the manifest you build from the same commit (make image prints its sha256), not for trust: pass your own to cvm-verify.",
          parameters: [{ name: "id", in: "path", required: true, schema: { type: "string", pattern: "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$" } }],
          responses: {
            ...ok(200, "The manifest", {
              type: "object",
              required: ["image_id", "sha256", "manifest"],
              properties: { image_id: { type: "string" }, sha256: { ...hexString, description: "SHA-256 of the manifest file's bytes" }, manifest: { type: "object" } },
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
        Measurements: {
          type: ["object", "null"],
          description: "Fields of the TD report, lowercase hex; present whenever the quote parses (trust them only when the verdict is ok).",
          properties: Object.fromEntries(
            ["mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3", "mr_config_id", "mr_owner", "mr_owner_config", "report_data", "td_attributes", "xfam", "tee_tcb_svn", "mr_seam", "mr_signer_seam", "seam_attributes", "tee_tcb_svn2", "mr_servicetd"].map((k) => [k, hexString]),
          ),
        },
        Rtmr3Event: {
          type: "object",
          required: ["imr", "digest", "event_type", "event"],
          properties: { imr: { const: 3 }, digest: { type: "string", description: "SHA-384(utf8(event_type + \":\" + event)), hex" }, event_type: { type: "string" }, event: { type: "string" } },
        },
        Collateral: {
          type: "object",
          description: "Intel DCAP collateral, field names of dcap-qvl's QuoteCollateralV3 (as in collateral.json).",
          required: ["pck_crl_issuer_chain", "root_ca_crl", "pck_crl", "tcb_info_issuer_chain", "tcb_info", "tcb_info_signature", "qe_identity_issuer_chain", "qe_identity", "qe_identity_signature"],
          properties: {
            pck_crl_issuer_chain: { type: "string", description: "PEM" },
            root_ca_crl: { type: "string", description: "hex DER" },
            pck_crl: { type: "string", description: "hex DER" },
            tcb_info_issuer_chain: { type: "string", description: "PEM" },
            tcb_info: { type: "string", description: "the tcbInfo JSON text exactly as signed" },
            tcb_info_signature: { type: "string", description: "hex r‖s" },
            qe_identity_issuer_chain: { type: "string", description: "PEM" },
            qe_identity: { type: "string", description: "the enclaveIdentity JSON text exactly as signed" },
            qe_identity_signature: { type: "string", description: "hex r‖s" },
          },
        },
        VerifyQuote: {
          type: "object",
          additionalProperties: false,
          required: ["quote"],
          properties: {
            quote: { type: "string", description: "The quote: hex if the string is only hex digits, otherwise standard padded base64. At most 64 KiB decoded." },
            collateral: ref("Collateral"),
            at: { oneOf: [{ type: "string", format: "date-time" }, { type: "number", description: "Unix seconds" }], description: "Verification time; default now." },
            report_data: { type: "string", pattern: "^[0-9a-fA-F]{128}$", description: "Expected REPORTDATA (64 bytes hex); a difference makes ok false." },
            expected_measurements: {
              type: "object",
              additionalProperties: false,
              description: "An image manifest's expected_measurements: mrtd, rtmr0, rtmr1, rtmr2, each 48 bytes hex or null. Compared fail-closed: ok only when all four matched, or the missing ones are in allow_unchecked.",
              properties: Object.fromEntries(MANIFEST_MEASUREMENTS.map((k) => [k, { type: ["string", "null"], pattern: "^[0-9a-fA-F]{96}$" }])),
            },
            allow_unchecked: {
              type: "array",
              items: { type: "string", enum: [...MANIFEST_MEASUREMENTS] },
              description: "Registers accepted unchecked where expected_measurements has no value (never excuses a mismatch); needs expected_measurements.",
            },
          },
        },
        QuoteVerdict: {
          type: "object",
          required: ["ok", "status", "advisory_ids", "reason", "failure", "fmspc", "measurements", "at", "collateral_source", "accepted_statuses"],
          properties: {
            ok: {
              type: "boolean",
              description:
                "Every check passed and the TCB status is one of accepted_statuses (the operator's CVM_ACCEPT_TCB_STATUS, default UpToDate); a DCAP-valid OutOfDate quote is ok=false with failure {stage: policy, code: tcb_status_not_accepted} unless the operator accepts it.",
            },
            accepted_statuses: { type: "array", items: { type: "string", enum: [...TCB_STATUSES] }, description: "The TCB statuses this server accepted for the verdict." },
            status: { type: ["string", "null"], enum: [...TCB_STATUSES, null] },
            advisory_ids: { type: "array", items: { type: "string" } },
            reason: { type: ["string", "null"] },
            failure: {
              oneOf: [
                { type: "null" },
                {
                  type: "object",
                  properties: {
                    stage: { type: "string", enum: ["parse", "collateral", "pck_chain", "qe_report", "quote_signature", "tcb", "policy", "internal", "report_data", "measurements"] },
                    code: { type: "string" },
                  },
                },
              ],
            },
            fmspc: { type: ["string", "null"] },
            measurements: ref("Measurements"),
            quote: { type: ["object", "null"], description: "Header facts: version, body_type, report_type, size, signed_length, trailing_bytes, qe_vendor_id, user_data." },
            tcb: { type: ["object", "null"], description: "platform_status, tdx_module_status, qe_status, tcb_date, tcb_evaluation_data_number." },
            pck: { type: ["object", "null"], description: "PCK leaf: subject, issuer, serial, ca_type, cpu_svn, pce_svn, sgx_tcb_components." },
            at: { type: "string", format: "date-time" },
            collateral_source: { type: ["string", "null"], enum: ["request", "file", "pccs", null] },
            report_data: {
              type: "object",
              description: "Only when report_data was given.",
              properties: { ok: { type: "boolean" }, expected: hexString, actual: { type: ["string", "null"] }, reason: { type: ["string", "null"] } },
            },
            manifest: { ...measurementReport, description: `Only when expected_measurements was given. ${measurementReport.description}` },
          },
        },
        InstanceAttestation: {
          type: "object",
          required: ["name", "nonce", "available", "event_log", "measurements", "verdict"],
          properties: {
            name: { type: "string" },
            nonce: hexString,
            available: { type: "boolean", description: "False where the guest has no TDX: then reason says why, verdict is null and there is no quote." },
            reason: { type: "string", description: "available=false only." },
            quote: { type: "string", description: "available=true only: the quote, base64." },
            report_data: { type: "string", description: "available=true only: REPORTDATA as the agent computed it, hex." },
            host_keys: { type: "array", items: { type: "string" }, description: "available=true only: the SSH host keys REPORTDATA binds." },
            image_id: { type: ["string", "null"] },
            event_log: { type: "array", items: ref("Rtmr3Event") },
            measurements: ref("Measurements"),
            verdict: {
              oneOf: [
                { type: "null" },
                {
                  type: "object",
                  required: ["ok", "reason", "status", "advisory_ids", "fmspc", "at", "collateral_source", "accepted_statuses", "allow_unchecked", "checks"],
                  properties: {
                    ok: { type: "boolean", description: "All four checks passed (the quote's TCB status among accepted_statuses)." },
                    accepted_statuses: { type: "array", items: { type: "string", enum: [...TCB_STATUSES] } },
                    allow_unchecked: { type: "array", items: { type: "string", enum: [...MANIFEST_MEASUREMENTS] } },
                    reason: { type: ["string", "null"], description: "The first failing check, as \"<check>: <reason>\"." },
                    status: { type: ["string", "null"], enum: [...TCB_STATUSES, null] },
                    advisory_ids: { type: "array", items: { type: "string" } },
                    fmspc: { type: ["string", "null"] },
                    tcb: { type: ["object", "null"] },
                    at: { type: "string", format: "date-time" },
                    collateral_source: { type: ["string", "null"], enum: ["file", "pccs", null] },
                    checks: {
                      type: "object",
                      properties: {
                        quote: { type: "object", description: "DCAP: ok, reason, failure {stage, code}." },
                        report_data: { type: "object", description: "ok, expected (recomputed by the host), actual (in the quote), agent_reported, reason." },
                        measurements: { ...measurementReport, description: `image_id and ${measurementReport.description}` },
                        event_log: { type: "object", description: "ok, replayed, expected (RTMR3), events, reason." },
                      },
                    },
                  },
                },
              ],
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

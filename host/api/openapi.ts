import { z } from "zod";
import { Rtmr3Event } from "../../shared/protocol/messages.js";
import {
  API_ERROR_CODES,
  AttestationQuery,
  CommonHeaders,
  createInstanceBody,
  CreateInstanceHeaders,
  dataEnvelope,
  ErrorEnvelope,
  errorEnvelope,
  ImageManifest,
  ImagePath,
  Instance,
  InstanceAttestation,
  InstanceEvent,
  InstanceEvents,
  InstancePage,
  InstancePath,
  InstanceVerdict,
  ListInstancesQuery,
  OpenApiDocument,
  QuoteVerification,
  ReportDataCheck,
  Usage,
  VerifyQuoteBody,
  type ApiErrorCode,
} from "../../shared/api/schemas.js";
import { Collateral, EventLogCheck, ExpectedMeasurements, MeasurementCheck, MeasurementReport, Measurements, PckFacts, QuoteFacts, TcbFacts } from "../../shared/tdx/index.js";
import { ERROR_DOCS, HTTP_STATUS } from "./errors.js";

type Catalogue = { models: readonly string[]; default: string };

/**
 * Named schemas of the document (components/schemas), by the name the document gives them; the
 * shapes themselves are in shared/api/schemas.ts (and shared/tdx for the TDX parts). Requests are
 * described as a client writes them (zod's input side), responses as the server writes them.
 */
function requestComponents(catalogue: Catalogue): Record<string, z.ZodType> {
  return { CreateInstance: createInstanceBody(catalogue), VerifyQuote: VerifyQuoteBody, Collateral, ExpectedMeasurements };
}

const RESPONSE_COMPONENTS: Record<string, z.ZodType> = {
  Instance,
  InstanceResponse: dataEnvelope(Instance),
  InstancePageResponse: dataEnvelope(InstancePage),
  InstanceEvent,
  InstanceEventsResponse: dataEnvelope(InstanceEvents),
  Usage,
  UsageResponse: dataEnvelope(Usage),
  ImageManifestResponse: dataEnvelope(ImageManifest),
  Measurements,
  QuoteFacts,
  TcbFacts,
  PckFacts,
  MeasurementCheck,
  MeasurementReport,
  ReportDataCheck,
  EventLogCheck,
  Rtmr3Event,
  QuoteVerdict: QuoteVerification,
  QuoteVerdictResponse: dataEnvelope(QuoteVerification),
  InstanceVerdict,
  InstanceAttestation,
  InstanceAttestationResponse: dataEnvelope(InstanceAttestation),
  OpenApiDocument,
  ErrorEnvelope,
  ...Object.fromEntries(API_ERROR_CODES.map((c) => [errorComponent(c), errorEnvelope(c)])),
};

function errorComponent(code: ApiErrorCode): string {
  return `ErrorEnvelope.${code}`;
}

type Method = "get" | "post" | "delete";

/** One route as the document describes it. */
interface Operation {
  method: Method;
  /** OpenAPI path template: the router's path with {name} for :name. */
  path: string;
  operationId: string;
  description?: string;
  /** False only for the document itself; every tenant route needs the Bearer token. */
  authenticated: boolean;
  pathParams?: z.ZodObject;
  query?: z.ZodObject;
  headers?: z.ZodObject;
  /** Component name of the JSON request body. */
  body?: string;
  /** Success statuses: description and the component name of the body. */
  ok: Record<number, { description: string; schema: string }>;
  /** Error codes the route answers with (each has its one HTTP status, errors.ts). */
  errors: ApiErrorCode[];
}

/** What every tenant route can answer: authentication, the suspended tenant, limits, faults, draining. */
const TENANT_ERRORS = ["unauthenticated", "forbidden", "rate_limited", "internal_error", "unavailable"] as const;

/**
 * Every route cvmd serves, as the document describes it. A new route: its request and response
 * schemas in shared/api/schemas.ts (responses registered in RESPONSE_COMPONENTS above), an entry
 * here with every status it answers, and a sample of each status in
 * test/api/openapi-conformance.test.ts (that test fails until each one is there).
 */
const OPERATIONS: Operation[] = [
  {
    method: "post",
    path: "/v1/instances",
    operationId: "createInstance",
    authenticated: true,
    headers: CreateInstanceHeaders,
    body: "CreateInstance",
    ok: { 202: { description: "Accepted; status is provisioning", schema: "InstanceResponse" } },
    errors: ["invalid_request", "conflict", ...TENANT_ERRORS],
  },
  {
    method: "get",
    path: "/v1/instances",
    operationId: "listInstances",
    authenticated: true,
    query: ListInstancesQuery,
    ok: {
      200: {
        description: "A page of the tenant's instances (terminated ones for 30 days), oldest first; next_cursor is null only on the last page",
        schema: "InstancePageResponse",
      },
    },
    errors: ["invalid_request", ...TENANT_ERRORS],
  },
  {
    method: "get",
    path: "/v1/instances/{name}",
    operationId: "getInstance",
    authenticated: true,
    pathParams: InstancePath,
    ok: { 200: { description: "The instance", schema: "InstanceResponse" } },
    errors: ["not_found", ...TENANT_ERRORS],
  },
  {
    method: "delete",
    path: "/v1/instances/{name}",
    operationId: "deleteInstance",
    authenticated: true,
    pathParams: InstancePath,
    ok: { 202: { description: "terminating or terminated", schema: "InstanceResponse" } },
    errors: ["not_found", ...TENANT_ERRORS],
  },
  {
    method: "get",
    path: "/v1/instances/{name}/events",
    operationId: "listInstanceEvents",
    description: "Extension: the instance's status transitions and provisioning progress, in sequence order.",
    authenticated: true,
    pathParams: InstancePath,
    ok: { 200: { description: "Events", schema: "InstanceEventsResponse" } },
    errors: ["not_found", ...TENANT_ERRORS],
  },
  {
    method: "get",
    path: "/v1/instances/{name}/attestation",
    operationId: "getInstanceAttestation",
    description:
      "Extension: asks the instance's agent for a fresh TDX quote whose REPORTDATA is SHA-512(\"cvm-attest-v1\\0\" ‖ u32be len ‖ nonce ‖ per sorted SSH host key \"type base64\": u32be len ‖ key), " +
      "and verifies it on the host: DCAP (PCK chain to Intel's SGX Root CA, CRLs, QE report, signature, TCB status) with collateral from CVM_COLLATERAL_FILE or CVM_PCCS_URL at the server's current time, " +
      "REPORTDATA recomputed from the nonce and the host keys the agent reported at ready (and SSH confirmed), MRTD/RTMR0–2 against the manifest of the image the instance booted from, and RTMR3 by replaying the event log. " +
      "Where the guest has no TDX (no quote interface, or a driver whose guests cannot attest) the answer is 200 with available=false, the agent's reason, its event log and verdict=null: no quote is ever fabricated. " +
      "Verify the quote yourself too (cvm-verify in the instance, or POST /v1/attestation/verify): the host's verdict is a convenience, not a root of trust.",
    authenticated: true,
    pathParams: InstancePath,
    query: AttestationQuery,
    ok: { 200: { description: "Evidence and the host's verdict (available=true), or why there is none (available=false, verdict=null)", schema: "InstanceAttestationResponse" } },
    errors: ["invalid_request", "not_found", "conflict", ...TENANT_ERRORS],
  },
  {
    method: "post",
    path: "/v1/attestation/verify",
    operationId: "verifyQuote",
    description:
      "Extension: verifies a TDX quote you supply (no instance needed). Collateral: the one in the body, else the server's (CVM_COLLATERAL_FILE, then CVM_PCCS_URL, chosen by the quote's FMSPC); " +
      "with neither, ok=false and reason says so. A quote that fails verification (including one that does not parse, or an SGX quote) is still 200 with ok=false, reason and failure; " +
      "malformed input (quote neither base64 nor hex, body over 64 KiB, collateral of the wrong shape, bad at or report_data) is 400 invalid_request naming the field.",
    authenticated: true,
    body: "VerifyQuote",
    ok: { 200: { description: "The verdict", schema: "QuoteVerdictResponse" } },
    errors: ["invalid_request", ...TENANT_ERRORS],
  },
  {
    method: "get",
    path: "/v1/usage",
    operationId: "getUsage",
    authenticated: true,
    ok: { 200: { description: "Current billing window", schema: "UsageResponse" } },
    errors: [...TENANT_ERRORS],
  },
  {
    method: "get",
    path: "/v1/images/{id}/manifest",
    operationId: "getImageManifest",
    description:
      "Extension: the manifest.json of an image this server has (the current one, or one beside it that instances booted from; an attestation answer's image_id names it), " +
      "for comparison with the manifest you build from the same commit (make image prints its sha256), not for trust: pass your own to cvm-verify.",
    authenticated: true,
    pathParams: ImagePath,
    ok: { 200: { description: "The manifest", schema: "ImageManifestResponse" } },
    errors: ["not_found", ...TENANT_ERRORS],
  },
  {
    method: "get",
    path: "/v1/openapi.json",
    operationId: "getOpenApi",
    authenticated: false,
    ok: { 200: { description: "This document (not enveloped)", schema: "OpenApiDocument" } },
    // Before routing: the per-address limit and draining.
    errors: ["rate_limited", "unavailable"],
  },
];

/** zod's JSON Schema made readable: no date-time regex beside the format, no ±2^53 integer bounds. */
function tidy(ctx: { jsonSchema: Record<string, unknown> }): void {
  const j = ctx.jsonSchema;
  if (j.format === "date-time") delete j.pattern;
  if (j.minimum === Number.MIN_SAFE_INTEGER) delete j.minimum;
  if (j.maximum === Number.MAX_SAFE_INTEGER) delete j.maximum;
}

type JsonSchema = Record<string, unknown>;

function componentSchemas(schemas: Record<string, z.ZodType>, io: "input" | "output"): Record<string, JsonSchema> {
  const registry = z.registry<{ id: string }>();
  for (const [id, schema] of Object.entries(schemas)) registry.add(schema, { id });
  const out = z.toJSONSchema(registry, { io, uri: (id) => `#/components/schemas/${id}`, override: tidy }).schemas as Record<string, JsonSchema>;
  for (const s of Object.values(out)) {
    delete s.$schema;
    delete s.$id;
  }
  return out;
}

/** A zod object of parameters as OpenAPI parameter objects (one per key; the description moves up). */
function parameters(where: "path" | "query" | "header", schema: z.ZodObject | undefined): object[] {
  if (!schema) return [];
  const json = z.toJSONSchema(schema, { io: "input", override: tidy }) as { properties: Record<string, JsonSchema>; required?: string[] };
  return Object.entries(json.properties).map(([name, { description, ...s }]) => ({
    name,
    in: where,
    required: where === "path" || (json.required ?? []).includes(name),
    ...(description ? { description } : {}),
    schema: s,
  }));
}

const json = (schema: string) => ({ content: { "application/json": { schema: { $ref: `#/components/schemas/${schema}` } } } });

/** The OpenAPI 3.1 document of /v1, built from the schemas; a test checks it against the router's routes. */
export function openApiDocument(opts: { version: string; catalogue: Catalogue }) {
  const requests = componentSchemas(requestComponents(opts.catalogue), "input");
  const responses = componentSchemas(RESPONSE_COMPONENTS, "output");
  const clash = Object.keys(requests).find((k) => k in responses);
  if (clash) throw new Error(`component ${clash} is both a request and a response schema`);

  const paths: Record<string, Record<string, object>> = {};
  for (const op of OPERATIONS) {
    const answers: Record<string, object> = {};
    for (const [status, { description, schema }] of Object.entries(op.ok)) answers[status] = { description, ...json(schema) };
    for (const code of op.errors) answers[String(HTTP_STATUS[code])] = { description: `${code}: ${ERROR_DOCS[code]}`, ...json(errorComponent(code)) };
    (paths[op.path] ??= {})[op.method] = {
      operationId: op.operationId,
      ...(op.description ? { description: op.description } : {}),
      ...(op.authenticated ? {} : { security: [] }),
      parameters: [...parameters("path", op.pathParams), ...parameters("query", op.query), ...parameters("header", op.headers), ...parameters("header", CommonHeaders)],
      ...(op.body ? { requestBody: { required: true, ...json(op.body) } } : {}),
      responses: answers,
    };
  }

  return {
    openapi: "3.1.0",
    info: { title: "Confidential Agents API (cvm)", version: opts.version },
    servers: [{ url: "/" }],
    security: [{ bearer: [] }],
    paths,
    components: {
      securitySchemes: { bearer: { type: "http", scheme: "bearer", description: "ca_<8 lowercase alphanumerics>_<18 lowercase alphanumerics>" } },
      schemas: { ...requests, ...responses },
    },
  };
}

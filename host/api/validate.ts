import type { z } from "zod";
import { COMPLETE_MESSAGE } from "../../shared/api/schemas.js";
import { ApiError } from "./errors.js";

/** `a.b[0]`: where an issue is, as the client wrote it. */
function fieldName(path: readonly PropertyKey[]): string {
  let out = "";
  for (const k of path) out += typeof k === "number" ? `[${k}]` : out ? `.${String(k)}` : String(k);
  return out;
}

/**
 * Parses client input (a body, a query, path parameters, headers) with one of the API's schemas
 * (shared/api/schemas.ts), or throws the contract's invalid_request for the first problem: an
 * unknown field before anything else (as "unknown field: x"), then the first field in the schema's
 * order, its name in front of the schema's message and in error.param.
 */
export function parseInput<S extends z.ZodType>(schema: S, input: unknown): z.output<S> {
  const r = schema.safeParse(input);
  if (r.success) return r.data;
  const issues = r.error.issues;
  const issue = issues.find((i) => i.code === "unrecognized_keys") ?? issues[0]!;
  if (issue.code === "unrecognized_keys") {
    const key = String(issue.keys[0]);
    throw new ApiError("invalid_request", `unknown field: ${fieldName([...issue.path, key])}`, { param: issue.path.length ? String(issue.path[0]) : key });
  }
  const param = issue.path.length ? String(issue.path[0]) : undefined;
  const complete = issue.code === "custom" && issue.params?.complete === COMPLETE_MESSAGE.complete;
  throw new ApiError("invalid_request", complete || !param ? issue.message : `${fieldName(issue.path)} ${issue.message}`, { param });
}

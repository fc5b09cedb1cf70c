import type { Context } from "koa";
import { ApiError } from "../errors.js";

export const MAX_BODY_BYTES = 64 * 1024;

/** Reads a JSON object body: application/json only, at most 64 KiB, malformed JSON is invalid_request. */
export async function readJsonBody(ctx: Context): Promise<Record<string, unknown>> {
  const type = ctx.get("Content-Type");
  if (!/^application\/json\s*(;|$)/i.test(type)) {
    throw new ApiError("invalid_request", "Content-Type must be application/json");
  }
  const declared = Number(ctx.get("Content-Length") || "0");
  if (declared > MAX_BODY_BYTES) {
    ctx.req.resume();
    throw new ApiError("invalid_request", `request body exceeds ${MAX_BODY_BYTES} bytes`);
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of ctx.req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) {
      ctx.req.resume();
      throw new ApiError("invalid_request", `request body exceeds ${MAX_BODY_BYTES} bytes`);
    }
    chunks.push(chunk);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.concat(chunks).toString("utf8"));
  } catch {
    throw new ApiError("invalid_request", "request body is not valid JSON");
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw new ApiError("invalid_request", "request body must be a JSON object");
  }
  return parsed as Record<string, unknown>;
}

import { readFileSync } from "node:fs";

/**
 * The operator's model catalogue: which `inference_model` ids tenants may pick, where each is served
 * and what it costs. Keys are never in the file: `api_key_env` names the environment variable.
 */
export interface CatalogueModel {
  id: string;
  upstream: { base_url: string; api_key_env: string | null };
  price_per_mtok_usd: { input: string; output: string };
}

export interface ModelCatalogue {
  default: string;
  models: CatalogueModel[];
}

/** Used when CVM_MODELS_FILE is unset: a local Ollama on the host, free of charge. */
export const BUILTIN_CATALOGUE: ModelCatalogue = Object.freeze({
  default: "llama3.1-8b",
  models: [
    {
      id: "llama3.1-8b",
      upstream: { base_url: "http://127.0.0.1:11434/v1", api_key_env: null },
      price_per_mtok_usd: { input: "0.00", output: "0.00" },
    },
  ],
}) as ModelCatalogue;

const DECIMAL_USD = /^\d{1,9}(\.\d{1,6})?$/;
const MODEL_ID = /^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$/;

export class CatalogueError extends Error {
  override name = "CatalogueError";
}

export function validateCatalogue(raw: unknown, source: string): ModelCatalogue {
  const fail = (msg: string): never => {
    throw new CatalogueError(`${source}: ${msg}`);
  };
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) fail("must be a JSON object");
  const obj = raw as Record<string, unknown>;
  if (!Array.isArray(obj.models) || obj.models.length === 0) fail("models must be a non-empty array");
  const seen = new Set<string>();
  const models = (obj.models as unknown[]).map((m, i): CatalogueModel => {
    const at = `models[${i}]`;
    if (typeof m !== "object" || m === null) fail(`${at} must be an object`);
    const mm = m as Record<string, any>;
    if (typeof mm.id !== "string" || !MODEL_ID.test(mm.id)) fail(`${at}.id must be a model id (letters, digits, . _ : / -)`);
    if (seen.has(mm.id)) fail(`${at}.id ${mm.id} is listed twice`);
    seen.add(mm.id);
    const up = mm.upstream;
    if (typeof up !== "object" || up === null) fail(`${at}.upstream must be an object`);
    let url: URL | undefined;
    try {
      url = new URL(up.base_url);
    } catch {
      fail(`${at}.upstream.base_url must be an absolute http(s) URL`);
    }
    if (url!.protocol !== "http:" && url!.protocol !== "https:") fail(`${at}.upstream.base_url must be http or https`);
    // Credentials in the URL would be written wherever the upstream is logged; the URL itself is never echoed here.
    if (url!.username !== "" || url!.password !== "") fail(`model ${mm.id}: upstream.base_url carries credentials (user:pass@); remove them and name the key's environment variable in api_key_env`);
    const keyEnv = up.api_key_env ?? null;
    if (keyEnv !== null && (typeof keyEnv !== "string" || !/^[A-Z_][A-Z0-9_]*$/.test(keyEnv))) fail(`${at}.upstream.api_key_env must name an environment variable`);
    const price = mm.price_per_mtok_usd;
    if (typeof price !== "object" || price === null) fail(`${at}.price_per_mtok_usd must be an object`);
    for (const k of ["input", "output"] as const) {
      if (typeof price[k] !== "string" || !DECIMAL_USD.test(price[k])) fail(`${at}.price_per_mtok_usd.${k} must be a decimal string such as "2.50"`);
    }
    return { id: mm.id, upstream: { base_url: up.base_url, api_key_env: keyEnv }, price_per_mtok_usd: { input: price.input, output: price.output } };
  });
  if (typeof obj.default !== "string" || !seen.has(obj.default)) fail("default must be the id of one of the models");
  return { default: obj.default as string, models };
}

export function loadCatalogue(path: string | undefined): ModelCatalogue {
  if (!path) return BUILTIN_CATALOGUE;
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new CatalogueError(`CVM_MODELS_FILE ${path}: cannot read (${(err as Error).message})`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new CatalogueError(`CVM_MODELS_FILE ${path}: not valid JSON (${(err as Error).message})`);
  }
  return validateCatalogue(raw, `CVM_MODELS_FILE ${path}`);
}

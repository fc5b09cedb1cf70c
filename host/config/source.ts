import { readFileSync } from "node:fs";
import { ConfigError, lookupOf, type Lookup } from "../../shared/config/settings.js";

/**
 * Where every setting comes from, for cvmd and cvmctl alike: the environment, over the JSON file
 * named by CVM_CONFIG_FILE (same keys). The one precedence rule: the environment wins; empty is unset.
 */
export function configSource(env: Record<string, string | undefined>): { get: Lookup; fileKeys: string[] } {
  const path = env.CVM_CONFIG_FILE;
  if (!path) return { get: lookupOf(env), fileKeys: [] };
  let file: Record<string, string>;
  try {
    const parsed = JSON.parse(readFileSync(path, "utf8")) as unknown;
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new Error("not a JSON object");
    file = {};
    for (const [k, v] of Object.entries(parsed)) {
      // Numbers and booleans are fine as JSON; nested values are not a setting of ours.
      if (typeof v === "object" && v !== null) throw new Error(`${k}: expected a string or number, not ${Array.isArray(v) ? "an array" : "an object"}`);
      file[k] = v === null ? "" : String(v);
    }
  } catch (err) {
    throw new ConfigError("CVM_CONFIG_FILE", `CVM_CONFIG_FILE=${path}: ${(err as Error).message}`);
  }
  return { get: lookupOf(env, file), fileKeys: Object.keys(file) };
}

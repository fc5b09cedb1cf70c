import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { isAbsolute, join, normalize } from "node:path";
import type { SetupParams } from "../../shared/protocol/messages.js";
import type { RootFs } from "../system/root-fs.js";

/** /etc/cvm/openclaw.json, written by the image build. Paths are guest paths. */
export interface OpenClawManifest {
  version: string;
  /** Install directory of the pinned npm tree. */
  dir: string;
  /** The pinned Node runtime binary. */
  node: string;
  tree_digest: string;
  /** The tree listing file (see openclaw-tree.ts for its format). */
  listing: string;
}

export class ManifestError extends Error {
  override name = "ManifestError";
}

export async function readOpenClawManifest(root: RootFs, manifestPath: string): Promise<OpenClawManifest> {
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(root.path(manifestPath), "utf8"));
  } catch (err) {
    throw new ManifestError(`cannot read ${manifestPath}: ${(err as Error).message}`);
  }
  const o = raw as Record<string, unknown>;
  const s = (k: string) => {
    const v = o?.[k];
    if (typeof v !== "string" || v.length === 0) throw new ManifestError(`${manifestPath}: ${k} must be a non-empty string`);
    return v;
  };
  const m: OpenClawManifest = { version: s("version"), dir: s("dir"), node: s("node"), tree_digest: s("tree_digest"), listing: s("listing") };
  for (const k of ["dir", "node", "listing"] as const) if (!isAbsolute(m[k])) throw new ManifestError(`${manifestPath}: ${k} must be an absolute path`);
  if (!/^[0-9a-f]{64}$/.test(m.tree_digest)) throw new ManifestError(`${manifestPath}: tree_digest must be a SHA-256 hex digest`);
  return m;
}

export interface OpenClawPackage {
  /** Guest path of the package directory. */
  packageDir: string;
  /** Package-relative path of the `openclaw` bin. */
  bin: string;
  version: string;
  /** Paths relative to the manifest dir that spot verification always hashes. */
  keyFiles: string[];
}

/** Finds the openclaw package inside the install dir and its bin, as the package itself declares it. */
export async function locateOpenClawPackage(root: RootFs, manifest: OpenClawManifest): Promise<OpenClawPackage> {
  const candidates = ["node_modules/openclaw", "."];
  for (const rel of candidates) {
    const pkgDir = normalize(join(manifest.dir, rel));
    let pkg: Record<string, unknown>;
    try {
      pkg = JSON.parse(await readFile(root.path(join(pkgDir, "package.json")), "utf8"));
    } catch {
      continue;
    }
    if (pkg.name !== "openclaw") continue;
    const bins = pkg.bin;
    const bin = typeof bins === "string" ? bins : (bins as Record<string, unknown> | undefined)?.openclaw;
    if (typeof bin !== "string" || isAbsolute(bin) || normalize(bin).startsWith("..")) throw new ManifestError("openclaw package.json has no usable bin");
    const prefix = rel === "." ? "" : `${rel}/`;
    return {
      packageDir: pkgDir,
      bin: normalize(bin),
      version: String(pkg.version ?? ""),
      keyFiles: [`${prefix}package.json`, `${prefix}${normalize(bin)}`],
    };
  }
  throw new ManifestError(`no openclaw package under ${manifest.dir}`);
}

/**
 * OpenClaw's configuration, a pure function of the setup parameters and the port, so the tenant can
 * recompute its digest from what they asked for and compare it with the `openclaw-config` event.
 * The gateway token is deliberately not in here (it is passed through the environment).
 */
export function renderOpenClawConfig(params: SetupParams, port: number): string {
  const model = params.inference_model;
  const config = {
    gateway: gatewaySection(port),
    models: {
      mode: "merge",
      providers: {
        cvm: {
          baseUrl: params.gateway_address,
          apiKey: "cvm-gateway",
          api: "openai-completions",
          models: [{ id: model, name: model }],
        },
      },
    },
    agents: { defaults: { model: { primary: `cvm/${model}` } } },
    update: { checkOnStart: false },
  };
  return JSON.stringify(config, null, 2) + "\n";
}

/**
 * OpenClaw's gateway section. OpenClaw 2026.9.6 restarts the gateway for almost any change under
 * `gateway.*` (dist/config-reload-plan-*.mjs: prefix "gateway" is kind "restart", and so is
 * gateway.auth.token), so the neutral configuration of a pool guest carries exactly this section,
 * and the claim changes only `models` and `agents.defaults.model`, which it reloads hot. The reload
 * mode stays OpenClaw's default ("hybrid"): "hot" would silently ignore a change that needs a restart.
 */
function gatewaySection(port: number) {
  return { mode: "local", port, bind: "loopback", auth: { mode: "token" } };
}

/**
 * The configuration a pool guest's OpenClaw starts with before any tenant exists: the tenant
 * configuration's gateway and update sections, no model provider and no default model. The remote
 * model catalog refresh (an HTTPS fetch to OpenClaw's catalog service) is off: an unclaimed guest has
 * no business on the network. Its digest is recorded as the `openclaw-config-neutral` event.
 */
export function renderNeutralOpenClawConfig(port: number): string {
  const config = {
    gateway: gatewaySection(port),
    models: { catalogRefresh: { enabled: false } },
    update: { checkOnStart: false },
  };
  return JSON.stringify(config, null, 2) + "\n";
}

export function configDigest(text: string): string {
  return createHash("sha256").update(text, "utf8").digest("hex");
}

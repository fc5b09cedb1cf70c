/**
 * cvm-verify --api: the tenant checks an instance from its own machine before the first SSH
 * connection, with nothing of cvmd but its public API, and trusts nothing cvmd concludes.
 *
 *   cvm-verify --api URL --instance NAME --manifest FILE [--ssh-key FILE] [--key-file FILE]
 *              (--collateral FILE | --pccs URL) [--known-hosts FILE] [--accept-tcb-status LIST]
 *              [--allow-unchecked REGS] [--at TIME] [--json]
 *
 * It draws its own nonce, asks GET /v1/instances/{name}/attestation?nonce=… and checks, itself:
 *   answer        it is for this instance and this nonce (a replayed or redirected answer is not)
 *   quote         DCAP to the pinned Intel root with the tenant's collateral, and the TCB policy
 *   report_data   REPORTDATA = reportDataFor(its nonce, the host keys the answer lists)
 *   measurements  MRTD, RTMR0–2 against the tenant's manifest, fail-closed
 *   event_log     the RTMR3 log replays to the quote's RTMR3
 *   ssh_key       the keys the log says the agent installed are exactly the tenant's own key
 * Only then does it write the listed host keys as known_hosts lines for the instance's SSH address
 * (the API's instance record), so `ssh -o StrictHostKeyChecking=yes` connects only to a machine
 * holding a key the quote binds. The host's own verdict in the answer is ignored.
 *
 * Exit status as the other modes: 0 every check passed (and the lines were written); 1 a check
 * failed (nothing written); 2 the check could not run (bad arguments, API unreachable or refusing,
 * instance not ready, no TDX on the instance), nothing written.
 */
import { randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { parsePublicKey, PublicKeyError } from "../../shared/ssh/public-key.js";
import {
  applyTcbPolicy,
  canonicalHostKey,
  checkEventLog,
  compareMeasurements,
  describeChecks,
  parseEventLog,
  reportDataFor,
  verifyQuote,
  type EventLogCheck,
  type ImageManifest,
  type ManifestMeasurement,
  type MeasurementReport,
  type TcbStatus,
  type Verdict,
} from "../../shared/tdx/index.js";
import { UsageError, cannotRun, collateralFor, parseCommandLine, parsePolicyOptions, processIo, verdictLines, type Io } from "./common.js";
import { InputError, readManifestFile } from "./inputs.js";
import { OWN_COMMENT_PREFIX, hostPattern, installKnownHosts, knownHostsLines } from "./known-hosts.js";
import { injectedFingerprints } from "./ssh-keys.js";

export interface TenantDeps {
  io?: Io;
  now?: () => Date;
  env?: Readonly<Record<string, string | undefined>>;
  /** Tests only (see MainDeps.rootCaDer). */
  rootCaDer?: Uint8Array;
}

export const TENANT_USAGE = `usage (tenant, from your own machine):
  cvm-verify --api URL --instance NAME --manifest FILE (--collateral FILE | --pccs URL) [options]
options:
  --api URL               cvmd's API base URL (as API_BASE in the quickstart)
  --instance NAME         the instance to check
  --key-file FILE         file holding your API key (default: the CA_API_KEY environment variable)
  --manifest FILE         the image manifest.json you built or trust (required)
  --ssh-key FILE          the public key you created the instance with
                          (default: ~/.ssh/id_ed25519.pub, else ~/.ssh/id_ecdsa.pub)
  --collateral FILE       Intel collateral for the quote (collateral.json shape)
  --pccs URL              PCCS or Intel PCS (https://api.trustedservices.intel.com) to fetch it from
  --known-hosts FILE      write the known_hosts lines there, replacing what it said about the
                          instance's SSH address (default: print them on stdout, the report on stderr)
  --accept-tcb-status LIST  comma-separated TCB statuses that pass (default: UpToDate)
  --allow-unchecked REGS  accept these registers unchecked where the manifest has no value
  --at TIME               verify at this time (ISO 8601 or Unix seconds; default: now)
  --json                  print one JSON object
exit: 0 verified and the known_hosts lines written, 1 not (nothing written), 2 could not run`;

/** The instance cannot attest (the answer says available: false): exit 2, nothing written. */
class NoTdxError extends Error {}

const API_TIMEOUT_MS = 60_000;
const DEFAULT_SSH_KEYS = [".ssh/id_ed25519.pub", ".ssh/id_ecdsa.pub"];

interface TenantOptions {
  api: URL;
  instance: string;
  apiKey: string;
  manifest: string;
  sshKey: string;
  collateral?: string;
  pccs?: string;
  knownHosts?: string;
  json: boolean;
  at?: Date;
  accept: TcbStatus[];
  allowUnchecked: ManifestMeasurement[];
}

async function parseTenantOptions(argv: string[], env: Readonly<Record<string, string | undefined>>): Promise<TenantOptions | "help"> {
  const v = parseCommandLine(argv, {
    api: { type: "string" },
    instance: { type: "string" },
    "key-file": { type: "string" },
    "ssh-key": { type: "string" },
    "known-hosts": { type: "string" },
  });
  if (v.help) return "help";
  let api: URL;
  try {
    api = new URL(v.api ?? "");
  } catch {
    throw new UsageError(`--api: "${v.api}" is not a URL (http://host:port or https://host)`);
  }
  if (api.protocol !== "http:" && api.protocol !== "https:") throw new UsageError("--api must be an http(s) URL");
  if (!v.instance || !/^[a-z0-9][a-z0-9-]{0,62}$/.test(v.instance)) throw new UsageError("--instance NAME is required (the instance's name, lowercase letters and digits)");
  if (!v.manifest) throw new UsageError("--manifest FILE is required: the image manifest.json you built or trust (without it MRTD and RTMR0-2 are not checked)");
  if (!v.collateral && !v.pccs) throw new UsageError("pass --collateral FILE or --pccs URL (Intel PCS: https://api.trustedservices.intel.com)");
  const { accept, allowUnchecked, at } = parsePolicyOptions(v);
  let apiKey = env.CA_API_KEY?.trim() ?? "";
  if (v["key-file"]) {
    try {
      apiKey = (await readFile(v["key-file"], "utf8")).split("\n")[0]!.trim();
    } catch (e) {
      throw new InputError(`cannot read --key-file ${v["key-file"]}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
  }
  if (!apiKey) throw new UsageError("no API key: pass --key-file FILE or set CA_API_KEY");
  let sshKey = v["ssh-key"];
  if (!sshKey) {
    for (const rel of DEFAULT_SSH_KEYS) {
      const candidate = env.HOME ? join(env.HOME, rel) : undefined;
      if (candidate && (await readFile(candidate).then(() => true, () => false))) {
        sshKey = candidate;
        break;
      }
    }
    if (!sshKey) throw new UsageError(`pass --ssh-key FILE, the public key you created the instance with (none of ~/${DEFAULT_SSH_KEYS.join(", ~/")} exists)`);
  }
  return {
    api,
    instance: v.instance,
    apiKey,
    manifest: v.manifest,
    sshKey,
    collateral: v.collateral,
    pccs: v.pccs,
    knownHosts: v["known-hosts"],
    json: v.json ?? false,
    at,
    accept,
    allowUnchecked,
  };
}

/** GET on the tenant API: the envelope's data, or an InputError naming the path and the API's error. */
async function apiGet(o: TenantOptions, path: string): Promise<Record<string, unknown>> {
  const url = new URL(path, o.api.href.endsWith("/") ? o.api : new URL(o.api.href + "/"));
  let res: Response;
  try {
    res = await fetch(url, { headers: { Authorization: `Bearer ${o.apiKey}`, Accept: "application/json" }, signal: AbortSignal.timeout(API_TIMEOUT_MS) });
  } catch (e) {
    const cause = (e as { cause?: { code?: string; message?: string } }).cause;
    throw new InputError(`GET ${url.origin}${url.pathname}: ${cause?.code ?? cause?.message ?? (e as Error).message}`);
  }
  const text = await res.text();
  let body: { data?: unknown; error?: { code?: string; message?: string } } | undefined;
  try {
    body = JSON.parse(text) as typeof body;
  } catch {
    body = undefined;
  }
  if (!res.ok || !body || typeof body.data !== "object" || body.data === null) {
    const why = body?.error ? `${body.error.code}: ${body.error.message}` : text.slice(0, 200);
    throw new InputError(`GET ${url.pathname}: HTTP ${res.status} ${why}`);
  }
  return body.data as Record<string, unknown>;
}

interface SshAddress {
  host: string;
  port: number;
  user: string | null;
  /** The instance's hostname (DNS resolves it to host), named in the known_hosts lines too. */
  hostname: string | null;
}

function sshAddressOf(record: Record<string, unknown>, name: string): SshAddress {
  if (record.status !== "ready") throw new InputError(`instance ${name} is ${String(record.status)}, not ready`);
  const ssh = record.ssh as { host?: unknown; port?: unknown; user?: unknown } | null | undefined;
  const port = ssh?.port;
  if (!ssh || typeof ssh.host !== "string" || !/^[A-Za-z0-9.:-]+$/.test(ssh.host) || typeof port !== "number" || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw new InputError(`instance ${name} has no usable SSH address in its record (ssh: ${JSON.stringify(ssh ?? null)})`);
  }
  // Only a hostname of this instance's own (the contract's <name>.<tenant>.<domain>) joins the lines.
  const h = typeof record.hostname === "string" ? record.hostname.toLowerCase() : "";
  const hostname = /^[a-z0-9.-]+$/.test(h) && h.startsWith(`${name}.`) ? h : null;
  return { host: ssh.host, port, user: typeof ssh.user === "string" ? ssh.user : null, hostname };
}

interface Evidence {
  quote: Buffer;
  hostKeys: string[];
  eventLog: unknown;
}

/** The parts of an available answer the checks need, or the reason it is not an answer at all. */
function evidenceOf(a: Record<string, unknown>): Evidence | string {
  if (typeof a.quote !== "string" || !/^[A-Za-z0-9+/]+={0,2}$/.test(a.quote)) return "the answer carries no base64 quote";
  if (!Array.isArray(a.host_keys) || a.host_keys.length === 0) return "the answer lists no SSH host keys";
  const hostKeys: string[] = [];
  for (const k of a.host_keys) {
    try {
      hostKeys.push(canonicalHostKey(String(k)));
    } catch (e) {
      return `the answer lists a host key that is not one: ${(e as Error).message}`;
    }
  }
  return { quote: Buffer.from(a.quote, "base64"), hostKeys, eventLog: a.event_log };
}

interface Check {
  ok: boolean;
  reason: string | null;
}

export interface TenantReport {
  ok: boolean;
  mode: "tenant";
  api: string;
  instance: string;
  nonce: string;
  reason: string | null;
  status: TcbStatus | null;
  advisory_ids: string[];
  accepted_statuses: TcbStatus[];
  allow_unchecked: ManifestMeasurement[];
  fmspc: string | null;
  measurements: Verdict["measurements"];
  verdict: Verdict | null;
  checks: {
    answer: Check;
    quote: Check;
    report_data: Check & { expected: string | null; actual: string | null; host_keys: number };
    measurements: (MeasurementReport & { path: string }) | (Check & { path: string });
    event_log: EventLogCheck | Check;
    ssh_key: Check & { expected: string; key_file: string; installed: string[] };
  };
  ssh: SshAddress;
  /** The SSH host keys the answer lists ("type base64"); trusted only when ok. */
  host_keys: string[];
  /**
   * Set only when ok: the lines, and where they went (file null: printed on stdout); `replaced` counts
   * earlier cvm-verify lines for these names dropped, `other_lines` the file's lines that still trust
   * other keys for them (ssh accepts those too).
   */
  known_hosts: { file: string | null; lines: string[]; replaced: number; other_lines: number } | null;
}

async function readInputs(o: TenantOptions): Promise<{ manifest: ImageManifest; fingerprint: string }> {
  const manifest = await readManifestFile(o.manifest);
  let text: string;
  try {
    text = await readFile(o.sshKey, "utf8");
  } catch (e) {
    throw new InputError(`cannot read --ssh-key ${o.sshKey}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  const line = text.split("\n").find((l) => l.trim() && !l.trim().startsWith("#")) ?? "";
  try {
    return { manifest, fingerprint: parsePublicKey(line).fingerprint };
  } catch (e) {
    if (e instanceof PublicKeyError) throw new InputError(`--ssh-key ${o.sshKey}: public key ${e.message}`);
    throw e;
  }
}

const notRun = (why: string): Check => ({ ok: false, reason: why });

async function runTenant(o: TenantOptions, deps: TenantDeps): Promise<TenantReport> {
  const { manifest, fingerprint } = await readInputs(o);
  const nonce = randomBytes(32);
  const nonceHex = nonce.toString("hex");
  const name = encodeURIComponent(o.instance);
  const ssh = sshAddressOf(await apiGet(o, `v1/instances/${name}`), o.instance);
  const answer = await apiGet(o, `v1/instances/${name}/attestation?nonce=${nonceHex}`);
  if (answer.available === false) {
    throw new NoTdxError(`no TDX: instance ${o.instance} cannot attest (${typeof answer.reason === "string" ? answer.reason : "no reason given"}); nothing written`);
  }

  const report: TenantReport = {
    ok: false,
    mode: "tenant",
    api: o.api.href,
    instance: o.instance,
    nonce: nonceHex,
    reason: null,
    status: null,
    advisory_ids: [],
    accepted_statuses: o.accept,
    allow_unchecked: o.allowUnchecked,
    fmspc: null,
    measurements: null,
    verdict: null,
    checks: {
      answer: { ok: true, reason: null },
      quote: notRun("no quote"),
      report_data: { ...notRun("no quote"), expected: null, actual: null, host_keys: 0 },
      measurements: { ...notRun("no quote"), path: o.manifest },
      event_log: notRun("no quote"),
      ssh_key: { ...notRun("no verified RTMR3 event log"), expected: fingerprint, key_file: o.sshKey, installed: [] },
    },
    ssh,
    host_keys: [],
    known_hosts: null,
  };
  const c = report.checks;

  const answered = { name: String(answer.name), nonce: String(answer.nonce).toLowerCase() };
  if (answered.name !== o.instance) c.answer = notRun(`the answer is for instance ${answered.name}, not ${o.instance}`);
  else if (answered.nonce !== nonceHex) {
    c.answer = notRun(`the answer is for nonce ${answered.nonce}, not the one this verifier drew (${nonceHex}): a replayed or redirected answer`);
  }
  const ev = answer.available === true ? evidenceOf(answer) : `the answer says available: ${JSON.stringify(answer.available)}`;
  if (typeof ev === "string") {
    if (c.answer.ok) c.answer = notRun(ev);
    return finish(report);
  }

  report.host_keys = ev.hostKeys;
  const collateral = await collateralFor(ev.quote, o);
  const at = o.at ?? (deps.now ?? (() => new Date()))();
  const verdict = await verifyQuote(ev.quote, collateral, { at, rootCaDer: deps.rootCaDer });
  const policy = applyTcbPolicy(verdict, o.accept);
  Object.assign(report, { verdict, status: verdict.status, advisory_ids: verdict.advisory_ids, fmspc: verdict.fmspc, measurements: verdict.measurements });
  c.quote = policy.ok ? { ok: true, reason: null } : notRun(verdict.ok ? policy.reason! : (verdict.reason ?? "the quote does not verify"));
  const m = verdict.measurements;
  if (!m) return finish(report);

  const expected = reportDataFor(nonce, ev.hostKeys).toString("hex");
  const rdOk = m.report_data === expected;
  c.report_data = {
    ok: rdOk,
    reason: rdOk
      ? null
      : `REPORTDATA does not bind this verifier's nonce and the ${ev.hostKeys.length} SSH host key(s) the answer lists: the quote was made by another machine (or for another request), so those keys are not the instance's`,
    expected,
    actual: m.report_data,
    host_keys: ev.hostKeys.length,
  };
  const mr = compareMeasurements(m, manifest, { allowUnchecked: o.allowUnchecked });
  c.measurements = { ...mr, path: o.manifest, reason: mr.ok ? null : `image manifest ${o.manifest}: ${mr.reason}` };
  const log = checkEventLog(ev.eventLog, m.rtmr3);
  c.event_log = { ...log, reason: log.reason ?? null };
  if (log.ok) {
    const installed = injectedFingerprints(parseEventLog(ev.eventLog));
    const others = [...new Set(installed.filter((fp) => fp !== fingerprint))];
    c.ssh_key = {
      ok: installed.length > 0 && others.length === 0,
      reason:
        installed.length === 0
          ? "the RTMR3 event log records no SSH key installation"
          : others.length
            ? `the RTMR3 event log says the agent installed SSH key ${others.join(", ")}, not (only) yours (${fingerprint} from ${o.sshKey})`
            : null,
      expected: fingerprint,
      key_file: o.sshKey,
      installed,
    };
  }
  return finish(report);
}

/** ok and reason from the checks, in order; each reason is prefixed by its check's name. */
function finish(r: TenantReport): TenantReport {
  const failed = Object.entries(r.checks).filter(([, c]) => !c.ok);
  r.ok = failed.length === 0;
  r.reason = r.ok ? null : failed.map(([k, c]) => `${k}: ${c.reason ?? "failed"}`).join("; ");
  return r;
}

const knownHostsNames = (a: SshAddress) => [...(a.hostname ? [hostPattern(a.hostname, a.port)] : []), hostPattern(a.host, a.port)];

function render(r: TenantReport): string {
  const c = r.checks;
  const lines = [`cvm-verify (tenant, instance ${r.instance} via ${r.api}): ${r.ok ? "OK" : "FAIL"}`];
  if (r.verdict) lines.push(...verdictLines(r.verdict, r.accepted_statuses));
  const yes = (ch: { ok: boolean; reason: string | null }, good: string) => (ch.ok ? good : `NO: ${ch.reason}`);
  lines.push(`  answer       ${yes(c.answer, `for ${r.instance} and this verifier's nonce`)}`);
  lines.push(`  binding      ${yes(c.report_data, `REPORTDATA = H(this verifier's nonce, ${c.report_data.host_keys} listed host key(s))`)}`);
  lines.push(`  manifest     ${"checks" in c.measurements ? `${c.measurements.path}: ${describeChecks(c.measurements)}` : `not compared (${c.measurements.reason})`}`);
  if (r.allow_unchecked.length) lines.push(`  waived       ${r.allow_unchecked.join(", ")} (--allow-unchecked)`);
  lines.push(`  RTMR3 log    ${"events" in c.event_log && c.event_log.ok ? `${c.event_log.events} events replay to RTMR3` : `NO: ${c.event_log.reason}`}`);
  lines.push(`  SSH key      ${yes(c.ssh_key, `the agent installed ${c.ssh_key.expected} (yours, ${c.ssh_key.key_file}) and no other`)}`);
  const addr = `${r.ssh.user ? `${r.ssh.user}@` : ""}${r.ssh.host}`;
  if (r.known_hosts) {
    const k = r.known_hosts;
    const where = k.file ? `written to ${k.file}${k.replaced ? ` (replacing ${k.replaced} earlier cvm-verify line(s))` : ""}` : "printed on stdout";
    const names = knownHostsNames(r.ssh);
    lines.push(`  known_hosts  ${k.lines.length} line(s) for ${names.join(", ")} ${where}`);
    if (k.other_lines) {
      lines.push(
        `  WARNING      ${k.file} has ${k.other_lines} other line(s) trusting other keys for these names, which ssh accepts too; ` +
          `remove them (${names.map((n) => `ssh-keygen -R '${n}'`).join("; ")}) and run cvm-verify again`,
      );
    }
    lines.push(`  connect      ssh -o StrictHostKeyChecking=yes${r.known_hosts.file ? ` -o UserKnownHostsFile=${r.known_hosts.file}` : ""} -p ${r.ssh.port} ${addr}`);
  } else lines.push(`  known_hosts  nothing written`);
  if (r.reason) lines.push(`  reason       ${r.reason}`);
  return lines.join("\n") + "\n";
}

export async function tenantMain(argv: string[], deps: TenantDeps = {}): Promise<number> {
  const io = deps.io ?? processIo;
  const json = argv.includes("--json");
  let o: TenantOptions | "help";
  try {
    o = await parseTenantOptions(argv, deps.env ?? {});
  } catch (e) {
    if (e instanceof UsageError) {
      io.err(`cvm-verify: ${e.message}\n${TENANT_USAGE}\n`);
      return 2;
    }
    return cannotRun(io, json, e, e instanceof InputError);
  }
  if (o === "help") {
    io.out(`${TENANT_USAGE}\n`);
    return 0;
  }
  let r: TenantReport;
  try {
    r = await runTenant(o, deps);
    if (r.ok) {
      const patterns = knownHostsNames(r.ssh);
      const lines = knownHostsLines(patterns, r.host_keys, `${OWN_COMMENT_PREFIX}${o.instance}`);
      const done = o.knownHosts ? await installKnownHosts(o.knownHosts, patterns, lines) : { replaced: 0, others: 0 };
      r.known_hosts = { file: o.knownHosts ?? null, lines, replaced: done.replaced, other_lines: done.others };
    }
  } catch (e) {
    return cannotRun(io, o.json, e, e instanceof InputError || e instanceof NoTdxError);
  }
  if (o.json) io.out(JSON.stringify(r) + "\n");
  else if (o.knownHosts) io.out(render(r));
  else {
    // Without --known-hosts stdout carries only the lines (none on failure), so that
    // `cvm-verify … >> ~/.ssh/known_hosts` appends nothing but attested keys.
    io.err(render(r));
    if (r.known_hosts) io.out(r.known_hosts.lines.join("\n") + "\n");
  }
  return r.ok ? 0 : 1;
}

/**
 * cvm-verify: checks a TDX quote, either a saved one (offline) or a fresh one from this guest (live).
 *
 *   cvm-verify --quote FILE --collateral FILE [--at TIME] [--json] [--accept-status LIST]
 *              [--manifest FILE] [--event-log FILE]
 *   cvm-verify [--collateral FILE | --pccs URL] [--tsm-root DIR] [--ssh-dir DIR] [--authorized-keys FILE]
 *              [--manifest FILE] [--event-log FILE] [--at TIME] [--json] [--accept-status LIST]
 *
 * Exit status: 0 = the quote verifies with an accepted TCB status and every requested check passed;
 * 1 = it does not; 2 = the check could not run (bad arguments, unreadable input, no TDX).
 */
import { randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import { parseArgs } from "node:util";
import {
  CollateralError,
  PcsCollateralSource,
  TCB_STATUSES,
  checkEventLog,
  compareMeasurements,
  isAcceptable,
  loadCollateralFile,
  parseEventLog,
  parseManifest,
  parseQuote,
  reportDataFor,
  verifyQuote,
  type Collateral,
  type EventLogCheck,
  type MeasurementReport,
  type TcbStatus,
  type Verdict,
} from "../../shared/tdx/index.js";
import { parseCertificate, parseSgxExtension, splitPemChain } from "../../shared/tdx/pck.js";
import { InputError, decodeQuoteFile, parseTime, readHostKeys, readJsonFile } from "./inputs.js";
import { authorizedKeyFingerprints, compareSshKeys, injectedFingerprints, type SshKeyReport } from "./ssh-keys.js";
import { ConfigfsTsm, DEFAULT_TSM_ROOT, TsmUnavailableError, nodeTsmFs, type TsmFs } from "./tsm.js";

export const DEFAULT_MANIFEST = "/etc/cvm/image-manifest.json";
export const DEFAULT_EVENT_LOG = "/run/cvm/rtmr3-events.json";
// The image generates host keys per boot into tmpfs state, not the read-only /etc/ssh.
export const DEFAULT_SSH_DIR = "/var/lib/cvm/ssh";
export const DEFAULT_AUTHORIZED_KEYS = "/home/azureuser/.ssh/authorized_keys";

export interface Io {
  out(text: string): void;
  err(text: string): void;
}

export interface MainDeps {
  io?: Io;
  /** Filesystem view of configfs-tsm; tests pass a fake kernel tree. */
  tsmFs?: TsmFs;
  now?: () => Date;
}

const USAGE = `usage:
  cvm-verify --quote FILE --collateral FILE [--at TIME] [options]     verify a saved quote offline
  cvm-verify [--collateral FILE | --pccs URL] [options]               verify this guest (configfs-tsm)
options:
  --at TIME               ISO 8601 or Unix seconds (default: now)
  --accept-status LIST    comma-separated TCB statuses that pass (default: UpToDate)
  --manifest FILE         image manifest with expected_measurements (live default ${DEFAULT_MANIFEST})
  --event-log FILE        RTMR3 event log to replay (live default ${DEFAULT_EVENT_LOG})
  --json                  print one JSON object
  --tsm-root DIR          configfs-tsm root (default ${DEFAULT_TSM_ROOT})
  --ssh-dir DIR           where ssh_host_*_key.pub live (default ${DEFAULT_SSH_DIR})
  --authorized-keys FILE  (default ${DEFAULT_AUTHORIZED_KEYS})
  --pccs URL              PCCS / Intel PCS base URL to fetch collateral from
exit: 0 verified and accepted, 1 not, 2 could not run`;

class UsageError extends Error {}

interface Options {
  quote?: string;
  collateral?: string;
  pccs?: string;
  at?: Date;
  json: boolean;
  accept: TcbStatus[];
  manifest?: string;
  manifestExplicit: boolean;
  eventLog?: string;
  eventLogExplicit: boolean;
  tsmRoot: string;
  sshDir: string;
  authorizedKeys: string;
}

function parseOptions(argv: string[]): Options | "help" {
  let v;
  try {
    v = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        quote: { type: "string" },
        collateral: { type: "string" },
        pccs: { type: "string" },
        at: { type: "string" },
        json: { type: "boolean", default: false },
        "accept-status": { type: "string" },
        manifest: { type: "string" },
        "event-log": { type: "string" },
        "tsm-root": { type: "string" },
        "ssh-dir": { type: "string" },
        "authorized-keys": { type: "string" },
        help: { type: "boolean", short: "h", default: false },
      },
    }).values;
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  if (v.help) return "help";
  const accept = (v["accept-status"] ?? "UpToDate").split(",").map((s) => s.trim()).filter(Boolean);
  for (const s of accept) {
    if (!(TCB_STATUSES as readonly string[]).includes(s)) throw new UsageError(`--accept-status: unknown status "${s}" (one of ${TCB_STATUSES.join(", ")})`);
  }
  if (accept.length === 0) throw new UsageError("--accept-status is empty");
  if (v.quote && !v.collateral && !v.pccs) throw new UsageError("--quote needs --collateral FILE (or --pccs URL)");
  let at: Date | undefined;
  if (v.at !== undefined) {
    try {
      at = parseTime(v.at);
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
  }
  const live = !v.quote;
  return {
    quote: v.quote,
    collateral: v.collateral,
    pccs: v.pccs,
    at,
    json: v.json ?? false,
    accept: accept as TcbStatus[],
    manifest: v.manifest ?? (live ? DEFAULT_MANIFEST : undefined),
    manifestExplicit: v.manifest !== undefined,
    eventLog: v["event-log"] ?? (live ? DEFAULT_EVENT_LOG : undefined),
    eventLogExplicit: v["event-log"] !== undefined,
    tsmRoot: v["tsm-root"] ?? DEFAULT_TSM_ROOT,
    sshDir: v["ssh-dir"] ?? DEFAULT_SSH_DIR,
    authorizedKeys: v["authorized-keys"] ?? DEFAULT_AUTHORIZED_KEYS,
  };
}

interface Report {
  ok: boolean;
  mode: "offline" | "live";
  status: TcbStatus | null;
  advisory_ids: string[];
  reason: string | null;
  accepted_statuses: TcbStatus[];
  measurements: Verdict["measurements"];
  fmspc: string | null;
  verdict: Verdict;
  manifest?: (MeasurementReport & { path: string }) | { path: string; checked: 0; note: string };
  event_log?: (EventLogCheck & { path: string }) | { path: string; note: string };
  report_data_binding?: { ok: boolean; expected: string; actual: string | null; nonce: string; host_keys: number };
  ssh_keys?: (SshKeyReport & { trusted: boolean; authorized_keys: string }) | { note: string };
}

/** Reads an optional JSON input: a missing default file is "not checked", a missing explicit one is an error. */
async function optionalJson(path: string | undefined, explicit: boolean, what: string): Promise<{ value?: unknown; note?: string }> {
  if (!path) return {};
  try {
    return { value: await readJsonFile(path, what) };
  } catch (e) {
    if (!explicit && /ENOENT/.test((e as Error).message)) return { note: `no ${what} at ${path}: not checked` };
    throw e;
  }
}

async function collateralFor(quote: Buffer, o: Options): Promise<Collateral> {
  if (o.collateral) {
    try {
      return await loadCollateralFile(o.collateral);
    } catch (e) {
      if (e instanceof CollateralError) throw new InputError(`${o.collateral}: ${e.message}`);
      throw new InputError(`cannot read collateral ${o.collateral}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
  }
  if (!o.pccs) throw new InputError("no collateral: pass --collateral FILE or --pccs URL");
  // The FMSPC and issuing CA come from the (not yet verified) PCK certificate; the fetched collateral
  // is verified like any other, so a lying certificate only gets itself the wrong collateral.
  const q = parseQuote(quote);
  const leaf = parseCertificate(splitPemChain(q.pckChainRaw, "PCK chain", true)[0]!);
  const fmspc = parseSgxExtension(leaf.sgxExtension ?? Buffer.alloc(0)).fmspc.toString("hex");
  const ca = /Processor CA/i.test(leaf.issuer) ? "processor" : "platform";
  try {
    return await new PcsCollateralSource(o.pccs).get(fmspc, ca);
  } catch (e) {
    throw new InputError(`fetching collateral from ${o.pccs}: ${(e as Error).message}`);
  }
}

async function run(o: Options, deps: MainDeps): Promise<Report> {
  const live = !o.quote;
  let quote: Buffer;
  let binding: Report["report_data_binding"];
  if (live) {
    const tsm = new ConfigfsTsm(o.tsmRoot, deps.tsmFs ?? nodeTsmFs);
    await tsm.ensureAvailable();
    const nonce = randomBytes(32);
    const hostKeys = await readHostKeys(o.sshDir);
    const expected = reportDataFor(nonce, hostKeys);
    quote = await tsm.getQuote(expected);
    binding = { ok: false, expected: expected.toString("hex"), actual: null, nonce: nonce.toString("hex"), host_keys: hostKeys.length };
  } else {
    let raw: Buffer;
    try {
      raw = await readFile(o.quote!);
    } catch (e) {
      throw new InputError(`cannot read quote ${o.quote}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    quote = decodeQuoteFile(raw);
  }
  const manifestIn = await optionalJson(o.manifest, o.manifestExplicit, "image manifest");
  const eventsIn = await optionalJson(o.eventLog, o.eventLogExplicit, "RTMR3 event log");
  let manifest;
  if (manifestIn.value !== undefined) {
    try {
      manifest = parseManifest(manifestIn.value);
    } catch (e) {
      throw new InputError(`${o.manifest}: ${(e as Error).message}`);
    }
  }

  const collateral = await collateralFor(quote, o);
  const at = o.at ?? (deps.now ?? (() => new Date()))();
  const verdict = await verifyQuote(quote, collateral, { at });
  const m = verdict.measurements;

  const report: Report = {
    ok: false,
    mode: live ? "live" : "offline",
    status: verdict.status,
    advisory_ids: verdict.advisory_ids,
    reason: null,
    accepted_statuses: o.accept,
    measurements: m,
    fmspc: verdict.fmspc,
    verdict,
  };
  const reasons: string[] = [];
  if (!verdict.ok) reasons.push(verdict.reason ?? "quote does not verify");
  else if (!isAcceptable(verdict, o.accept)) reasons.push(`TCB status ${verdict.status} is not accepted (accepted: ${o.accept.join(", ")})`);

  if (binding) {
    binding.actual = m?.report_data ?? null;
    binding.ok = binding.actual === binding.expected;
    report.report_data_binding = binding;
    if (!binding.ok) {
      reasons.push("REPORTDATA does not bind this verifier's nonce and this guest's SSH host keys (the quote was not made for this request)");
    }
  }
  if (manifest && m) {
    const r = compareMeasurements(m, manifest);
    report.manifest = { ...r, path: o.manifest! };
    if (!r.ok) reasons.push(`measurements differ from the image manifest: ${r.mismatches.join(", ")}`);
  } else if (manifestIn.note) {
    report.manifest = { path: o.manifest!, checked: 0, note: manifestIn.note };
  }
  let events;
  if (eventsIn.value !== undefined && m) {
    const check = checkEventLog(eventsIn.value, m.rtmr3);
    report.event_log = { ...check, path: o.eventLog! };
    if (!check.ok) reasons.push(`RTMR3 event log: ${check.reason}`);
    else events = parseEventLog(eventsIn.value);
  } else if (eventsIn.note) {
    report.event_log = { path: o.eventLog!, note: eventsIn.note };
  }
  if (live) {
    if (events) {
      let text = "";
      try {
        text = await readFile(o.authorizedKeys, "utf8");
      } catch {
        text = "";
      }
      report.ssh_keys = {
        ...compareSshKeys(injectedFingerprints(events), authorizedKeyFingerprints(text)),
        trusted: verdict.ok && report.event_log !== undefined && "ok" in report.event_log && report.event_log.ok,
        authorized_keys: o.authorizedKeys,
      };
    } else {
      report.ssh_keys = { note: "no verified RTMR3 event log: injected SSH keys unknown" };
    }
  }
  report.ok = reasons.length === 0;
  report.reason = reasons[0] ?? null;
  if (reasons.length > 1) report.reason = reasons.join("; ");
  return report;
}

function render(r: Report): string {
  const v = r.verdict;
  const lines: string[] = [];
  lines.push(`cvm-verify (${r.mode}): ${r.ok ? "OK" : "FAIL"}`);
  if (v.quote) {
    lines.push(
      `  quote        TDX v${v.quote.version} (${v.quote.report_type === "td15" ? "TD report 1.5" : "TD report 1.0"}), ${v.quote.size} bytes` +
        (v.quote.trailing_bytes ? ` (${v.quote.trailing_bytes} trailing)` : "") +
        (r.fmspc ? `, FMSPC ${r.fmspc}` : ""),
    );
  }
  lines.push(`  verified at  ${v.at}`);
  lines.push(`  signatures   ${v.ok ? "valid (PCK chain to Intel SGX Root CA, CRLs, QE report, quote)" : "NOT valid"}`);
  if (v.status) {
    const t = v.tcb;
    lines.push(
      `  TCB status   ${v.status}` +
        (t ? ` (platform ${t.platform_status}, TDX module ${t.tdx_module_status ?? "n/a"}, QE ${t.qe_status})` : "") +
        (r.accepted_statuses.includes(v.status) ? ", accepted" : `, not accepted (accepted: ${r.accepted_statuses.join(", ")})`),
    );
    lines.push(`  advisories   ${v.advisory_ids.length ? v.advisory_ids.join(", ") : "none"}`);
  }
  if (r.measurements) {
    const m = r.measurements;
    lines.push(`  MRTD         ${m.mrtd}`);
    for (const k of ["rtmr0", "rtmr1", "rtmr2", "rtmr3"] as const) lines.push(`  ${k.toUpperCase()}        ${m[k]}`);
    lines.push(`  REPORTDATA   ${m.report_data}`);
  }
  if (r.report_data_binding) {
    lines.push(`  binding      ${r.report_data_binding.ok ? "REPORTDATA = H(nonce, host keys): yes" : "REPORTDATA does NOT match H(nonce, host keys)"} (${r.report_data_binding.host_keys} host keys)`);
  }
  if (r.manifest) {
    if ("checks" in r.manifest) {
      lines.push(`  manifest     ${r.manifest.path}: ${r.manifest.checks.map((c) => `${c.name} ${c.result.replace("_", " ")}`).join(", ")}`);
    } else lines.push(`  manifest     ${r.manifest.note}`);
  }
  if (r.event_log) {
    if ("expected" in r.event_log) {
      lines.push(`  RTMR3 log    ${r.event_log.path}: ${r.event_log.ok ? `${r.event_log.events} events replay to RTMR3` : r.event_log.reason}`);
    } else lines.push(`  RTMR3 log    ${r.event_log.note}`);
  }
  if (r.ssh_keys) {
    if ("injected" in r.ssh_keys) {
      const s = r.ssh_keys;
      lines.push(`  SSH keys     host-injected (per RTMR3${s.trusted ? "" : ", UNVERIFIED"}): ${s.injected.length}`);
      for (const k of s.injected) lines.push(`               ${k.fingerprint} ${k.present_now ? "present in" : "NOT in"} ${s.authorized_keys}`);
      for (const fp of s.not_injected) lines.push(`               ${fp} in ${s.authorized_keys}, not injected by the host`);
    } else lines.push(`  SSH keys     ${r.ssh_keys.note}`);
  }
  if (r.reason) lines.push(`  reason       ${r.reason}`);
  return lines.join("\n") + "\n";
}

export async function main(argv: string[], deps: MainDeps = {}): Promise<number> {
  const io: Io = deps.io ?? { out: (t) => process.stdout.write(t), err: (t) => process.stderr.write(t) };
  let opts: Options | "help";
  try {
    opts = parseOptions(argv);
  } catch (e) {
    io.err(`cvm-verify: ${(e as Error).message}\n${USAGE}\n`);
    return 2;
  }
  if (opts === "help") {
    io.out(`${USAGE}\n`);
    return 0;
  }
  let report: Report;
  try {
    report = await run(opts, deps);
  } catch (e) {
    const known = e instanceof InputError || e instanceof TsmUnavailableError || e instanceof UsageError;
    const msg = known ? (e as Error).message : `cannot run: ${(e as Error).message}`;
    if (opts.json) io.out(JSON.stringify({ ok: false, status: null, advisory_ids: [], reason: msg, measurements: null, error: "cannot_run" }) + "\n");
    io.err(`cvm-verify: ${msg}\n`);
    return 2;
  }
  io.out(opts.json ? JSON.stringify(report) + "\n" : render(report));
  return report.ok ? 0 : 1;
}

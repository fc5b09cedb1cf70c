/**
 * cvm-verify: checks a TDX quote, either a saved one (offline), a fresh one from this guest (live), or
 * a fresh one of an instance asked through cvmd's API from the tenant's own machine (tenant, --api:
 * tenant.ts, which then writes known_hosts lines for the instance).
 *
 *   cvm-verify --quote FILE --collateral FILE [--at TIME] [--json] [--accept-tcb-status LIST]
 *              [--manifest FILE [--allow-unchecked REGS]] [--event-log FILE]
 *   cvm-verify --manifest FILE [--allow-unchecked REGS] [--collateral FILE | --pccs URL] [--tsm-root DIR]
 *              [--ssh-dir DIR] [--authorized-keys FILE] [--event-log FILE] [--at TIME] [--json]
 *              [--accept-tcb-status LIST]
 *
 * Exit status: 0 = the quote verifies with an accepted TCB status and every check passed; 1 = it does
 * not; 2 = the check could not run (bad arguments, unreadable input, no TDX). Fail-closed: live, the
 * image manifest and the RTMR3 event log are required (a guest cannot vouch for itself without
 * them), and a manifest passes only when MRTD and RTMR0–2 all matched or the caller waived by name
 * the ones it leaves out.
 */
import { randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import {
  applyTcbPolicy,
  checkEventLog,
  compareMeasurements,
  describeChecks,
  parseEventLog,
  reportDataFor,
  verifyQuote,
  type EventLogCheck,
  type ManifestMeasurement,
  type MeasurementReport,
  type TcbStatus,
  type Verdict,
} from "../../shared/tdx/index.js";
import { UsageError, cannotRun, collateralFor, parseCommandLine, parsePolicyOptions, processIo, verdictLines, type Io } from "./common.js";
import { InputError, decodeQuoteFile, readHostKeys, readJsonFile, readManifestFile } from "./inputs.js";
import { authorizedKeyFingerprints, compareSshKeys, injectedFingerprints, type SshKeyReport } from "./ssh-keys.js";
import { tenantMain } from "./tenant.js";
import { ConfigfsTsm, DEFAULT_TSM_ROOT, TsmUnavailableError, nodeTsmFs, type TsmFs } from "./tsm.js";

// No default manifest: the image cannot carry its own expected measurements (its root hash is in the
// measured command line), so the tenant fetches the operator's published manifest.json and names it.
export const DEFAULT_EVENT_LOG = "/run/cvm/rtmr3-events.json";
// The image generates host keys per boot into tmpfs state, not the read-only /etc/ssh.
export const DEFAULT_SSH_DIR = "/var/lib/cvm/ssh";
export const DEFAULT_AUTHORIZED_KEYS = "/home/azureuser/.ssh/authorized_keys";

export type { Io };

export interface MainDeps {
  io?: Io;
  /** Filesystem view of configfs-tsm; tests pass a fake kernel tree. */
  tsmFs?: TsmFs;
  now?: () => Date;
  /** The environment (bin.ts passes process.env): the tenant mode reads CA_API_KEY and HOME from it. */
  env?: Readonly<Record<string, string | undefined>>;
  /**
   * Tests only, and not reachable from the command line: the DER of a test root CA standing in for
   * Intel's, because no quote over a fresh nonce can be signed by Intel's keys without TDX hardware.
   */
  rootCaDer?: Uint8Array;
}

const USAGE = `usage:
  cvm-verify --quote FILE --collateral FILE [--at TIME] [options]     verify a saved quote offline
  cvm-verify [--collateral FILE | --pccs URL] [options]               verify this guest (configfs-tsm)
  cvm-verify --api URL --instance NAME --manifest FILE ...           verify an instance from your machine
                                                                     (cvm-verify --api URL --help)
options:
  --at TIME               ISO 8601 or Unix seconds (default: now)
  --accept-tcb-status LIST  comma-separated TCB statuses that pass (default: UpToDate)
  --manifest FILE         the image's manifest.json as the operator publishes it (required live)
  --allow-unchecked REGS  accept these registers unchecked where the manifest has no value
                          (comma list of mrtd, rtmr0, rtmr1, rtmr2; never excuses a mismatch)
  --event-log FILE        RTMR3 event log to replay (live default ${DEFAULT_EVENT_LOG}, required)
  --json                  print one JSON object
  --tsm-root DIR          configfs-tsm root (default ${DEFAULT_TSM_ROOT})
  --ssh-dir DIR           where ssh_host_*_key.pub live (default ${DEFAULT_SSH_DIR})
  --authorized-keys FILE  (default ${DEFAULT_AUTHORIZED_KEYS})
  --pccs URL              PCCS / Intel PCS base URL to fetch collateral from
exit: 0 verified and accepted, 1 not, 2 could not run`;

const NO_MANIFEST_LIVE =
  "no image manifest: pass --manifest FILE, the manifest.json the operator publishes for this instance's image (images/out/<image id>/manifest.json on the host), without which MRTD and RTMR0-2 are not checked";

interface Options {
  quote?: string;
  collateral?: string;
  pccs?: string;
  at?: Date;
  json: boolean;
  accept: TcbStatus[];
  allowUnchecked: ManifestMeasurement[];
  manifest?: string;
  eventLog?: string;
  tsmRoot: string;
  sshDir: string;
  authorizedKeys: string;
}

function parseOptions(argv: string[]): Options | "help" {
  const v = parseCommandLine(argv, {
    quote: { type: "string" },
    "event-log": { type: "string" },
    "tsm-root": { type: "string" },
    "ssh-dir": { type: "string" },
    "authorized-keys": { type: "string" },
  });
  if (v.help) return "help";
  const { accept, allowUnchecked, at } = parsePolicyOptions(v);
  if (v.quote && !v.collateral && !v.pccs) throw new UsageError("--quote needs --collateral FILE (or --pccs URL)");
  const live = !v.quote;
  return {
    quote: v.quote,
    collateral: v.collateral,
    pccs: v.pccs,
    at,
    json: v.json ?? false,
    accept,
    allowUnchecked,
    manifest: v.manifest,
    eventLog: v["event-log"] ?? (live ? DEFAULT_EVENT_LOG : undefined),
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
  allow_unchecked: ManifestMeasurement[];
  measurements: Verdict["measurements"];
  fmspc: string | null;
  verdict: Verdict;
  manifest: (MeasurementReport & { path: string }) | { path: string | null; checked: 0; note: string };
  event_log?: (EventLogCheck & { path: string }) | { path: string; ok: false; note: string };
  report_data_binding?: { ok: boolean; expected: string; actual: string | null; nonce: string; host_keys: number };
  ssh_keys?: (SshKeyReport & { trusted: boolean; authorized_keys: string }) | { note: string };
}

/**
 * The RTMR3 event log. Live, the agent writes it at boot, so a missing file is a failed check (the
 * guest cannot show what RTMR3 covers), never "not checked"; offline, a log that was named but cannot
 * be read stops the run (exit 2).
 */
async function eventLogInput(path: string | undefined, live: boolean): Promise<{ value?: unknown; note?: string }> {
  if (!path) return {};
  try {
    return { value: await readJsonFile(path, "RTMR3 event log") };
  } catch (e) {
    if (live && /ENOENT/.test((e as Error).message)) return { note: `no RTMR3 event log at ${path} (is cvm-agent running? pass --event-log FILE)` };
    throw e;
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
  const eventsIn = await eventLogInput(o.eventLog, live);
  const manifest = o.manifest ? await readManifestFile(o.manifest) : undefined;

  const collateral = await collateralFor(quote, o);
  const at = o.at ?? (deps.now ?? (() => new Date()))();
  const verdict = await verifyQuote(quote, collateral, { at, rootCaDer: deps.rootCaDer });
  const m = verdict.measurements;

  const report: Report = {
    ok: false,
    mode: live ? "live" : "offline",
    status: verdict.status,
    advisory_ids: verdict.advisory_ids,
    reason: null,
    accepted_statuses: o.accept,
    allow_unchecked: o.allowUnchecked,
    measurements: m,
    fmspc: verdict.fmspc,
    verdict,
    manifest: live
      ? { path: null, checked: 0, note: NO_MANIFEST_LIVE }
      : { path: null, checked: 0, note: "no --manifest: measurements not compared (a check of the quote alone)" },
  };
  const reasons: string[] = [];
  const policy = applyTcbPolicy(verdict, o.accept);
  if (!verdict.ok) reasons.push(verdict.reason ?? "quote does not verify");
  else if (!policy.ok) reasons.push(policy.reason!);

  if (binding) {
    binding.actual = m?.report_data ?? null;
    binding.ok = binding.actual === binding.expected;
    report.report_data_binding = binding;
    if (!binding.ok) {
      reasons.push("REPORTDATA does not bind this verifier's nonce and this guest's SSH host keys (the quote was not made for this request)");
    }
  }
  if (manifest && m) {
    const r = compareMeasurements(m, manifest, { allowUnchecked: o.allowUnchecked });
    report.manifest = { ...r, path: o.manifest! };
    if (!r.ok) reasons.push(`image manifest ${o.manifest}: ${r.reason}`);
  } else if (manifest) {
    report.manifest = { path: o.manifest!, checked: 0, note: "the quote does not parse: measurements not compared" };
  } else if (live) {
    reasons.push(NO_MANIFEST_LIVE);
  }
  let events;
  if (eventsIn.value !== undefined && m) {
    const check = checkEventLog(eventsIn.value, m.rtmr3);
    report.event_log = { ...check, path: o.eventLog! };
    if (!check.ok) reasons.push(`RTMR3 event log: ${check.reason}`);
    else events = parseEventLog(eventsIn.value);
  } else if (eventsIn.note) {
    report.event_log = { path: o.eventLog!, ok: false, note: eventsIn.note };
    reasons.push(eventsIn.note);
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
  const lines: string[] = [];
  lines.push(`cvm-verify (${r.mode}): ${r.ok ? "OK" : "FAIL"}`);
  lines.push(...verdictLines(r.verdict, r.accepted_statuses));
  if (r.report_data_binding) {
    lines.push(`  binding      ${r.report_data_binding.ok ? "REPORTDATA = H(nonce, host keys): yes" : "REPORTDATA does NOT match H(nonce, host keys)"} (${r.report_data_binding.host_keys} host keys)`);
  }
  if ("checks" in r.manifest) {
    lines.push(`  manifest     ${r.manifest.path}: ${describeChecks(r.manifest)}`);
    if (r.allow_unchecked.length) lines.push(`  waived       ${r.allow_unchecked.join(", ")} (--allow-unchecked)`);
  } else lines.push(`  manifest     ${r.manifest.note}`);
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
  const io: Io = deps.io ?? processIo;
  if (argv.some((a) => a === "--api" || a.startsWith("--api="))) return tenantMain(argv, deps);
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
    return cannotRun(io, opts.json, e, e instanceof InputError || e instanceof TsmUnavailableError || e instanceof UsageError);
  }
  io.out(opts.json ? JSON.stringify(report) + "\n" : render(report));
  return report.ok ? 0 : 1;
}

/**
 * What cvm-verify's modes (offline, live in the guest, tenant over the API) share: the output sink,
 * the policy options, where collateral comes from, and the lines that describe a DCAP verdict.
 */
import {
  CollateralError,
  ManifestError,
  PcsCollateralSource,
  TcbPolicyError,
  loadCollateralFile,
  parseAcceptedTcbStatuses,
  parseWaivers,
  pckInfoOf,
  type Collateral,
  type ManifestMeasurement,
  type TcbStatus,
  type Verdict,
} from "../../shared/tdx/index.js";
import { parseArgs, type ParseArgsConfig } from "node:util";
import { InputError, parseTime } from "./inputs.js";

export interface Io {
  out(text: string): void;
  err(text: string): void;
}

export const processIo: Io = { out: (t) => process.stdout.write(t), err: (t) => process.stderr.write(t) };

/** Bad arguments: exit 2 with the usage text. */
export class UsageError extends Error {}

/** The options every mode takes. */
const COMMON_OPTIONS = {
  collateral: { type: "string" },
  pccs: { type: "string" },
  at: { type: "string" },
  json: { type: "boolean", default: false },
  "accept-tcb-status": { type: "string" },
  manifest: { type: "string" },
  "allow-unchecked": { type: "string" },
  help: { type: "boolean", short: "h", default: false },
} as const satisfies NonNullable<ParseArgsConfig["options"]>;

/** The mode's own options beside the common ones; strict (unknown options and positionals are usage errors). */
export function parseCommandLine<O extends NonNullable<ParseArgsConfig["options"]>>(argv: string[], own: O) {
  try {
    return parseArgs({ args: argv, strict: true, allowPositionals: false, options: { ...COMMON_OPTIONS, ...own } }).values;
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

export interface PolicyOptions {
  accept: TcbStatus[];
  allowUnchecked: ManifestMeasurement[];
  at?: Date;
}

/**
 * --accept-tcb-status and --allow-unchecked, checked by name so that a typo cannot widen or waive
 * nothing silently, and --at.
 */
export function parsePolicyOptions(v: { "accept-tcb-status"?: string; "allow-unchecked"?: string; manifest?: string; at?: string }): PolicyOptions {
  const allow = v["allow-unchecked"];
  let out: PolicyOptions;
  try {
    out = { accept: parseAcceptedTcbStatuses(v["accept-tcb-status"], "--accept-tcb-status"), allowUnchecked: allow === undefined ? [] : parseWaivers(allow) };
  } catch (e) {
    if (e instanceof TcbPolicyError || e instanceof ManifestError) throw new UsageError(e.message.replace(/^allow-unchecked/, "--allow-unchecked"));
    throw e;
  }
  if (allow !== undefined && !v.manifest) throw new UsageError("--allow-unchecked waives registers of a manifest: pass --manifest FILE too");
  if (v.at !== undefined) {
    try {
      out.at = parseTime(v.at);
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
  }
  return out;
}

/** The collateral for `quote`: the file the caller names, or fetched from a PCCS / Intel PCS by the quote's FMSPC and PCK CA. */
export async function collateralFor(quote: Buffer, o: { collateral?: string; pccs?: string }): Promise<Collateral> {
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
  let info;
  try {
    info = pckInfoOf(quote);
  } catch (e) {
    throw new InputError(`cannot tell which collateral the quote needs: ${(e as Error).message}`);
  }
  try {
    return await new PcsCollateralSource(o.pccs).get(info.fmspc, info.ca);
  } catch (e) {
    throw new InputError(`fetching collateral from ${o.pccs}: ${(e as Error).message}`);
  }
}

/** The human summary's lines about the quote itself: format, time, signatures, TCB status, advisories, registers. */
export function verdictLines(v: Verdict, accepted: readonly TcbStatus[]): string[] {
  const lines: string[] = [];
  if (v.quote) {
    lines.push(
      `  quote        TDX v${v.quote.version} (${v.quote.report_type === "td15" ? "TD report 1.5" : "TD report 1.0"}), ${v.quote.size} bytes` +
        (v.quote.trailing_bytes ? ` (${v.quote.trailing_bytes} trailing)` : "") +
        (v.fmspc ? `, FMSPC ${v.fmspc}` : ""),
    );
  }
  lines.push(`  verified at  ${v.at}`);
  lines.push(`  signatures   ${v.ok ? "valid (PCK chain to Intel SGX Root CA, CRLs, QE report, quote)" : "NOT valid"}`);
  if (v.status) {
    const t = v.tcb;
    lines.push(
      `  TCB status   ${v.status}` +
        (t ? ` (platform ${t.platform_status}, TDX module ${t.tdx_module_status ?? "n/a"}, QE ${t.qe_status})` : "") +
        (accepted.includes(v.status) ? ", accepted" : `, not accepted (accepted: ${accepted.join(", ")})`),
    );
    lines.push(`  advisories   ${v.advisory_ids.length ? v.advisory_ids.join(", ") : "none"}`);
  }
  const m = v.measurements;
  if (m) {
    lines.push(`  MRTD         ${m.mrtd}`);
    for (const k of ["rtmr0", "rtmr1", "rtmr2", "rtmr3"] as const) lines.push(`  ${k.toUpperCase()}        ${m[k]}`);
    lines.push(`  REPORTDATA   ${m.report_data}`);
  }
  return lines;
}

/** An error that stops the run (exit 2): its message, on stderr and, with --json, as one JSON object. */
export function cannotRun(io: Io, json: boolean, e: unknown, known: boolean): number {
  const msg = known ? (e as Error).message : `cannot run: ${(e as Error).message}`;
  if (json) io.out(JSON.stringify({ ok: false, status: null, advisory_ids: [], reason: msg, measurements: null, error: "cannot_run" }) + "\n");
  io.err(`cvm-verify: ${msg}\n`);
  return 2;
}

/**
 * Intel's TCB info (id "TDX", version 3) and QE identity (id "TD_QE") collateral: strict decoding of
 * the signed JSON, then the TCB level match that turns a platform's SVNs into a status with advisories.
 *
 * Status convergence follows Intel's QVL (EvaluateTcb): the platform level's status is the base; a
 * component (TDX module, QE) that is OutOfDate turns UpToDate/SWHardeningNeeded into OutOfDate and the
 * Configuration* statuses into OutOfDateConfigurationNeeded; a Revoked component makes it Revoked.
 * Advisory IDs are the union of platform, QE and TDX module levels, in that order.
 */

export const TCB_STATUSES = [
  "UpToDate",
  "SWHardeningNeeded",
  "ConfigurationNeeded",
  "ConfigurationAndSWHardeningNeeded",
  "OutOfDate",
  "OutOfDateConfigurationNeeded",
  "Revoked",
] as const;
export type TcbStatus = (typeof TCB_STATUSES)[number];

export class TcbError extends Error {
  override name = "TcbError";
  constructor(
    readonly code: "bad_collateral" | "no_tcb_level" | "qe_identity_mismatch" | "tdx_module_mismatch" | "fmspc_mismatch",
    message: string,
  ) {
    super(message);
  }
}

export interface TcbLevel {
  sgxComponents: number[];
  tdxComponents: number[];
  pceSvn: number;
  tcbDate: string;
  status: TcbStatus;
  advisoryIds: string[];
}

export interface TdxModuleIdentity {
  id: string;
  mrSigner: Buffer;
  attributes: Buffer;
  attributesMask: Buffer;
  tcbLevels: { isvSvn: number; tcbDate: string; status: TcbStatus; advisoryIds: string[] }[];
}

export interface TcbInfo {
  id: string;
  version: number;
  issueDate: Date;
  nextUpdate: Date;
  fmspc: string;
  pceId: string;
  tcbType: number;
  tcbEvaluationDataNumber: number;
  tdxModule?: { mrSigner: Buffer; attributes: Buffer; attributesMask: Buffer };
  tdxModuleIdentities: TdxModuleIdentity[];
  tcbLevels: TcbLevel[];
}

export interface QeIdentity {
  id: string;
  version: number;
  issueDate: Date;
  nextUpdate: Date;
  tcbEvaluationDataNumber: number;
  miscselect: number;
  miscselectMask: number;
  attributes: Buffer;
  attributesMask: Buffer;
  mrSigner: Buffer;
  isvProdId: number;
  tcbLevels: { isvSvn: number; tcbDate: string; status: TcbStatus; advisoryIds: string[] }[];
}

type Json = Record<string, unknown>;

function obj(v: unknown, where: string): Json {
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw new TcbError("bad_collateral", `${where} must be an object`);
  return v as Json;
}
function arr(v: unknown, where: string): unknown[] {
  if (!Array.isArray(v)) throw new TcbError("bad_collateral", `${where} must be an array`);
  return v;
}
function int(v: unknown, where: string, max = 0xffff_ffff): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > max) {
    throw new TcbError("bad_collateral", `${where} must be an integer in 0..${max}`);
  }
  return v;
}
function str(v: unknown, where: string): string {
  if (typeof v !== "string") throw new TcbError("bad_collateral", `${where} must be a string`);
  return v;
}
function hexBytes(v: unknown, len: number, where: string): Buffer {
  const s = str(v, where);
  if (s.length !== len * 2 || !/^[0-9a-fA-F]*$/.test(s)) throw new TcbError("bad_collateral", `${where} must be ${len} bytes of hex`);
  return Buffer.from(s, "hex");
}
function date(v: unknown, where: string): Date {
  const s = str(v, where);
  const d = new Date(s);
  if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/.test(s) || Number.isNaN(d.getTime())) {
    throw new TcbError("bad_collateral", `${where} must be an ISO 8601 UTC time`);
  }
  return d;
}
function status(v: unknown, where: string): TcbStatus {
  const s = str(v, where);
  if (!(TCB_STATUSES as readonly string[]).includes(s)) throw new TcbError("bad_collateral", `${where}: unknown TCB status "${s}"`);
  return s as TcbStatus;
}
function advisories(v: unknown, where: string): string[] {
  if (v === undefined) return [];
  return arr(v, where).map((a, i) => str(a, `${where}[${i}]`));
}
function components(v: unknown, where: string): number[] {
  const list = arr(v, where);
  if (list.length !== 16) throw new TcbError("bad_collateral", `${where} must list 16 components`);
  return list.map((c, i) => int(obj(c, `${where}[${i}]`).svn, `${where}[${i}].svn`, 255));
}

function parseJson(text: string, what: string): Json {
  try {
    return obj(JSON.parse(text), what);
  } catch (e) {
    if (e instanceof TcbError) throw e;
    throw new TcbError("bad_collateral", `${what} is not valid JSON: ${(e as Error).message}`);
  }
}

/** Decodes the signed tcbInfo text (signature checked by the caller over these exact bytes). */
export function parseTcbInfo(text: string): TcbInfo {
  const j = parseJson(text, "tcb_info");
  const version = int(j.version, "tcbInfo.version");
  const id = j.id === undefined ? "SGX" : str(j.id, "tcbInfo.id");
  const levels = arr(j.tcbLevels, "tcbInfo.tcbLevels").map((l, i) => {
    const lv = obj(l, `tcbLevels[${i}]`);
    const tcb = obj(lv.tcb, `tcbLevels[${i}].tcb`);
    return {
      sgxComponents: components(tcb.sgxtcbcomponents, `tcbLevels[${i}].tcb.sgxtcbcomponents`),
      tdxComponents: tcb.tdxtcbcomponents === undefined ? [] : components(tcb.tdxtcbcomponents, `tcbLevels[${i}].tcb.tdxtcbcomponents`),
      pceSvn: int(tcb.pcesvn, `tcbLevels[${i}].tcb.pcesvn`, 0xffff),
      tcbDate: str(lv.tcbDate, `tcbLevels[${i}].tcbDate`),
      status: status(lv.tcbStatus, `tcbLevels[${i}].tcbStatus`),
      advisoryIds: advisories(lv.advisoryIDs, `tcbLevels[${i}].advisoryIDs`),
    };
  });
  const modOf = (m: Json, where: string) => ({
    mrSigner: hexBytes(m.mrsigner, 48, `${where}.mrsigner`),
    attributes: hexBytes(m.attributes, 8, `${where}.attributes`),
    attributesMask: hexBytes(m.attributesMask, 8, `${where}.attributesMask`),
  });
  return {
    id,
    version,
    issueDate: date(j.issueDate, "tcbInfo.issueDate"),
    nextUpdate: date(j.nextUpdate, "tcbInfo.nextUpdate"),
    fmspc: hexBytes(j.fmspc, 6, "tcbInfo.fmspc").toString("hex"),
    pceId: hexBytes(j.pceId, 2, "tcbInfo.pceId").toString("hex"),
    tcbType: j.tcbType === undefined ? 0 : int(j.tcbType, "tcbInfo.tcbType"),
    tcbEvaluationDataNumber: int(j.tcbEvaluationDataNumber, "tcbInfo.tcbEvaluationDataNumber"),
    tdxModule: j.tdxModule === undefined ? undefined : modOf(obj(j.tdxModule, "tdxModule"), "tdxModule"),
    tdxModuleIdentities: j.tdxModuleIdentities === undefined
      ? []
      : arr(j.tdxModuleIdentities, "tdxModuleIdentities").map((m, i) => {
          const mo = obj(m, `tdxModuleIdentities[${i}]`);
          return {
            id: str(mo.id, `tdxModuleIdentities[${i}].id`),
            ...modOf(mo, `tdxModuleIdentities[${i}]`),
            tcbLevels: arr(mo.tcbLevels, `tdxModuleIdentities[${i}].tcbLevels`).map((l, k) => {
              const lv = obj(l, `tdxModuleIdentities[${i}].tcbLevels[${k}]`);
              return {
                isvSvn: int(obj(lv.tcb, "tcb").isvsvn, `tdxModuleIdentities[${i}].tcbLevels[${k}].tcb.isvsvn`, 255),
                tcbDate: str(lv.tcbDate, "tcbDate"),
                status: status(lv.tcbStatus, `tdxModuleIdentities[${i}].tcbLevels[${k}].tcbStatus`),
                advisoryIds: advisories(lv.advisoryIDs, "advisoryIDs"),
              };
            }),
          };
        }),
    tcbLevels: levels,
  };
}

/** Decodes the signed enclaveIdentity text. */
export function parseQeIdentity(text: string): QeIdentity {
  const j = parseJson(text, "qe_identity");
  return {
    id: str(j.id, "enclaveIdentity.id"),
    version: int(j.version, "enclaveIdentity.version"),
    issueDate: date(j.issueDate, "enclaveIdentity.issueDate"),
    nextUpdate: date(j.nextUpdate, "enclaveIdentity.nextUpdate"),
    tcbEvaluationDataNumber: int(j.tcbEvaluationDataNumber, "enclaveIdentity.tcbEvaluationDataNumber"),
    miscselect: hexBytes(j.miscselect, 4, "miscselect").readUInt32BE(0),
    miscselectMask: hexBytes(j.miscselectMask, 4, "miscselectMask").readUInt32BE(0),
    attributes: hexBytes(j.attributes, 16, "attributes"),
    attributesMask: hexBytes(j.attributesMask, 16, "attributesMask"),
    mrSigner: hexBytes(j.mrsigner, 32, "mrsigner"),
    isvProdId: int(j.isvprodid, "isvprodid", 0xffff),
    tcbLevels: arr(j.tcbLevels, "enclaveIdentity.tcbLevels").map((l, i) => {
      const lv = obj(l, `enclaveIdentity.tcbLevels[${i}]`);
      return {
        isvSvn: int(obj(lv.tcb, "tcb").isvsvn, `enclaveIdentity.tcbLevels[${i}].tcb.isvsvn`, 0xffff),
        tcbDate: str(lv.tcbDate, "tcbDate"),
        status: status(lv.tcbStatus, `enclaveIdentity.tcbLevels[${i}].tcbStatus`),
        advisoryIds: advisories(lv.advisoryIDs, "advisoryIDs"),
      };
    }),
  };
}

export interface ComponentResult {
  status: TcbStatus;
  advisoryIds: string[];
}

export interface QeReportFields {
  mrSigner: Buffer;
  isvProdId: number;
  isvSvn: number;
  miscSelect: number;
  attributes: Buffer;
}

/** Checks the QE report against the signed QE identity and returns the QE's TCB status. */
export function evaluateQeIdentity(qe: QeReportFields, id: QeIdentity): ComponentResult {
  if (!qe.mrSigner.equals(id.mrSigner)) {
    throw new TcbError(
      "qe_identity_mismatch",
      `QE report MRSIGNER ${qe.mrSigner.toString("hex")} is not the QE identity's ${id.mrSigner.toString("hex")}`,
    );
  }
  if (qe.isvProdId !== id.isvProdId) {
    throw new TcbError("qe_identity_mismatch", `QE report ISVPRODID ${qe.isvProdId} is not the QE identity's ${id.isvProdId}`);
  }
  // The identity's hex reads as a 32-bit number (the way it is written); the report stores it little-endian.
  if (((qe.miscSelect & id.miscselectMask) >>> 0) !== ((id.miscselect & id.miscselectMask) >>> 0)) {
    throw new TcbError("qe_identity_mismatch", "QE report MISCSELECT does not match the QE identity");
  }
  for (let i = 0; i < 16; i++) {
    if ((qe.attributes[i]! & id.attributesMask[i]!) !== (id.attributes[i]! & id.attributesMask[i]!)) {
      throw new TcbError("qe_identity_mismatch", `QE report ATTRIBUTES byte ${i} does not match the QE identity`);
    }
  }
  if (qe.attributes[0]! & 0x02) throw new TcbError("qe_identity_mismatch", "QE report has the DEBUG attribute set");
  const level = id.tcbLevels.find((l) => qe.isvSvn >= l.isvSvn);
  if (!level) {
    throw new TcbError("qe_identity_mismatch", `QE ISVSVN ${qe.isvSvn} is below every TCB level of the QE identity`);
  }
  return { status: level.status, advisoryIds: level.advisoryIds };
}

/**
 * "strict": every one of the 16 TEE_TCB_SVN bytes must reach the level's TDX components (what
 * @phala/dcap-qvl 0.3.9 does). "intel": when the TDX module major version (byte 1) is non-zero, bytes 0
 * and 1 are left to the TDX module identity (Intel QVL). Strict never reports a better status.
 */
export type TcbMatching = "strict" | "intel";

export interface PlatformTcb {
  sgxComponents: number[];
  pceSvn: number;
  teeTcbSvn: Buffer;
}

export function matchTcbLevel(info: TcbInfo, p: PlatformTcb, mode: TcbMatching): TcbLevel {
  const tdxStart = mode === "intel" && p.teeTcbSvn[1]! > 0 ? 2 : 0;
  for (const level of info.tcbLevels) {
    if (p.pceSvn < level.pceSvn) continue;
    if (level.sgxComponents.some((req, i) => p.sgxComponents[i]! < req)) continue;
    if (level.tdxComponents.length !== 16) {
      throw new TcbError("bad_collateral", "TDX TCB info level lacks tdxtcbcomponents");
    }
    let ok = true;
    for (let i = tdxStart; i < 16; i++) if (p.teeTcbSvn[i]! < level.tdxComponents[i]!) ok = false;
    if (ok) return level;
  }
  throw new TcbError(
    "no_tcb_level",
    `No matching TCB level found: PCK SGX TCB components ${p.sgxComponents.join(",")} / PCESVN ${p.pceSvn} / TEE_TCB_SVN ` +
      `${p.teeTcbSvn.toString("hex")} reach none of the ${info.tcbLevels.length} levels for FMSPC ${info.fmspc}`,
  );
}

export interface SeamFields {
  teeTcbSvn: Buffer;
  mrSignerSeam: Buffer;
  seamAttributes: Buffer;
}

function moduleMatches(m: { mrSigner: Buffer; attributes: Buffer; attributesMask: Buffer }, s: SeamFields): boolean {
  if (!m.mrSigner.equals(s.mrSignerSeam)) return false;
  for (let i = 0; i < 8; i++) if ((s.seamAttributes[i]! & m.attributesMask[i]!) !== (m.attributes[i]! & m.attributesMask[i]!)) return false;
  return true;
}

/**
 * TDX module identity: for module major version 0 only the tcbInfo.tdxModule signer/attributes are
 * checked; for version N > 0 the identity "TDX_0N" must exist, match, and give a status by the minor SVN.
 */
export function evaluateTdxModule(info: TcbInfo, s: SeamFields): ComponentResult | undefined {
  const major = s.teeTcbSvn[1]!;
  if (major === 0) {
    if (info.tdxModule && !moduleMatches(info.tdxModule, s)) {
      throw new TcbError("tdx_module_mismatch", "TDX module MRSIGNER/attributes do not match tcbInfo.tdxModule");
    }
    return undefined;
  }
  const wanted = `TDX_${major.toString(16).toUpperCase().padStart(2, "0")}`;
  const ident = info.tdxModuleIdentities.find((m) => m.id.toUpperCase() === wanted);
  if (!ident) throw new TcbError("no_tcb_level", `TCB info has no TDX module identity ${wanted} for TEE_TCB_SVN ${s.teeTcbSvn.toString("hex")}`);
  if (!moduleMatches(ident, s)) {
    throw new TcbError("tdx_module_mismatch", `TDX module MRSIGNER/attributes do not match identity ${wanted}`);
  }
  const level = ident.tcbLevels.find((l) => s.teeTcbSvn[0]! >= l.isvSvn);
  if (!level) throw new TcbError("no_tcb_level", `TDX module SVN ${s.teeTcbSvn[0]} is below every level of ${wanted}`);
  return { status: level.status, advisoryIds: level.advisoryIds };
}

export function convergeStatus(platform: TcbStatus, components: TcbStatus[]): TcbStatus {
  let out = platform;
  if (components.includes("OutOfDate")) {
    if (platform === "UpToDate" || platform === "SWHardeningNeeded") out = "OutOfDate";
    if (platform === "ConfigurationNeeded" || platform === "ConfigurationAndSWHardeningNeeded") out = "OutOfDateConfigurationNeeded";
  }
  if (components.includes("Revoked")) out = "Revoked";
  return out;
}

export function mergeAdvisories(...lists: string[][]): string[] {
  const out: string[] = [];
  for (const l of lists) for (const a of l) if (!out.includes(a)) out.push(a);
  return out;
}

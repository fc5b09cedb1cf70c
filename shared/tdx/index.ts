/** Public API of the TDX attestation library (quote parsing, DCAP verification, measurements). */
export {
  parseQuote,
  QuoteFormatError,
  NotTdxQuoteError,
  MAX_QUOTE_BYTES,
  TEE_TYPE_TDX,
  TEE_TYPE_SGX,
  type TdxQuote,
  type TdReport,
  type QuoteHeader,
  type EnclaveReport,
  type QuoteLayout,
} from "./quote.js";
export {
  verifyQuote,
  verifyQuoteSync,
  QuoteVerifier,
  VerificationCache,
  measurementsOf,
  Measurements,
  QuoteFacts,
  TcbFacts,
  PckFacts,
  VERIFY_STAGES,
  type Verdict,
  type VerifyOptions,
  type VerifyStage,
} from "./verify.js";
export { TCB_STATUSES, type TcbStatus, type TcbMatching } from "./tcb.js";
export {
  applyTcbPolicy,
  parseAcceptedTcbStatuses,
  DEFAULT_ACCEPTED_TCB_STATUSES,
  TcbPolicyError,
  type TcbPolicyVerdict,
} from "./tcb-policy.js";
export {
  parseCollateral,
  parseCollateralJson,
  loadCollateralFile,
  collateralDigest,
  collateralNextUpdate,
  PcsCollateralSource,
  CachingCollateralSource,
  CollateralError,
  INTEL_PCS_BASE_URL,
  INTEL_ROOT_CA_CRL_URL,
  Collateral,
  type CollateralSource,
  type PckCaType,
  type FetchFn,
} from "./collateral.js";
export { INTEL_SGX_ROOT_CA_PEM, INTEL_SGX_ROOT_CA_SHA256 } from "./root-ca.js";
export { PkiError, parseSgxExtension, type SgxExtension } from "./pck.js";
export { pckInfoOf, type PckInfo } from "./pck-info.js";
export {
  parseManifest,
  compareMeasurements,
  describeChecks,
  parseWaivers,
  ManifestError,
  MANIFEST_MEASUREMENTS,
  ExpectedMeasurements,
  MeasurementReport,
  MeasurementCheck,
  type ImageManifest,
  type MeasurementResult,
  type ManifestMeasurement,
} from "./measurements.js";
export {
  eventDigest,
  replayRtmr,
  extendRtmr,
  parseEventLog,
  checkEventLog,
  EventLogError,
  EventLogCheck,
  type RtmrEvent,
} from "./event-log.js";
export { reportDataFor, canonicalHostKey, REPORT_DATA_DOMAIN } from "./report-data.js";

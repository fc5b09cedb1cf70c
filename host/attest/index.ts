export {
  AttestationService,
  checkManifest,
  checkReportData,
  type AttestationServiceDeps,
  type InstanceVerdict,
  type ManifestCheck,
  type QuoteCheck,
  type QuoteVerification,
  type ReportDataCheck,
} from "./attestation-service.js";
export {
  buildCollateralProvider,
  CollateralBundleFile,
  ConfiguredCollateralProvider,
  NO_COLLATERAL_SOURCE,
  parseCollateralBundle,
  type CollateralLookup,
  type CollateralOrigin,
  type CollateralProvider,
} from "./collateral-provider.js";

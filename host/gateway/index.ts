export { InferenceGateway, type InferenceGatewayDeps, type GatewayHandler } from "./inference-gateway.js";
export { InferenceUsageStore, type InferenceRecord, type InferenceRecordRow, type InstanceAccess } from "./metering-store.js";
export { DEFAULT_GATEWAY_LIMITS, gatewayLimitsFromEnv, GatewayLimitsError, type GatewayLimits } from "./limits.js";
export { formatUsdCents, priceToMicroUsd, requestCostPicoUsd } from "./money.js";
export { HttpUpstreamClient, UpstreamError, type UpstreamClient } from "./upstream-client.js";

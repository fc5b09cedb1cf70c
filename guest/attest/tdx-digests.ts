/*
 * The agent's view of shared/tdx: the event digest it extends into RTMR3 and the REPORTDATA it asks
 * quotes over, imported from the two leaf modules (not shared/tdx/index.js, which pulls in the whole
 * DCAP verifier the guest does not need).
 */
export { eventDigest } from "../../shared/tdx/event-log.js";
export { reportDataFor } from "../../shared/tdx/report-data.js";

// The configuration lives in host/config/ (one schema per area, one loader); this path stays for its importers.
export * from "./config/index.js";

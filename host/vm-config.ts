// The QEMU driver's settings are part of the one configuration (host/config/vm.ts); this path stays for its importers.
export { loadVmConfig, type VmConfig } from "./config/index.js";

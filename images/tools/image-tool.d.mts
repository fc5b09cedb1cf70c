// Types for images/tools/image-tool.mjs, so its tests type-check under strict TypeScript.
export function listing(dir: string, outFile: string): Promise<string>;
export function agentDeps(nodeModules: string, jsDirs: string[]): string[];
export function replay(digests: Buffer[]): Buffer;
export function peImageHash(buf: Buffer, alg: string): Buffer;
export function qemuPatchedKernel(kernel: Buffer, initrdSize: number, memoryBytes: number): Buffer;
export interface Measurements {
  /** One value for the QEMU named, or null (with rtmr1_reason) when it cannot be predicted. */
  rtmr1: string | null;
  rtmr1_reason: string | null;
  qemu_version: string | null;
  memory_mib: number;
  rtmr2: string;
  events: { rtmr1: { event: string; digest: string }[]; rtmr2: { event: string; digest: string }[] };
}
export const MIN_TDX_QEMU: [number, number];
export function parseQemuVersion(text: string): [number, number, number] | null;
export function measure(kernelPath: string, initrdPath: string, cmdline: string, memoryMiB: number, qemuVersion?: string | null): Measurements;
export interface TdvfSection {
  dataOffset: number;
  rawSize: number;
  gpa: string;
  memSize: number;
  type: string | number;
  attributes: number;
}
export function mrtd(fwPath: string): { value: string; sections: TdvfSection[] };
export function manifest(specPath: string): Promise<void>;

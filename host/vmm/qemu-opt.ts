/** QEMU's option parser splits on commas; a literal comma inside a value is written twice. */
export function qemuOptValue(v: string): string {
  return v.replaceAll(",", ",,");
}

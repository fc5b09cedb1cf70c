/** vsock CIDs 0-2 are the hypervisor, local and host; 0xFFFFFFFF is VMADDR_CID_ANY. */
export const MIN_GUEST_CID = 3;
export const MAX_GUEST_CID = 0xfffffffe;

/** Lowest free guest CID at or above `min`, given the CIDs the store says are taken (live or recorded). */
export function allocateCid(used: Iterable<number>, opts: { min?: number; max?: number } = {}): number {
  const min = Math.max(opts.min ?? MIN_GUEST_CID, MIN_GUEST_CID);
  const max = Math.min(opts.max ?? MAX_GUEST_CID, MAX_GUEST_CID);
  const taken = new Set<number>();
  for (const c of used) if (c >= min && c <= max) taken.add(c);
  for (let c = min; c <= max && c - min <= taken.size; c++) if (!taken.has(c)) return c;
  throw new RangeError(`no free vsock CID in [${min}, ${max}]`);
}

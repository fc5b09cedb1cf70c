/**
 * Billing windows are monthly and anchored to the tenant's signup: window n starts at
 * signup + n calendar months (day clamped to the month's length, time of day kept), computed from
 * the signup each time so clamping never drifts (Jan 31 → Feb 28 → Mar 31).
 */
export function addMonthsUtc(anchor: Date, months: number): Date {
  const y = anchor.getUTCFullYear();
  const m = anchor.getUTCMonth() + months;
  const targetYear = y + Math.floor(m / 12);
  const targetMonth = ((m % 12) + 12) % 12;
  const lastDay = new Date(Date.UTC(targetYear, targetMonth + 1, 0)).getUTCDate();
  const day = Math.min(anchor.getUTCDate(), lastDay);
  return new Date(Date.UTC(targetYear, targetMonth, day, anchor.getUTCHours(), anchor.getUTCMinutes(), anchor.getUTCSeconds(), anchor.getUTCMilliseconds()));
}

export function billingWindow(signup: Date, now: Date): { start: Date; end: Date } {
  if (now < signup) return { start: signup, end: addMonthsUtc(signup, 1) };
  let n = (now.getUTCFullYear() - signup.getUTCFullYear()) * 12 + (now.getUTCMonth() - signup.getUTCMonth());
  while (n > 0 && addMonthsUtc(signup, n) > now) n--;
  while (addMonthsUtc(signup, n + 1) <= now) n++;
  return { start: addMonthsUtc(signup, n), end: addMonthsUtc(signup, n + 1) };
}

export interface BillableInterval {
  from: Date;
  /** null while the instance still runs. */
  to: Date | null;
}

/** Instance-hours inside [start, min(end, now)), rounded to 1/100 h. */
export function instanceHours(intervals: BillableInterval[], window: { start: Date; end: Date }, now: Date): number {
  const windowEnd = Math.min(window.end.getTime(), now.getTime());
  let ms = 0;
  for (const iv of intervals) {
    const a = Math.max(iv.from.getTime(), window.start.getTime());
    const b = Math.min(iv.to ? iv.to.getTime() : now.getTime(), windowEnd);
    if (b > a) ms += b - a;
  }
  return Math.round((ms / 3600_000) * 100) / 100;
}

/**
 * `instanceHours` from the sums SQLite keeps (InstanceStore.billable) instead of every interval:
 * each open interval runs to min(window end, now). Equal to `instanceHours` for the same
 * intervals as long as no recorded time lies after `now` (the clock does not step back).
 */
export function instanceHoursFromSums(sums: { closedMs: number; openCount: number; openFromSumMs: number }, window: { start: Date; end: Date }, now: Date): number {
  const windowEnd = Math.min(window.end.getTime(), now.getTime());
  const ms = sums.closedMs + Math.max(0, sums.openCount * windowEnd - sums.openFromSumMs);
  return Math.round((ms / 3600_000) * 100) / 100;
}

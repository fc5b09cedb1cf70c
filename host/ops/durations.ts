const UNIT_MS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 7 * 86_400_000 };

/** Operator durations such as `24h`, `90m`, `7d` or `1h30m` (no bare numbers: the unit is always said). */
export function parseDuration(text: string): number {
  const v = text.trim();
  if (!/^(\d+[smhdw])+$/.test(v)) throw new Error(`invalid duration "${text}": use e.g. 30s, 15m, 24h, 7d or 1h30m`);
  let ms = 0;
  for (const m of v.matchAll(/(\d+)([smhdw])/g)) ms += Number(m[1]) * UNIT_MS[m[2]!]!;
  if (!Number.isSafeInteger(ms)) throw new Error(`duration "${text}" is too large`);
  return ms;
}

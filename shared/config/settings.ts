import { z } from "zod";

/**
 * The building blocks of every settings schema (cvmd's and cvm-agent's): a setting is a name, a
 * value type that turns the raw string into a typed value, and a default. One reader applies them,
 * so every program reports a bad value the same way: `NAME=value: what was expected`.
 */

/** A bad setting. `variable` is the name the operator wrote; the message starts with it. */
export class ConfigError extends Error {
  override name = "ConfigError";
  constructor(
    readonly variable: string,
    message: string,
  ) {
    super(message);
  }
}

/** A name → its raw string; undefined when the setting is not given. */
export type Lookup = (name: string) => string | undefined;

/** Raw string in, typed value out; a failure's message says what was expected. */
export type Value<T> = z.ZodType<T, string>;

export interface Setting<T> {
  readonly name: string;
  /** Its value is never put in an error message. */
  readonly secret: boolean;
  read(get: Lookup): T;
}

/** A default: the raw text, or one worked out from other settings or the host. */
export type Fallback = string | ((get: Lookup) => string);

/** Empty counts as unset, so `FOO=` in a unit file or `"FOO": ""` in JSON means the default. */
function given(get: Lookup, name: string): string | undefined {
  const v = get(name);
  return v === undefined || v === "" ? undefined : v;
}

/** One raw value through its type; what every setting's read comes down to, also for argv flags. */
export function parseSetting<T>(name: string, value: Value<T>, raw: string, secret = false): T {
  const r = value.safeParse(raw);
  if (r.success) return r.data;
  // A secret's value is never echoed: it is the key.
  throw new ConfigError(name, `${secret ? name : `${name}=${raw}`}: ${r.error.issues[0]?.message ?? "invalid"}`);
}

/** A setting that always has a value: the given one, else the default. */
export function setting<T>(name: string, value: Value<T>, fallback: Fallback, opts: { secret?: boolean } = {}): Setting<T> {
  const secret = opts.secret ?? false;
  return {
    name,
    secret,
    read: (get) => parseSetting(name, value, given(get, name) ?? (typeof fallback === "string" ? fallback : fallback((n) => given(get, n))), secret),
  };
}

/** A setting that may stay unset (null): off, or not configured. */
export function optional<T>(name: string, value: Value<T>, opts: { secret?: boolean } = {}): Setting<T | null> {
  const secret = opts.secret ?? false;
  return {
    name,
    secret,
    read: (get) => {
      const raw = given(get, name);
      return raw === undefined ? null : parseSetting(name, value, raw, secret);
    },
  };
}

export type Shape = Record<string, Setting<unknown>>;
export type Settings<S extends Shape> = { -readonly [K in keyof S]: S[K] extends Setting<infer T> ? T : never };

/** Reads every setting of a shape: the output has the shape's keys and each setting's type. */
export function readSettings<S extends Shape>(shape: S, get: Lookup): Settings<S> {
  const out: Record<string, unknown> = {};
  for (const [key, s] of Object.entries(shape)) out[key] = s.read(get);
  return out as Settings<S>;
}

/** The names a shape reads, for documentation checks and round-trip tests. */
export function settingNames(shape: Shape): string[] {
  return Object.values(shape).map((s) => s.name);
}

/** The first source that gives a name wins; empty counts as unset. */
export function lookupOf(...sources: Array<Record<string, string | undefined>>): Lookup {
  return (name) => {
    for (const src of sources) {
      const v = src[name];
      if (v !== undefined && v !== "") return v;
    }
    return undefined;
  };
}

// ---- value types ------------------------------------------------------------------------------

/** A decimal integer in [min, max]; no sign, no exponent, no fraction. */
export function integer(min: number, max = Number.MAX_SAFE_INTEGER): Value<number> {
  const expected = `expected an integer between ${min} and ${max}`;
  return z
    .string()
    .regex(/^\d{1,16}$/, { error: expected })
    .transform(Number)
    .pipe(z.number().min(min, { error: expected }).max(max, { error: expected }));
}

/** A whole number of seconds, kept as milliseconds (the config's durations are all `*Ms`). */
export function secondsAsMs(min: number, max: number): Value<number> {
  return integer(min, max).transform((s) => s * 1000);
}

export function oneOf<const T extends readonly [string, ...string[]]>(values: T): Value<T[number]> {
  const expected = values.length === 2 ? `${values[0]} or ${values[1]}` : `${values.slice(0, -1).join(", ")} or ${values.at(-1)}`;
  return z.enum(values, { error: `expected ${expected}` }) as unknown as Value<T[number]>;
}

/** on/off switch. */
export const onOff: Value<boolean> = z.enum(["on", "off"], { error: "expected on or off" }).transform((v) => v === "on");

/** Any non-empty text (empty is unset before it gets here). */
export const text: Value<string> = z.string();

/** Text matching `re`; `what` says what it should look like. */
export function matching(re: RegExp, what: string): Value<string> {
  return z.string().regex(re, { error: what });
}

/** `host:port`, IPv6 in brackets. */
export function hostPort(example: string): Value<{ host: string; port: number }> {
  const expected = `expected host:port, e.g. ${example}`;
  return z.string().transform((v, ctx) => {
    const m = /^(\[[0-9a-fA-F:]+\]|[^:]+):(\d{1,5})$/.exec(v);
    if (!m || Number(m[2]) > 65535) {
      ctx.addIssue({ code: "custom", message: expected });
      return z.NEVER;
    }
    return { host: m[1]!.replace(/^\[|\]$/g, ""), port: Number(m[2]) };
  });
}

/** Seconds that divide a minute, for jobs scheduled by cron. */
export const divisorOf60: Value<number> = integer(1, 30).refine((n) => 60 % n === 0, { error: "must divide 60 (1, 2, 3, 4, 5, 6, 10, 12, 15, 20 or 30)" });

/** Comma-separated items, blanks dropped; each item checked by `item`. */
export function commaList<T>(item: Value<T>): Value<T[]> {
  return z
    .string()
    .transform((v) => v.split(",").map((s) => s.trim()).filter(Boolean))
    .pipe(z.array(item));
}

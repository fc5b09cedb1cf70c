import { run, RunError } from "../../shared/util/run.js";

export interface DigRecord {
  name: string;
  ttl: number;
  type: string;
  data: string;
}

export interface DigResult {
  status: string;
  flags: string[];
  answers: DigRecord[];
  authority: DigRecord[];
  additional: DigRecord[];
  raw: string;
}

/** `dig` (Debian dnsutils) as a prerequisite: the tool and the flag that makes it answer. */
export const DIG = ["dig", ["-v"]] as const;

/** One query with the real `dig`, parsed from its default presentation output. */
export async function dig(server: { host: string; port: number }, name: string, type = "A", extra: string[] = []): Promise<DigResult> {
  let stdout: string;
  try {
    ({ stdout } = await run("dig", [`@${server.host}`, "-p", String(server.port), name, type, "+norecurse", "+time=2", "+tries=1", ...extra], { timeoutMs: 15_000 }));
  } catch (err) {
    // dig exits 9 on "no servers could be reached"; keep its output for the assertion message.
    if (err instanceof RunError) throw new Error(`dig ${name} ${type} failed (${err.code}): ${err.stdout}${err.stderr}`);
    throw err;
  }
  const status = /status: ([A-Z0-9]+)/.exec(stdout)?.[1];
  const flags = /;; flags:([^;]*);/.exec(stdout)?.[1]?.trim().split(/\s+/) ?? [];
  if (!status) throw new Error(`dig printed no status:\n${stdout}`);
  const section = (title: string): DigRecord[] => {
    const m = new RegExp(`;; ${title} SECTION:\\n([\\s\\S]*?)(?:\\n\\n|$)`).exec(stdout);
    if (!m) return [];
    return m[1]!
      .split("\n")
      .filter((l) => l && !l.startsWith(";"))
      .map((l) => {
        const [n, ttl, , t, ...data] = l.split(/\s+/);
        return { name: n!, ttl: Number(ttl), type: t!, data: data.join(" ") };
      });
  };
  return { status, flags, answers: section("ANSWER"), authority: section("AUTHORITY"), additional: section("ADDITIONAL"), raw: stdout };
}

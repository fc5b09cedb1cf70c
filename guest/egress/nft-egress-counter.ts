import { run as defaultRun, RunError } from "../../shared/util/run.js";

type Run = typeof defaultRun;

export interface EgressCounter {
  /** Makes sure the counter exists; keeps an existing one (and its count) across agent restarts. */
  install(): Promise<void>;
  read(): Promise<{ bytes: number; packets: number }>;
}

export const GUEST_EGRESS_TABLE = "cvm_guest";

/**
 * The guest's own view of egress: a named nft counter on every packet leaving through a non-loopback
 * interface. `nft` is an argv prefix so a wrapper can be put in front (e.g. `ip netns exec <ns> nft`).
 */
export class NftEgressCounter implements EgressCounter {
  constructor(
    private readonly nft: string[] = ["nft"],
    private readonly run: Run = defaultRun,
  ) {
    if (nft.length === 0) throw new Error("nft command must not be empty");
  }

  private exec(args: string[], input?: string) {
    const [cmd, ...prefix] = this.nft;
    return this.run(cmd!, [...prefix, ...args], { timeoutMs: 15_000, input });
  }

  ruleset(): string {
    return [
      `table inet ${GUEST_EGRESS_TABLE} {`,
      "  counter egress { }",
      "  chain out {",
      "    type filter hook output priority 0; policy accept;",
      '    oifname != "lo" counter name "egress"',
      "  }",
      "}",
      "",
    ].join("\n");
  }

  async install(): Promise<void> {
    try {
      await this.exec(["list", "table", "inet", GUEST_EGRESS_TABLE]);
      return; // Re-adding would duplicate the rule (double counting); deleting would reset the count.
    } catch (err) {
      if (!(err instanceof RunError)) throw err;
    }
    await this.exec(["-f", "-"], this.ruleset());
  }

  async read(): Promise<{ bytes: number; packets: number }> {
    const { stdout } = await this.exec(["-j", "list", "counter", "inet", GUEST_EGRESS_TABLE, "egress"]);
    const doc = JSON.parse(stdout) as { nftables?: Array<Record<string, unknown>> };
    for (const item of doc.nftables ?? []) {
      const c = item.counter as { name?: string; bytes?: unknown; packets?: unknown } | undefined;
      if (c && c.name === "egress" && typeof c.bytes === "number" && typeof c.packets === "number") return { bytes: c.bytes, packets: c.packets };
    }
    throw new Error("nft output has no egress counter");
  }
}

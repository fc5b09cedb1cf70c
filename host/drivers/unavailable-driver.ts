import type { Driver } from "./driver.js";
import { ProvisionError } from "./failure-codes.js";

/**
 * The driver when none can run on this host: every instance fails at once with `driver_unavailable`
 * and the reason, rather than pretending to provision.
 */
export class UnavailableDriver implements Driver {
  readonly name = "unavailable";
  constructor(private readonly reason: string) {}

  async create(): Promise<never> {
    throw new ProvisionError("driver_unavailable", `No VM driver is available on this host: ${this.reason}`);
  }
  async adopt() {
    return { alive: false as const, reason: this.reason };
  }
  async destroy(): Promise<void> {}
  async inspect() {
    return { running: false };
  }
}

import { readFile } from "node:fs/promises";
import { join } from "node:path";

export interface SystemSample {
  uptime_s: number;
  load: [number, number, number];
  mem_total_bytes: number;
  mem_available_bytes: number;
}

export interface SystemStats {
  sample(): Promise<SystemSample>;
}

/** Reads /proc (uptime, loadavg, meminfo). */
export class ProcSystemStats implements SystemStats {
  constructor(private readonly procDir = "/proc") {}

  async sample(): Promise<SystemSample> {
    const [uptime, loadavg, meminfo] = await Promise.all([
      readFile(join(this.procDir, "uptime"), "utf8"),
      readFile(join(this.procDir, "loadavg"), "utf8"),
      readFile(join(this.procDir, "meminfo"), "utf8"),
    ]);
    const l = loadavg.trim().split(/\s+/).map(Number);
    const kb = (name: string) => {
      const m = new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(meminfo);
      return m ? Number(m[1]) * 1024 : 0;
    };
    return {
      uptime_s: Number(uptime.trim().split(/\s+/)[0]) || 0,
      load: [l[0] || 0, l[1] || 0, l[2] || 0],
      mem_total_bytes: kb("MemTotal"),
      mem_available_bytes: kb("MemAvailable"),
    };
  }
}

import type { Driver, InstanceSpec, ReadyInfo } from "../../host/drivers/driver.js";
import type { FakeDriver } from "../support/fake-driver.js";

/** TEST DOUBLE wrapper: the fake guests are "reached" on 127.0.0.1:<port>, as dev-mode port forwards are. */
export function loopbackSsh(fake: FakeDriver): Driver {
  let port = 22200;
  const onLoopback = (info: ReadyInfo): ReadyInfo => ({ ...info, ssh: { ...info.ssh, host: "127.0.0.1", port: port++ } });
  return {
    name: fake.name,
    create: async (spec, ctx) => onLoopback(await fake.create(spec, ctx)),
    adopt: async (spec, ctx) => {
      const r = await fake.adopt(spec, ctx);
      return r.alive ? { alive: true, ready: r.ready.then(onLoopback) } : r;
    },
    destroy: (spec: InstanceSpec) => fake.destroy(spec),
    inspect: (spec: InstanceSpec) => fake.inspect(spec),
    onExit: (l) => fake.onExit(l),
  };
}

export async function until<T>(fn: () => Promise<T>, ok: (v: T) => boolean, ms = 5000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (ok(v) || Date.now() > end) return v;
    await new Promise((r) => setTimeout(r, 25));
  }
}

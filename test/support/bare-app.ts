import type { AddressInfo } from "node:net";
import type Koa from "koa";
import pino from "pino";
import { buildApp, type AppDeps } from "../../host/api/app.js";
import { BUILTIN_CATALOGUE } from "../../host/gateway/catalogue.js";

/**
 * The app cvmd serves with no daemon behind it: no stores, no engine. For what is decided before
 * anything is looked up (routing, the request frame, draining, the route list); a request that
 * reaches a store fails.
 */
export function bareApp(over: Partial<AppDeps> = {}): ReturnType<typeof buildApp> {
  const silent = pino({ level: "silent" });
  return buildApp({
    logger: silent,
    securityLog: silent,
    clock: { now: () => new Date() },
    keys: {} as never,
    instances: {} as never,
    engine: {} as never,
    catalogue: BUILTIN_CATALOGUE,
    baseDomain: "x",
    version: "0",
    draining: () => false,
    usage: {} as never,
    ...over,
  });
}

/** Serves `app` on a loopback port. */
export async function listen(app: Koa): Promise<{ url: string; close(): void }> {
  const server = app.listen(0, "127.0.0.1");
  await new Promise((r) => server.once("listening", r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, close: () => server.close() };
}

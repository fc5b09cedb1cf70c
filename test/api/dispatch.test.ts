import Router from "@koa/router";
import Koa from "koa";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { dispatch } from "../../host/api/dispatch.js";

describe("dispatch (a @koa/router Router's routes, each composed once)", () => {
  let url = "";
  let close = () => {};
  const seen: string[] = [];

  beforeAll(async () => {
    const router = new Router();
    const mark = (label: string) => (ctx: Koa.Context, next: Koa.Next) => {
      seen.push(label);
      return next();
    };
    router.get("/v1/things/:name", mark("auth"), (ctx) => {
      ctx.body = { name: ctx.params.name, route: (ctx as Koa.Context & { _matchedRoute?: string })._matchedRoute };
    });
    router.get("/v1/things/special", (ctx) => {
      ctx.body = { special: true };
    });
    router.delete("/v1/things/:name", (ctx) => {
      ctx.status = 202;
      ctx.body = { deleted: ctx.params.name };
    });
    const app = new Koa();
    app.use(async (ctx, next) => {
      await next();
      if (ctx.body === undefined) ctx.body = { unmatched: `${ctx.method} ${ctx.path}`, status: ctx.status };
    });
    app.use(dispatch(router));
    const server = app.listen(0, "127.0.0.1");
    await new Promise((r) => server.once("listening", r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    close = () => server.close();
  });
  afterAll(() => close());

  const get = async (path: string, method = "GET") => {
    const res = await fetch(url + path, { method });
    return { status: res.status, body: method === "HEAD" ? null : await res.json() };
  };

  it("runs the matching route with its middleware, decoded params and the route template", async () => {
    seen.length = 0;
    expect(await get("/v1/things/a%20b")).toEqual({ status: 200, body: { name: "a b", route: "/v1/things/:name" } });
    expect(await get("/v1/things/x")).toEqual({ status: 200, body: { name: "x", route: "/v1/things/:name" } });
    expect(seen).toEqual(["auth", "auth"]);
    expect(await get("/v1/things/x", "DELETE")).toEqual({ status: 202, body: { deleted: "x" } });
  });

  it("runs the first registered route when two match, like router.routes()", async () => {
    expect((await get("/v1/things/special")).body).toEqual({ name: "special", route: "/v1/things/:name" });
  });

  it("answers HEAD through the GET route, and passes unmatched paths and methods on", async () => {
    expect((await get("/v1/things/x", "HEAD")).status).toBe(200);
    expect(await get("/v1/nothing")).toEqual({ status: 200, body: { unmatched: "GET /v1/nothing", status: 404 } });
    expect((await get("/v1/things/x", "PUT")).body).toEqual({ unmatched: "PUT /v1/things/x", status: 404 });
  });

  it("refuses router-level middleware, which it would not run", () => {
    const router = new Router();
    router.use((ctx, next) => next());
    router.get("/x", (ctx) => {
      ctx.body = 1;
    });
    expect(() => dispatch(router)).toThrow(/router-level middleware/);
  });
});

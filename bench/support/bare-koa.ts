// The baseline for the API benchmark: Koa with one handler and nothing else, in its own process
// like cvmd, so the ratio shows what our middleware, auth and SQLite cost per request.
import { createServer } from "node:http";
import Koa from "koa";

const app = new Koa();
app.use(async (ctx) => {
  if (ctx.method === "POST") {
    const chunks: Buffer[] = [];
    for await (const c of ctx.req as AsyncIterable<Buffer>) chunks.push(c);
    ctx.status = 202;
    ctx.body = { request_id: "0", correlation_id: null, data: JSON.parse(Buffer.concat(chunks).toString()) };
    return;
  }
  ctx.body = { request_id: "0", correlation_id: null, data: { name: "abcdefgh", status: "ready" } };
});
const server = createServer(app.callback()).listen(0, "127.0.0.1", () => {
  const addr = server.address();
  process.stdout.write(JSON.stringify({ msg: "listening", port: typeof addr === "object" && addr ? addr.port : 0 }) + "\n");
});
process.on("SIGTERM", () => server.close(() => process.exit(0)));

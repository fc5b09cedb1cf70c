import { describe, expect, it } from "vitest";
import { BootQueue, type BootSlot } from "./boot-queue.js";

const settled = () => new Promise((r) => setImmediate(r));

describe("BootQueue", () => {
  it("runs at most `limit` boots; the rest start in order as slots are released", async () => {
    const q = new BootQueue(2);
    const order: string[] = [];
    const slots = new Map<string, BootSlot>();
    for (const name of ["a", "b", "c", "d"]) void q.acquire("instance").then((s) => (order.push(name), slots.set(name, s)));
    await settled();
    expect(order).toEqual(["a", "b"]);
    expect(q.stats).toEqual({ running: 2, waiting: 2 });
    slots.get("b")!.release();
    slots.get("b")!.release(); // a second release must not free another slot
    await settled();
    expect(order).toEqual(["a", "b", "c"]);
    expect(q.stats).toEqual({ running: 2, waiting: 1 });
    slots.get("a")!.release();
    await settled();
    expect(order).toEqual(["a", "b", "c", "d"]);
  });

  it("puts an instance's cold start ahead of waiting pool boots, behind waiting instances", async () => {
    const q = new BootQueue(1);
    const order: string[] = [];
    let current = await q.acquire("pool");
    const take = (name: string, kind: "instance" | "pool") => void q.acquire(kind).then((s) => (order.push(name), (current = s)));
    take("pool-1", "pool");
    take("inst-1", "instance");
    take("pool-2", "pool");
    take("inst-2", "instance");
    expect(q.positionFor("instance")).toEqual({ running: 1, ahead: 2 });
    expect(q.positionFor("pool")).toEqual({ running: 1, ahead: 4 });
    for (let i = 0; i < 4; i++) {
      current.release();
      await settled();
    }
    expect(order).toEqual(["inst-1", "inst-2", "pool-1", "pool-2"]);
  });

  it("an aborted wait leaves the queue and rejects with the reason; the slot goes to the next in line", async () => {
    const q = new BootQueue(1);
    const first = await q.acquire("instance");
    const ac = new AbortController();
    const gone = q.acquire("instance", ac.signal);
    const next = q.acquire("instance");
    ac.abort(new Error("instance deleted"));
    await expect(gone).rejects.toThrow("instance deleted");
    expect(q.stats).toEqual({ running: 1, waiting: 1 });
    first.release();
    const s = await next;
    expect(s.waitedMs).toBeGreaterThanOrEqual(0);
    expect(q.stats).toEqual({ running: 1, waiting: 0 });
  });

  it("starts at once when there is room, and refuses a limit below one", async () => {
    const q = new BootQueue(1);
    expect(q.positionFor("instance")).toBeNull();
    expect((await q.acquire("instance")).waitedMs).toBeLessThan(50);
    expect(() => new BootQueue(0)).toThrow(RangeError);
  });
});

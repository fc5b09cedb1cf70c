import { describe, expect, it } from "vitest";
import { AsyncDisposableStack, SuppressedError } from "./async-disposable-stack.js";

describe("AsyncDisposableStack (the standard's semantics, for runtimes without the global)", () => {
  it("runs registrations last to first, awaiting each before the next", async () => {
    const order: string[] = [];
    const s = new AsyncDisposableStack();
    s.defer(() => order.push("a"));
    expect(s.adopt("b", (v) => new Promise((r) => setTimeout(() => r(order.push(v)), 10)))).toBe("b");
    s.defer(async () => void order.push("c"));
    await s.disposeAsync();
    expect(order).toEqual(["c", "b", "a"]);
    expect(s.disposed).toBe(true);
    await s.disposeAsync();
    expect(order).toHaveLength(3);
  });

  it("keeps unwinding past a failure and chains several into one SuppressedError, the last failure outermost", async () => {
    const ran: number[] = [];
    const s = new AsyncDisposableStack();
    s.defer(() => {
      ran.push(1);
      throw new Error("first registered, last to fail");
    });
    s.defer(() => ran.push(2));
    s.defer(async () => {
      ran.push(3);
      throw new Error("last registered, first to fail");
    });
    const err = (await s.disposeAsync().catch((e: unknown) => e)) as InstanceType<typeof SuppressedError>;
    expect(ran).toEqual([3, 2, 1]);
    expect(err).toBeInstanceOf(SuppressedError);
    expect((err.error as Error).message).toBe("first registered, last to fail");
    expect((err.suppressed as Error).message).toBe("last registered, first to fail");

    const one = new AsyncDisposableStack();
    one.defer(() => Promise.reject(new Error("only")));
    await expect(one.disposeAsync()).rejects.toThrow(/^only$/);
  });

  it("move() hands everything to a new stack and leaves the old one disposed and empty", async () => {
    const ran: string[] = [];
    const s = new AsyncDisposableStack();
    s.defer(() => ran.push("x"));
    const moved = s.move();
    expect(s.disposed).toBe(true);
    await s.disposeAsync();
    expect(ran).toEqual([]);
    expect(() => s.defer(() => undefined)).toThrow(ReferenceError);
    await moved.disposeAsync();
    expect(ran).toEqual(["x"]);
  });
});

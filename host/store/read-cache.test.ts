import { describe, expect, it } from "vitest";
import { ReadCache } from "./read-cache.js";

describe("ReadCache", () => {
  it("serves an entry only under the generation it was read at, and only until maxAgeMs", () => {
    let now = 0;
    const c = new ReadCache<string, number>(10, 1000, () => now);
    c.set("a", "g1", 1);
    expect(c.get("a", "g1")).toBe(1);
    expect(c.get("a", "g2")).toBeUndefined();
    // A mismatch drops the entry: going back to the old generation does not revive it.
    expect(c.get("a", "g1")).toBeUndefined();
    c.set("a", "g1", 1);
    now = 1000;
    expect(c.get("a", "g1")).toBe(1);
    now = 1001;
    expect(c.get("a", "g1")).toBeUndefined();
  });

  it("holds at most maxEntries, dropping the oldest insertion", () => {
    const c = new ReadCache<number, number>(3, 1000, () => 0);
    for (let i = 0; i < 5; i++) c.set(i, 0, i);
    expect(c.size).toBe(3);
    expect([0, 1, 2, 3, 4].map((i) => c.get(i, 0))).toEqual([undefined, undefined, 2, 3, 4]);
    // Re-setting an existing key does not evict anyone.
    c.set(3, 0, 33);
    expect(c.size).toBe(3);
    expect(c.get(2, 0)).toBe(2);
  });
});

import { expect, test } from "vitest";

import { allocateCid } from "./cid.js";

test("lowest free CID from 3 up, skipping used ones", () => {
  expect(allocateCid([])).toBe(3);
  expect(allocateCid([3, 4, 6])).toBe(5);
  expect(allocateCid(new Set([0, 1, 2, 3]))).toBe(4);
  expect(allocateCid([], { min: 1 })).toBe(3);
  expect(allocateCid([100], { min: 100 })).toBe(101);
});

test("throws when the range is exhausted", () => {
  expect(() => allocateCid([3, 4, 5], { max: 5 })).toThrow(/no free vsock CID/);
  expect(allocateCid([3, 4], { max: 5 })).toBe(5);
});

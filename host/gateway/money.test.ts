import { describe, expect, test } from "vitest";
import { formatUsdCents, priceToMicroUsd, requestCostPicoUsd, usdToPico } from "./money.js";

describe("gateway money", () => {
  test("prices parse exactly, at micro-dollar precision", () => {
    expect(priceToMicroUsd("2.50")).toBe(2_500_000n);
    expect(priceToMicroUsd("0.000001")).toBe(1n);
    expect(priceToMicroUsd("15")).toBe(15_000_000n);
    expect(priceToMicroUsd("999999999.999999")).toBe(999_999_999_999_999n);
    for (const bad of ["", "-1", "1.2345678", "1e3", " 1", "0x10", "1."]) expect(() => priceToMicroUsd(bad)).toThrow(RangeError);
  });

  test("a request's cost is exact in picodollars", () => {
    const p = { inputMicroUsd: priceToMicroUsd("0.15"), outputMicroUsd: priceToMicroUsd("0.60") };
    // 1 token in at $0.15/M = 0.15 µ$ = 150,000 p$, which no float cent or micro-dollar column holds exactly.
    expect(requestCostPicoUsd(1, 0, p)).toBe(150_000n);
    expect(requestCostPicoUsd(1234, 567, p)).toBe(1234n * 150_000n + 567n * 600_000n);
    expect(() => requestCostPicoUsd(-1, 0, p)).toThrow();
    expect(() => requestCostPicoUsd(1.5, 0, p)).toThrow();
  });

  test("the total rounds half up to cents, once", () => {
    expect(formatUsdCents(0n)).toBe("0.00");
    expect(formatUsdCents(49_999_999_99n)).toBe("0.00"); // $0.004999999999
    expect(formatUsdCents(50_000_000_00n)).toBe("0.01"); // $0.005
    expect(formatUsdCents(usdToPico("28.234999"))).toBe("28.23");
    expect(formatUsdCents(usdToPico("28.235"))).toBe("28.24");
    expect(formatUsdCents(usdToPico("123456789.994999"))).toBe("123456789.99");
    // Ten thousand requests of 0.15 µ$ each: float addition drifts, the integer sum does not.
    const p = { inputMicroUsd: priceToMicroUsd("0.15"), outputMicroUsd: 0n };
    let sum = 0n;
    let float = 0;
    for (let i = 0; i < 100_000; i++) {
      sum += requestCostPicoUsd(1, 0, p);
      float += 0.15e-6;
    }
    expect(sum).toBe(15_000_000_000n); // exactly $0.015
    expect(float).not.toBe(0.015);
    expect(formatUsdCents(sum)).toBe("0.02");
  });
});

import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["{host,guest,shared,test,images}/**/*.test.ts"],
    exclude: ["node_modules/**", "dist/**", "var/**", "images/out/**", "images/cache/**"],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: "forks",
    // The hostile-guest harness collects garbage before it measures, so that a full GC of the test
    // process's own heap (vitest, tsx) is not charged to cvmd's event loop during an attack.
    poolOptions: { forks: { execArgv: ["--expose-gc"] } },
    // System tests share root-only resources (netns names, nft tables); keep files serial on 2 cores.
    fileParallelism: false,
  },
});

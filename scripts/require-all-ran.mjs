#!/usr/bin/env node
// After `vitest run --reporter=json`: with CVM_REQUIRE_SYSTEM_TESTS=1 (CI) a skipped or todo test fails
// the run, so a green CI run means every test ran. Locally it only prints the count.
import { readFileSync } from "node:fs";

const file = process.argv[2];
if (!file) {
  console.error("usage: require-all-ran.mjs <vitest json report>");
  process.exit(2);
}
const report = JSON.parse(readFileSync(file, "utf8"));
const notRun = [];
for (const suite of report.testResults ?? []) {
  for (const t of suite.assertionResults ?? []) {
    if (t.status !== "passed" && t.status !== "failed") notRun.push(`${t.status}: ${suite.name} > ${t.fullName}`);
  }
}
const summary = `${report.numPassedTests} passed, ${report.numFailedTests} failed, ${notRun.length} not run (skipped or todo)`;
if (process.env.CVM_REQUIRE_SYSTEM_TESTS === "1" && notRun.length > 0) {
  console.error(`${summary}; CVM_REQUIRE_SYSTEM_TESTS=1 requires every test to run:`);
  for (const line of notRun.slice(0, 50)) console.error(`  ${line}`);
  process.exit(1);
}
console.log(summary);

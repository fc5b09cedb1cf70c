import { expect, test } from "vitest";

import { AttemptRuns } from "./attempt-runs.js";

function runs(maxEvents?: number) {
  const events: string[] = [];
  return { events, a: new AttemptRuns("ssh", (m) => events.push(m), maxEvents) };
}

test("consecutive identical reasons become one event; a change of reason starts the next", () => {
  const { events, a } = runs();
  a.failed("SSH connection failed: connect ECONNREFUSED 127.0.0.1:22201", 1_000);
  a.failed("SSH connection failed: connect ECONNREFUSED 127.0.0.1:22201", 2_100);
  expect(events).toEqual([]);
  for (let i = 0; i < 15; i++) a.failed("no SSH handshake within 6000 ms", 9_000 + i * 7_000);
  a.failed("no SSH handshake within 4000 ms", 119_600);
  a.flush();
  a.flush();
  expect(events).toEqual([
    "ssh attempts 1–2 (1–2 s): SSH connection failed: connect ECONNREFUSED 127.0.0.1:22201",
    "ssh attempts 3–17 (9–107 s): no SSH handshake within 6000 ms",
    "ssh attempt 18 (120 s): no SSH handshake within 4000 ms",
  ]);
});

test("reasons that change at every attempt stay bounded: the rest is summed up in the last event", () => {
  const { events, a } = runs(3);
  for (let i = 1; i <= 100; i++) a.failed(i % 2 ? "connection closed before the handshake completed" : "SSH connection failed: read ECONNRESET", i * 1_000);
  a.flush();
  expect(events).toEqual([
    "ssh attempt 1 (1 s): connection closed before the handshake completed",
    "ssh attempt 2 (2 s): SSH connection failed: read ECONNRESET",
    "ssh attempts 3–100 (3–100 s): 2 different reasons, the last: SSH connection failed: read ECONNRESET",
  ]);
});

test("nothing failed, nothing said", () => {
  const { events, a } = runs();
  a.flush();
  expect(events).toEqual([]);
});

test("a reason as long as a guest can make it is cut before it reaches an event", () => {
  const { events, a } = runs();
  a.failed(`banner ${"x".repeat(100_000)}`, 1_000);
  a.flush();
  expect(events).toHaveLength(1);
  expect(events[0]!.length).toBeLessThan(400);
});

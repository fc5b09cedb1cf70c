import { expect, test } from "vitest";

import { terminalSafe } from "./terminal-safe.js";

test("escape sequences, bells and C1 controls from a guest reach the terminal as visible text", () => {
  const hostile = "ok\x1b]0;owned\x07 \x1b[2J\x1b]52;c;ZWNobyBoaQ==\x07\u009b31m\x00\x7f";
  const safe = terminalSafe(hostile);
  expect(safe).toBe("ok\\x1b]0;owned\\x07 \\x1b[2J\\x1b]52;c;ZWNobyBoaQ==\\x07\\x9b31m\\x00\\x7f");
  // eslint-disable-next-line no-control-regex
  expect(safe).not.toMatch(/[\x00-\x08\x0b-\x1f\x7f-\x9f]/);
});

test("log mode keeps lines and tabs but shows a bare CR or backspace that could hide text", () => {
  expect(terminalSafe("a\tb\r\nc\n")).toBe("a\tb\r\nc\n");
  expect(terminalSafe("rm -rf /\rls      \n")).toBe("rm -rf /\\x0dls      \n");
  expect(terminalSafe("secret\b\b\b\b\b\b")).toBe("secret\\x08\\x08\\x08\\x08\\x08\\x08");
});

test("interactive mode lets line editing through (CR, backspace) and still escapes ESC", () => {
  expect(terminalSafe("$ ab\b \b\r\x1b[K", "interactive")).toBe("$ ab\b \b\r\\x1b[K");
});

test("direction overrides and zero-width marks are shown, ordinary text in any script is not touched", () => {
  expect(terminalSafe("file\u202Etxt.exe")).toBe("file\\u202etxt.exe");
  expect(terminalSafe("a\u200Bb")).toBe("a\\u200bb");
  expect(terminalSafe("grüße, 日本語, emoji 🎉")).toBe("grüße, 日本語, emoji 🎉");
});

/**
 * Guest output is attacker input. Written raw to an operator's terminal, an escape sequence can retitle the window,
 * rewrite what is on screen, set the clipboard (OSC 52) or, on some terminals, answer back into the operator's shell;
 * a bare carriage return or backspace can hide text in a log. Escaping the introducing control character itself is
 * enough to neutralise every sequence, and needs no parser state across chunks.
 */
export type TerminalSafeMode =
  /** `console --log`: only newline and tab pass; CR only as part of CRLF. */
  | "log"
  /** The interactive console: CR and backspace pass too, since line editing in the guest's tty needs them. */
  | "interactive";

// C0 controls, DEL, C1 controls (as code points: UTF-8 terminals may honour U+009B as CSI) and the invisible
// direction/format marks that can make displayed text differ from the bytes (Trojan Source style).
// eslint-disable-next-line no-control-regex
const UNSAFE = /[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u202a-\u202e\u2066-\u2069]/g;

function visible(c: string): string {
  const n = c.codePointAt(0)!;
  return n <= 0xff ? `\\x${n.toString(16).padStart(2, "0")}` : `\\u${n.toString(16).padStart(4, "0")}`;
}

export function terminalSafe(text: string, mode: TerminalSafeMode = "log"): string {
  return text.replace(UNSAFE, (c, at: number, s: string) => {
    if (c === "\n" || c === "\t") return c;
    if (c === "\r" && (mode === "interactive" || s[at + 1] === "\n")) return c;
    if (c === "\b" && mode === "interactive") return c;
    return visible(c);
  });
}

export * from "./frame.js";
export * from "./messages.js";
export * from "./codec.js";
export * from "./message-stream.js";
export * from "./setup-digest.js";

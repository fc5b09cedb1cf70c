// Run by last-resort.test.ts as its own process: installs cvmd's last-resort handlers, then fails the way argv says.
import { createLogger } from "../../logger.js";
import { installLastResortHandlers } from "../last-resort.js";

installLastResortHandlers(createLogger("info", "cvmd"));
const how = process.argv[2];
if (how === "rejection") void Promise.reject(new Error("boom: nobody awaited this"));
else if (how === "exception") setTimeout(() => {
  throw new Error("boom: thrown from a timer");
}, 1);
else if (how === "none") setTimeout(() => undefined, 1);

#!/usr/bin/env node
/** Entry point of cvm-verify; everything else is in main.ts so tests can call it in-process. */
import { main } from "./main.js";

process.exitCode = await main(process.argv.slice(2), { env: process.env });

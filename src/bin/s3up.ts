#!/usr/bin/env node
import { runCli } from '../cli/index.js';

runCli(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`s3up: ${(err as Error).message ?? String(err)}\n`);
    process.exit(1);
  },
);

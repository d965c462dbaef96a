#!/usr/bin/env node
// Runs the test suite with Node's test runner (TypeScript through tsx).
// `npm test` runs everything; `npm test -- test/config.test.ts` runs one file.
import { spawn } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));

function collect(dir) {
  const out = [];
  for (const name of readdirSync(dir)) {
    const full = path.join(dir, name);
    if (statSync(full).isDirectory()) out.push(...collect(full));
    else if (name.endsWith('.test.ts')) out.push(path.relative(root, full));
  }
  return out.sort();
}

if (process.env.CI && !process.env.S3UP_TEST_PG_URL) {
  console.error('test/run: CI is set but S3UP_TEST_PG_URL is not: the PostgreSQL tests cannot run. .ci/run sets it up.');
  process.exit(1);
}

const args = process.argv.slice(2);
const files = args.length > 0 ? args : collect(path.join(root, 'test'));
const child = spawn(process.execPath, ['--import', 'tsx', '--test', '--test-concurrency=2', '--test-timeout=300000', '--test-reporter=spec', ...files], {
  cwd: root,
  stdio: 'inherit',
  env: { ...process.env, NODE_ENV: 'test' },
});
child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));

// `npm start` is what an operator (or a process supervisor) runs: a signal to
// its PID must reach the gateway, which shuts down and frees its port. Runs
// the real npm script (prestart build included), in a process group of its own.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { cleanEnv, REPO_ROOT } from './helpers/bin.js';
import { which } from './helpers/tools.js';

const NPM = which('npm');

interface NpmStart {
  proc: ChildProcess;
  url: Promise<string>;
  /** npm's own exit (a gateway that outlives npm keeps the pipes, so not 'close'). */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Every process holding the output pipes is gone. */
  closed: Promise<void>;
  output(): string;
}

/** `npm start` as an operator runs it; `skipBuild`: without the prestart build (`--ignore-scripts` skips pre/post scripts only). */
function npmStart(dir: string, opts: { skipBuild?: boolean } = {}): NpmStart {
  assert.ok(NPM, 'npm is on PATH wherever Node.js is installed');
  const proc = spawn(NPM, ['start', '--silent', ...(opts.skipBuild ? ['--ignore-scripts'] : []), '--', '--port', '0'], {
    cwd: REPO_ROOT,
    // A process group of its own: the Ctrl-C case signals the group, as a terminal does.
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: cleanEnv({
      FS_ROOT: path.join(dir, 'uploads'),
      DATABASE_URL: `sqlite:${path.join(dir, 's3up.db')}`,
      S3UP_DATA_DIR: dir,
      FEATURE_FLAGS_CONFIG_PATH: path.join(dir, 'flags.json'),
    }),
  });
  let out = '';
  proc.stdout?.setEncoding('utf8');
  proc.stderr?.setEncoding('utf8');
  proc.stderr?.on('data', (d: string) => {
    out += d;
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  const closed = new Promise<void>((resolve) => proc.on('close', () => resolve()));
  const url = new Promise<string>((resolve, reject) => {
    proc.stdout?.on('data', (d: string) => {
      out += d;
      const m = /"url":"(http:\/\/[^"]+)"[^\n]*"msg":"s3up-server listening"/.exec(out);
      if (m?.[1]) resolve(m[1]);
    });
    void exited.then(({ code, signal }) => reject(new Error(`npm start exited (${code ?? signal}) before listening:\n${out}`)));
  });
  url.catch(() => {});
  return { proc, url, exited, closed, output: () => out };
}

function portOpen(url: string): Promise<boolean> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const s = net.connect({ host: hostname, port: Number(port) });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** Whatever a failed case leaves behind (a re-parented gateway) is killed with its group. */
function killGroup(p: NpmStart): void {
  try {
    if (p.proc.pid) process.kill(-p.proc.pid, 'SIGKILL');
  } catch {
    // the group is gone
  }
}

describe('npm start and signals', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 's3up-npm-start-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('SIGTERM to the PID of `npm start` stops the gateway: it exits cleanly and its port is closed', async () => {
    const p = npmStart(dir);
    try {
      const url = await p.url;
      assert.equal(await portOpen(url), true);
      assert.ok(p.proc.pid);
      process.kill(p.proc.pid, 'SIGTERM');
      const res = await p.exited;
      assert.equal(await portOpen(url), false, 'the gateway must not outlive npm (re-parented to PID 1)');
      await p.closed;
      assert.equal(res.code, 0, p.output());
      assert.match(p.output(), /"signal":"SIGTERM"[^\n]*"msg":"shutting down/);
    } finally {
      killGroup(p);
    }
  });

  it('Ctrl-C (SIGINT to the process group, which npm forwards again) is one graceful shutdown', async () => {
    // The case above built dist/ already (run alone, this one builds it).
    const p = npmStart(dir, { skipBuild: existsSync(path.join(REPO_ROOT, 'dist', 'src', 'bin', 's3up-server.js')) });
    try {
      const url = await p.url;
      assert.ok(p.proc.pid);
      process.kill(-p.proc.pid, 'SIGINT');
      const res = await p.exited;
      assert.equal(await portOpen(url), false);
      await p.closed;
      assert.equal(res.code, 0, p.output());
      assert.doesNotMatch(p.output(), /again, exiting now/);
    } finally {
      killGroup(p);
    }
  });
});

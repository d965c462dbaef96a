import { type ChildProcess, spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CONFIG_ENV_VARS } from '../../src/config/load.js';

/** The repository root and the gateway's bin, run from source through tsx. */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const SERVER_BIN = path.join(REPO_ROOT, 'src', 'bin', 's3up-server.ts');
/** Absolute, so the bin can run with any cwd (a temp dir has no node_modules). */
const TSX_LOADER = import.meta.resolve('tsx');

export function cleanEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  // Tests start from none of the variables that change what the gateway does.
  for (const k of CONFIG_ENV_VARS) delete env[k];
  return { ...env, ...extra };
}

export interface BinProcess {
  proc: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** Resolves with the URL of the "s3up-server listening" log line. */
  listening: Promise<string>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGTERM (if still running) and wait for the exit. */
  stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Spawn `node --import tsx src/bin/s3up-server.ts ...args` as a real process. */
export function spawnBin(args: string[], opts: { cwd: string; env?: NodeJS.ProcessEnv; timeoutMs?: number }): BinProcess {
  const proc = spawn(process.execPath, ['--import', TSX_LOADER, SERVER_BIN, ...args], {
    cwd: opts.cwd,
    env: cleanEnv(opts.env),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  proc.stdout?.setEncoding('utf8');
  proc.stderr?.setEncoding('utf8');
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    // 'close' comes after the exit and after stdout/stderr are drained.
    proc.on('close', (code, signal) => resolve({ code, signal }));
  });
  const listening = new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`s3up-server did not start in time\nstdout: ${out}\nstderr: ${err}`)), opts.timeoutMs ?? 20_000);
    proc.stdout?.on('data', (d: string) => {
      out += d;
      for (const line of out.split('\n')) {
        if (!line.startsWith('{')) continue;
        try {
          const rec = JSON.parse(line) as { msg?: string; url?: string };
          if (rec.msg === 's3up-server listening' && rec.url) {
            clearTimeout(timer);
            resolve(rec.url);
          }
        } catch {
          // a partial line: wait for more
        }
      }
    });
    proc.stderr?.on('data', (d: string) => {
      err += d;
    });
    void exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`s3up-server exited (${code ?? signal}) before listening\nstdout: ${out}\nstderr: ${err}`));
    });
  });
  // Callers that only want the exit status must not see an unhandled rejection.
  listening.catch(() => {});
  return {
    proc,
    stdout: () => out,
    stderr: () => err,
    listening,
    exited,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      return exited;
    },
  };
}

/** Run the bin to completion and collect its output. */
export async function runBin(
  args: string[],
  opts: { cwd: string; env?: NodeJS.ProcessEnv },
): Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }> {
  const p = spawnBin(args, opts);
  const res = await p.exited;
  return { ...res, stdout: p.stdout(), stderr: p.stderr() };
}

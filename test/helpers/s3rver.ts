import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';

export interface S3rverProcess {
  endpoint: string;
  port: number;
  bucket: string;
  accessKeyId: string;
  secretAccessKey: string;
  dir: string;
  /** The running process (replaced by `restart`). */
  proc: ChildProcess;
  /** A real fault: SIGKILL the store process (nothing of it is left listening). */
  kill(): Promise<void>;
  /** Start the store again on the same port and folder (what it held is still there). */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

const require = createRequire(import.meta.url);

function launch(dir: string, port: number, bucket: string): Promise<{ proc: ChildProcess; port: number }> {
  const bin = path.join(path.dirname(require.resolve('s3rver/package.json')), 'bin', 's3rver.js');
  const proc = spawn(process.execPath, [bin, '-d', dir, '-a', '127.0.0.1', '-p', String(port), '--silent', '--configure-bucket', bucket], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return new Promise<{ proc: ChildProcess; port: number }>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`s3rver did not start: ${out}`)), 15_000);
    proc.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /listening on [^:]+:(\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        proc.removeAllListeners('exit');
        resolve({ proc, port: Number(m[1]) });
      }
    });
    proc.stderr?.on('data', (d: Buffer) => {
      out += d.toString();
    });
    proc.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`s3rver exited with ${code}: ${out}`));
    });
  });
}

function exit(proc: ChildProcess, signal: NodeJS.Signals): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve();
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  proc.kill(signal);
  return exited;
}

/** Start a real s3rver process on an ephemeral port with one bucket. */
export async function startS3rver(bucket = 's3up-test'): Promise<S3rverProcess> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 's3rver-'));
  const first = await launch(dir, 0, bucket);
  const s: S3rverProcess = {
    endpoint: `http://127.0.0.1:${first.port}`,
    port: first.port,
    bucket,
    accessKeyId: 'S3RVER',
    secretAccessKey: 'S3RVER',
    dir,
    proc: first.proc,
    async kill() {
      await exit(s.proc, 'SIGKILL');
    },
    async restart() {
      await exit(s.proc, 'SIGKILL');
      s.proc = (await launch(dir, s.port, bucket)).proc;
    },
    async stop() {
      await exit(s.proc, 'SIGTERM');
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return s;
}

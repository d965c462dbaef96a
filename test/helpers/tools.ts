import { execFileSync } from 'node:child_process';
import { accessSync, constants, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/**
 * Outside tools the tests drive (curl, rclone, the AWS CLI, openssl, mount).
 * On a developer machine without one, its tests are skipped with a reason that
 * says how to install it; under `CI` they never skip: a missing tool fails the
 * test with that same message (.ci/run installs every one of them).
 */
export interface Tool {
  /** Absolute path of the program, or null when it is not installed. */
  path: string | null;
  /** A `skip` option for node:test: the reason outside CI, `false` when it runs. */
  skip: string | false;
  /** The program's path; throws (fails the test) when it is missing. */
  require(): string;
}

/** `PATH` lookup of an executable, like `command -v`. */
export function which(name: string, searchPath = process.env.PATH ?? ''): string | null {
  for (const dir of searchPath.split(path.delimiter)) {
    if (!dir) continue;
    const full = path.join(dir, name);
    try {
      accessSync(full, constants.X_OK);
      return full;
    } catch {
      // not here
    }
  }
  return null;
}

/**
 * `candidates` are tried in order (absolute paths first when the one on PATH
 * may be the wrong program, e.g. a pyenv aws-cli 1.x shim before Debian's
 * /usr/bin/aws), then `name` on PATH.
 */
export function tool(name: string, debianPackage: string, candidates: string[] = [], env: NodeJS.ProcessEnv = process.env): Tool {
  let found: string | null = null;
  for (const c of candidates) {
    try {
      accessSync(c, constants.X_OK);
      found = c;
      break;
    } catch {
      // try the next
    }
  }
  found ??= which(name, env.PATH ?? '');
  const reason = `${name} not installed: apt-get install ${debianPackage} (runs under CI)`;
  const inCi = Boolean(env.CI);
  return {
    path: found,
    skip: found || inCi ? false : reason,
    require() {
      if (found) return found;
      throw new Error(inCi ? `CI is set but ${reason.replace(' (runs under CI)', '')}: .ci/run installs it` : reason);
    },
  };
}

export const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;

/**
 * Fault injections that mount a tmpfs need root: skipped with this reason on a
 * developer machine, required under CI (which runs as root).
 */
export const rootSkip: string | false = isRoot || process.env.CI ? false : 'needs root to mount a small tmpfs (runs under CI, as root)';

/** Throws under CI when not root, so a fault injection can never silently not run there. */
export function requireRoot(): void {
  if (!isRoot) throw new Error('CI is set but the tests do not run as root: the tmpfs fault injections cannot run');
}

export const curl = (): Tool => tool('curl', 'curl');
export const rclone = (): Tool => tool('rclone', 'rclone');
/** Debian's AWS CLI v2; the `aws` first on PATH may be a pyenv aws-cli 1.x shim. */
export const awsCli = (): Tool => tool('aws', 'awscli', ['/usr/bin/aws']);
export const openssl = (): Tool => tool('openssl', 'openssl');

/** Mount a tmpfs of `size` (e.g. "8m") on a fresh folder and return the folder (root only: see requireRoot). */
export function mountTmpfs(size: string): string {
  const mnt = mkdtempSync(path.join(os.tmpdir(), 's3up-tmpfs-'));
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', mnt]);
  return mnt;
}

/** Unmount a folder from mountTmpfs and remove it. */
export function unmountTmpfs(mnt: string): void {
  execFileSync('umount', ['-l', mnt]);
  rmSync(mnt, { recursive: true, force: true });
}

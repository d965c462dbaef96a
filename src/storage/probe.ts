import { randomUUID } from 'node:crypto';
import { open, unlink } from 'node:fs/promises';
import path from 'node:path';

/**
 * Prove a folder takes a durable write (readiness checks): create a probe
 * file, write and fsync it, and always close and remove it, also when the
 * write fails (a full disk), so a failing check leaks no file handle and
 * leaves no file behind.
 */
export async function probeWritable(dir: string, prefix: string): Promise<void> {
  const file = path.join(dir, `${prefix}${randomUUID()}`);
  const fh = await open(file, 'wx', 0o600);
  try {
    await fh.writeFile('ok');
    await fh.sync();
  } finally {
    await fh.close().catch(() => {});
    await unlink(file).catch(() => {});
  }
}

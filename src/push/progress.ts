import cliProgress from 'cli-progress';
import { formatBytes, formatDuration } from '../format.js';
import type { PushEvent, PushStats } from './engine.js';

export { formatBytes, formatDuration };

import type { SessionRow } from './state.js';

/** 1234567 -> "1,234,567" (toLocaleString would load ICU on first use: 100+ ms). */
const n = (x: number) => String(Math.round(x)).replace(/\B(?=(\d{3})+(?!\d))/g, ',');

/** Speed over the last few samples (bytes/s), so the figure follows what happens now. */
class Speed {
  private samples: Array<[number, number]> = [];
  sample(bytes: number, at = Date.now()): number {
    this.samples.push([at, bytes]);
    while (this.samples.length > 2 && at - (this.samples[0] as [number, number])[0] > 10_000) this.samples.shift();
    const [t0, b0] = this.samples[0] as [number, number];
    return at > t0 ? ((bytes - b0) * 1000) / (at - t0) : 0;
  }
}

export interface Reporter {
  event(e: PushEvent): void;
  /** Stop the live display (before the summary or a message). */
  stop(): void;
  /** A line for the person (on stderr), or an event in --json mode. */
  note(text: string, extra?: Record<string, unknown>): void;
}

export type ProgressMode = 'tty' | 'lines' | 'json' | 'quiet';

function line(stats: PushStats, speed: number): string {
  const done = stats.uploaded + stats.failed;
  const left = Math.max(0, stats.toUploadBytes - stats.bytesSent);
  const eta = speed > 0 && stats.scanDone ? ` | ETA ${formatDuration((left / speed) * 1000)}` : '';
  const total = stats.scanDone ? n(stats.toUpload) : `${n(stats.toUpload)}+ (scanning, ${n(stats.found)} found)`;
  return `${n(done)} of ${total} files | ${formatBytes(stats.bytesSent)} of ${formatBytes(stats.toUploadBytes)} | ${formatBytes(speed)}/s${eta} | ${n(stats.skipped)} skipped | ${n(stats.failed)} failed`;
}

/**
 * The live display: a cli-progress bar redrawn at most twice a second on a
 * TTY, a line every few seconds otherwise, JSON events with --json.
 */
export function createReporter(
  mode: ProgressMode,
  stats: PushStats,
  io: { stdout: NodeJS.WritableStream; stderr: NodeJS.WritableStream },
  intervalSeconds: number,
): Reporter {
  const speed = new Speed();
  if (mode === 'json') {
    const write = (o: Record<string, unknown>) => io.stdout.write(`${JSON.stringify({ ts: new Date().toISOString(), ...o })}\n`);
    const timer = setInterval(() => {
      const s = speed.sample(stats.bytesSent);
      write({
        event: 'progress',
        found: stats.found,
        scan_done: stats.scanDone,
        to_upload: stats.toUpload,
        uploaded: stats.uploaded,
        skipped: stats.skipped,
        failed: stats.failed,
        bytes_sent: stats.bytesSent,
        bytes_to_send: stats.toUploadBytes,
        bytes_per_sec: Math.round(s),
      });
    }, intervalSeconds * 1000);
    timer.unref();
    return {
      event: (e) => write(e as unknown as Record<string, unknown>),
      stop: () => clearInterval(timer),
      note: (text, extra) => write({ event: 'message', message: text, ...extra }),
    };
  }
  if (mode === 'quiet') return { event: () => {}, stop: () => {}, note: (t) => io.stderr.write(`${t}\n`) };
  if (mode === 'lines') {
    const timer = setInterval(() => io.stderr.write(`${line(stats, speed.sample(stats.bytesSent))}\n`), intervalSeconds * 1000);
    timer.unref();
    return {
      event: (e) => {
        if (e.event === 'file' && e.status === 'failed')
          io.stderr.write(`failed: ${e.path}: ${e.error?.code ?? ''} ${e.error?.message ?? ''} (${e.verdict})\n`);
        if (e.event === 'warning') io.stderr.write(`warning: ${e.path}: ${e.message}\n`);
      },
      stop: () => clearInterval(timer),
      note: (t) => io.stderr.write(`${t}\n`),
    };
  }
  const bar = new cliProgress.SingleBar(
    {
      format: '{bar} {percentage}% | {files} | {bytes} | {speed}/s | ETA {eta_h} | {failed} failed | {current}',
      fps: 2,
      hideCursor: true,
      stream: io.stderr as NodeJS.WriteStream,
      barsize: 24,
      clearOnComplete: false,
      etaBuffer: 50,
    },
    cliProgress.Presets.shades_classic,
  );
  let started = false;
  const payload = () => {
    const s = speed.sample(stats.bytesSent);
    const left = Math.max(0, stats.toUploadBytes - stats.bytesSent);
    const cur = [...stats.current].slice(0, 2).join(', ');
    return {
      files: `${n(stats.uploaded + stats.failed)}/${n(stats.toUpload)}${stats.scanDone ? '' : '+'} files (${n(stats.skipped)} skipped)`,
      bytes: `${formatBytes(stats.bytesSent)}/${formatBytes(stats.toUploadBytes)}`,
      speed: formatBytes(s),
      eta_h: s > 0 && stats.scanDone ? formatDuration((left / s) * 1000) : '-',
      failed: n(stats.failed),
      current: cur.length > 40 ? `${cur.slice(0, 37)}...` : cur,
    };
  };
  const timer = setInterval(() => {
    if (!started) {
      bar.start(Math.max(1, stats.toUploadBytes), stats.bytesSent, payload());
      started = true;
    }
    bar.setTotal(Math.max(1, stats.toUploadBytes));
    bar.update(Math.min(stats.bytesSent, Math.max(1, stats.toUploadBytes)), payload());
  }, 500);
  timer.unref();
  const failures: string[] = [];
  return {
    event: (e) => {
      if (e.event === 'file' && e.status === 'failed' && failures.length < 5)
        failures.push(`failed: ${e.path}: ${e.error?.code ?? ''} ${e.error?.message ?? ''}`);
    },
    stop: () => {
      clearInterval(timer);
      if (started) bar.stop();
      for (const f of failures) io.stderr.write(`${f}\n`);
      failures.length = 0;
    },
    note: (t) => io.stderr.write(`${t}\n`),
  };
}

/** The end summary: counts, bytes, duration, average speed, where the failures are. */
export function summaryText(
  s: SessionRow,
  project: string,
  elapsedMs: number,
  failures: Array<{ rel_path: string; error_code: string | null; error_message: string | null }>,
): string {
  const bytes = Number(s.bytes_uploaded);
  const speed = elapsedMs > 0 ? (bytes * 1000) / elapsedMs : 0;
  const lines = [
    `session ${s.session_id} (${project}) ${s.status}`,
    `  files: ${n(Number(s.total_files))} found, ${n(Number(s.files_uploaded))} uploaded, ${n(Number(s.files_skipped))} skipped, ${n(Number(s.files_failed))} failed`,
    `  bytes: ${formatBytes(bytes)} uploaded in ${formatDuration(elapsedMs)} (${formatBytes(speed)}/s)`,
    `  target: ${s.target}`,
  ];
  if (Number(s.files_failed) > 0) {
    lines.push(`  failures (first ${failures.length}):`);
    for (const f of failures) lines.push(`    ${f.rel_path}: ${f.error_code ?? ''} ${f.error_message ?? ''}`);
    lines.push(`  all failures: s3up sessions show ${s.session_id}; retry them: s3up retry ${s.session_id} --auto`);
  }
  return lines.join('\n');
}

import Uppy, { type UppyFile } from '@uppy/core';
import GoldenRetriever from '@uppy/golden-retriever';
import Tus from '@uppy/tus';
import type { TokenInfo } from './token.js';

export type Meta = { path: string; name: string; type: string };
export type Body = Record<string, never>;
export type File = UppyFile<Meta, Body>;

export interface FileView {
  id: string;
  name: string;
  path: string;
  size: number | null;
  uploaded: number;
  percent: number;
  /** Bytes per second, smoothed. */
  speed: number;
  status: 'waiting' | 'uploading' | 'paused' | 'done' | 'error' | 'offline' | 'missing';
  error: string | null;
}

/** Keep retrying (tus resumes from the server's offset) for a few minutes, then show Retry. */
const RETRY_DELAYS = [0, 1000, 3000, 5000, 10000, 15000, 20000, 30000, 30000, 60000];

/**
 * The uploader: Uppy core + tus + Golden Retriever over the gateway's /tus
 * endpoint, with the page's own drop zone and list. Each file goes to
 * `{token prefix}/{file name}`. A finished upload's fingerprint is removed
 * (removeFingerprintOnSuccess): tus clients otherwise remember a finished file
 * and would "resume" the same file to a new path by a mere HEAD, storing nothing.
 */
export function createUploader(info: TokenInfo, endpoint: string, onChange: () => void) {
  const started = new Map<string, number>();
  const speed = new Map<string, { t: number; bytes: number; bps: number }>();
  const notes = new Map<string, string>();
  // Restore window: what Golden Retriever keeps, no longer than the token lives
  // (a restored upload needs a valid token to continue).
  const restoreMs = Math.max(0, Math.min(24 * 3600 * 1000, info.expiresAt - Date.now()));

  const uppy = new Uppy<Meta, Body>({
    id: `s3up-${info.client}`,
    autoProceed: true,
    allowMultipleUploadBatches: true,
    restrictions: { maxFileSize: info.maxSize },
    onBeforeFileAdded: (file) => {
      const path = info.prefix ? `${info.prefix}/${file.name}` : (file.name ?? 'file');
      return { ...file, meta: { ...file.meta, path } };
    },
  });
  uppy.use(Tus, {
    endpoint,
    headers: { authorization: `Bearer ${info.token}` },
    removeFingerprintOnSuccess: true,
    retryDelays: RETRY_DELAYS,
    chunkSize: 1024 * 1024,
    limit: 3,
    allowedMetaFields: ['path', 'name', 'type'],
  });
  uppy.on('restored', () => {
    const files = uppy.getFiles();
    for (const f of files) if (f.isGhost) notes.set(f.id, 'choose this file again to resume it');
    // Continue by itself when the blobs came back (files up to 10 MiB are kept in IndexedDB).
    if (files.some((f) => !f.isGhost && !f.progress.uploadComplete)) uppy.emit('restore-confirmed');
    onChange();
  });
  uppy.use(GoldenRetriever, { serviceWorker: false, expires: restoreMs });

  uppy.on('upload-progress', (file, progress) => {
    if (!file) return;
    const now = performance.now();
    if (!started.has(file.id)) started.set(file.id, Date.now());
    const prev = speed.get(file.id);
    const bytes = progress.bytesUploaded;
    if (prev && now > prev.t) {
      const inst = ((bytes - prev.bytes) * 1000) / (now - prev.t);
      speed.set(file.id, { t: now, bytes, bps: prev.bps === 0 ? inst : prev.bps * 0.7 + inst * 0.3 });
    } else speed.set(file.id, { t: now, bytes, bps: prev?.bps ?? 0 });
    onChange();
  });
  uppy.on('upload-success', (file) => {
    if (!file) return;
    notes.delete(file.id);
    const t0 = started.get(file.id) ?? Date.now();
    // Spec 000: tell the gateway the upload completed (it checks what is stored at the key).
    void fetch(new URL('/telemetry', endpoint), {
      method: 'POST',
      headers: { authorization: `Bearer ${info.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ event: 'upload_complete', key: file.meta.path, size: file.size, durationMs: Date.now() - t0 }),
    }).catch(() => undefined);
    onChange();
  });
  for (const ev of [
    'upload-error',
    'upload-pause',
    'file-added',
    'file-removed',
    'upload-retry',
    'complete',
    'is-offline',
    'is-online',
    'restriction-failed',
  ] as const) {
    uppy.on(ev, () => onChange());
  }
  // Back online: files that gave up while offline start again (tus resumes from the server's offset).
  const onOnline = () => {
    if (uppy.getFiles().some((f) => f.error)) void uppy.retryAll();
  };
  window.addEventListener('online', onOnline);

  const view = (): FileView[] =>
    uppy.getFiles().map((f) => {
      const total = f.size ?? f.progress.bytesTotal ?? null;
      const uploaded = f.progress.bytesUploaded || 0;
      const done = f.progress.uploadComplete === true;
      let status: FileView['status'] = 'waiting';
      if (done) status = 'done';
      else if (f.isGhost) status = 'missing';
      else if (f.error) status = navigator.onLine ? 'error' : 'offline';
      else if (f.isPaused) status = 'paused';
      else if (!navigator.onLine && f.progress.uploadStarted) status = 'offline';
      else if (f.progress.uploadStarted) status = 'uploading';
      return {
        id: f.id,
        name: f.name ?? f.id,
        path: f.meta.path,
        size: total,
        uploaded,
        percent: done ? 100 : (f.progress.percentage ?? 0),
        speed: status === 'uploading' ? (speed.get(f.id)?.bps ?? 0) : 0,
        status,
        error: f.error ? String(f.error) : (notes.get(f.id) ?? null),
      };
    });

  return {
    uppy,
    view,
    add(files: FileList | globalThis.File[]) {
      for (const file of Array.from(files)) {
        try {
          uppy.addFile({ name: file.name, type: file.type, data: file, source: 'Local' });
        } catch {
          // Restrictions (too large, duplicate) are reported through 'restriction-failed' / uppy.info.
        }
      }
      onChange();
    },
    pauseResume: (id: string) => {
      uppy.pauseResume(id);
      onChange();
    },
    retry: (id: string) => void uppy.retryUpload(id),
    remove: (id: string) => uppy.removeFile(id),
    destroy: () => {
      window.removeEventListener('online', onOnline);
      uppy.destroy();
    },
  };
}

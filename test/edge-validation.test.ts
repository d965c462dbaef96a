import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { multipart, request } from './helpers/http.js';
import { pgSkip } from './helpers/pg.js';
import { ADMIN_TOKEN, type DbKind, startTestServer, type TestServer } from './helpers/server.js';

interface Probe {
  name: string;
  method: string;
  url: string;
  headers?: Record<string, string>;
  body?: Buffer | string;
  /** Status the refusal must have (any 4xx when unset). */
  status?: number;
}

const NUL = '\u0000';
const json = (v: unknown) => ({ headers: { 'content-type': 'application/json' }, body: JSON.stringify(v) });

/**
 * Hostile input at the edge: NUL and control characters in every text field a
 * client can send (ids, keys, filters, report fields, content types, form
 * filenames), numbers out of range, a multipart body whose boundary does not
 * match its header, oversized telemetry extras. Every such request answers 4xx
 * with the error contract, never 500, on SQLite and PostgreSQL alike.
 */
for (const db of ['sqlite', 'postgres'] as DbKind[]) {
  describe(`hostile input is refused at the edge (${db})`, { skip: db === 'postgres' ? pgSkip : false }, () => {
    let t: TestServer;
    let fileId = '';
    before(async () => {
      t = await startTestServer({ db });
      const init = await fetch(`${t.url}/upload/chunked/init`, {
        method: 'POST',
        headers: { ...t.auth('alice'), 'content-type': 'application/json' },
        body: JSON.stringify({ path: 'edge/c.bin', file_size: 10 }),
      });
      fileId = ((await init.json()) as { file_id: string }).file_id;
    });
    after(async () => t?.stop());

    function probes(): Probe[] {
      const e = encodeURIComponent;
      const form = multipart([
        { name: 'path', value: 'edge/f.bin' },
        { name: 'file', filename: `a${NUL}b.bin`, data: Buffer.from('hello') },
      ]);
      const wrongBoundary = multipart([
        { name: 'path', value: 'edge/w.bin' },
        { name: 'file', filename: 'w.bin', data: Buffer.from('hello') },
      ]);
      const wrongHeader = `multipart/form-data; boundary=----not-the-one-${randomBytes(4).toString('hex')}`;
      return [
        { name: 'run id with NUL', method: 'GET', url: `/runs/v1/${e(`r${NUL}x`)}` },
        { name: 'run id with a control character', method: 'GET', url: `/runs/v1/${e('r\u0001x')}` },
        { name: 'runs client filter with NUL (admin)', method: 'GET', url: `/runs/v1?client=${e(`a${NUL}`)}`, headers: { 'x-admin-token': ADMIN_TOKEN } },
        { name: 'runs created_from out of range', method: 'GET', url: '/runs/v1?created_from=9999999999999999' },
        { name: 'chunk status, file id with NUL', method: 'GET', url: `/upload/chunked/${e(`f${NUL}`)}/status` },
        { name: 'chunk complete, file id with NUL', method: 'POST', url: `/upload/chunked/${e(`f${NUL}`)}/complete` },
        { name: 'chunk abort, file id with NUL', method: 'DELETE', url: `/upload/chunked/${e(`f${NUL}`)}` },
        {
          name: 'chunk upload, file id with NUL',
          method: 'POST',
          url: `/upload/chunked/${e(`f${NUL}`)}/chunk?chunk_number=1`,
          headers: { 'content-type': 'application/octet-stream' },
          body: Buffer.alloc(10),
        },
        { name: 'tus HEAD, id with NUL', method: 'HEAD', url: `/tus/${e(`u${NUL}`)}`, headers: { 'tus-resumable': '1.0.0' } },
        { name: 'tus DELETE, id with NUL', method: 'DELETE', url: `/tus/${e(`u${NUL}`)}`, headers: { 'tus-resumable': '1.0.0' } },
        { name: 'telemetry key with NUL', method: 'POST', url: '/telemetry', ...json({ event: 'progress', key: `backups/alice/x${NUL}` }) },
        {
          name: 'telemetry upload_complete key with NUL',
          method: 'POST',
          url: '/telemetry',
          ...json({ event: 'upload_complete', key: `backups/alice/x${NUL}` }),
        },
        { name: 'telemetry extras over 4 KiB', method: 'POST', url: '/telemetry', ...json({ event: 'progress', note: 'x'.repeat(5000) }), status: 400 },
        { name: 'telemetry event filter with NUL', method: 'GET', url: `/telemetry?event=${e(`e${NUL}`)}` },
        { name: 'telemetry before out of range', method: 'GET', url: '/telemetry?before=100000000000000000000' },
        { name: 'telemetry before negative huge', method: 'GET', url: '/telemetry?before=-100000000000000000000' },
        {
          name: 'report host with NUL',
          method: 'POST',
          url: '/reports',
          ...json({ date: '2026-12-01', files_uploaded: 1, bytes: 1, failures: 0, queue_depth: 0, host: `h${NUL}` }),
        },
        {
          name: 'report agent_version with NUL',
          method: 'POST',
          url: '/reports',
          ...json({ date: '2026-12-01', files_uploaded: 1, bytes: 1, failures: 0, queue_depth: 0, agent_version: `1${NUL}` }),
        },
        {
          name: 'chunked content_type with NUL',
          method: 'POST',
          url: '/upload/chunked/init',
          ...json({ path: 'edge/ct.bin', file_size: 1, content_type: `text/plain${NUL}` }),
        },
        {
          name: 'upload-url content_type with NUL',
          method: 'POST',
          url: '/runs/upload-url',
          ...json({ path: 'edge/u.bin', size: 1, content_type: `a/b${NUL}` }),
        },
        { name: 'upload-url runId with NUL', method: 'POST', url: '/runs/upload-url', ...json({ runId: `r${NUL}` }) },
        { name: 'multipart filename with NUL', method: 'POST', url: '/upload', headers: { 'content-type': form.contentType }, body: form.body },
        {
          name: 'multipart boundary not matching its header',
          method: 'POST',
          url: '/upload',
          headers: { 'content-type': wrongHeader },
          body: wrongBoundary.body,
        },
        {
          name: 'direct form, boundary not matching its header',
          method: 'POST',
          url: '/runs/upload',
          headers: { 'content-type': wrongHeader },
          body: wrongBoundary.body,
        },
        {
          name: 'multipart chunk, boundary not matching its header',
          method: 'POST',
          url: `/upload/chunked/${fileId}/chunk`,
          headers: { 'content-type': wrongHeader },
          body: wrongBoundary.body,
        },
        { name: 'prune max_runs out of range', method: 'POST', url: '/runs/v1/prune?max_runs=100000000000000000000' },
        { name: 'prune max_age_days out of range', method: 'POST', url: '/runs/v1/prune?max_age_days=1e300' },
        { name: 'exists, path with NUL', method: 'GET', url: `/exists?path=${e(`a${NUL}`)}` },
      ];
    }

    it('every probe answers 4xx with {error_code, message, request_id}', async () => {
      const wrong: string[] = [];
      for (const p of probes()) {
        const headers = { ...(p.headers?.['x-admin-token'] ? {} : t.auth('alice')), ...(p.headers ?? {}) };
        const body = typeof p.body === 'string' ? Buffer.from(p.body) : p.body;
        const res = await request(`${t.url}${p.url}`, { method: p.method, headers, ...(body ? { body } : {}) });
        const ok = p.status === undefined ? res.status >= 400 && res.status < 500 : res.status === p.status;
        if (!ok) {
          wrong.push(`${p.name}: ${res.status} ${res.body.toString('utf8').slice(0, 200)}`);
          continue;
        }
        // tus answers its own protocol's refusals as text (tus-js-client reads the status).
        if (p.method === 'HEAD' || p.url.startsWith('/tus/') || res.body.length === 0) continue;
        const b = res.json<{ error_code?: unknown; message?: unknown; request_id?: unknown }>();
        if (typeof b.error_code !== 'string' || typeof b.message !== 'string' || typeof b.request_id !== 'string') {
          wrong.push(`${p.name}: ${res.status} without the error contract: ${res.body.toString('utf8').slice(0, 200)}`);
        }
      }
      assert.deepEqual(wrong, []);
    });

    it('telemetry stays readable after hostile events, and past a row stored cut by an older gateway (GET /telemetry is 200)', async () => {
      await t.server.ctx.db.db
        .insertInto('telemetry_events')
        .values({
          event_id: 'legacy-cut-detail',
          client: 'alice',
          event: 'progress',
          key: null,
          size: null,
          duration_ms: null,
          run_id: null,
          outcome: null,
          detail: '{"note":"xxxx',
          created_at: Date.now(),
        })
        .execute();
      const res = await fetch(`${t.url}/telemetry`, { headers: t.auth('alice') });
      assert.equal(res.status, 200);
      await res.json();
    });
  });
}

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { registeredRoutes } from '../src/server/routes/observability.js';
import { ADMIN_TOKEN, startTestServer, type TestServer } from './helpers/server.js';

function metricValue(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-z0-9_:]+)(\{([^}]*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries(
      (m[3] ?? '')
        .split(',')
        .filter(Boolean)
        .map((kv) => {
          const [k, v] = kv.split('=');
          return [k, v?.replace(/^"|"$/g, '')];
        }),
    );
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(m[4]);
  }
  return undefined;
}

describe('metrics and OpenAPI', () => {
  let t: TestServer;
  before(async () => {
    t = await startTestServer({ clients: [{ name: 'alice' }] });
  });
  after(async () => {
    await t?.stop();
  });

  it('needs the admin token (header or Bearer) for /metrics', async () => {
    assert.equal((await fetch(`${t.url}/metrics`)).status, 401);
    assert.equal((await fetch(`${t.url}/metrics`, { headers: t.auth('alice') })).status, 401);
    const viaHeader = await fetch(`${t.url}/metrics`, { headers: { 'x-admin-token': ADMIN_TOKEN } });
    assert.equal(viaHeader.status, 200);
    assert.match(viaHeader.headers.get('content-type') ?? '', /^text\/plain/);
    const viaBearer = await fetch(`${t.url}/metrics`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    assert.equal(viaBearer.status, 200);
    assert.match(await viaBearer.text(), /s3up_process_resident_memory_bytes/);
  });

  it('counts uploads by client/kind/status, bytes, durations, in-flight uploads and errors by code', async () => {
    const ok = await fetch(`${t.url}/objects/m/ok.bin`, { method: 'PUT', headers: t.auth('alice'), body: Buffer.alloc(1000, 1) });
    assert.equal(ok.status, 200);
    const form = new FormData();
    form.append('path', 'm/form.bin');
    form.append('file', new Blob([Buffer.alloc(24, 2)]), 'form.bin');
    assert.equal((await fetch(`${t.url}/upload`, { method: 'POST', headers: t.auth('alice'), body: form })).status, 200);
    const bad = await fetch(`${t.url}/objects/m/bad.bin`, { method: 'PUT', headers: { ...t.auth('alice'), 'x-checksum-sha256': '0'.repeat(64) }, body: 'x' });
    assert.equal(bad.status, 400);
    assert.equal((await fetch(`${t.url}/download?path=m/missing.bin`, { headers: t.auth('alice') })).status, 404);
    assert.equal((await fetch(`${t.url}/nowhere`, { headers: t.auth('alice') })).status, 404);
    assert.equal((await fetch(`${t.url}/exists?path=x`)).status, 401);

    const text = await (await fetch(`${t.url}/metrics`, { headers: { 'x-admin-token': ADMIN_TOKEN } })).text();
    assert.equal(metricValue(text, 's3up_uploads_total', { client: 'alice', kind: 'raw', status: 'succeeded' }), 1);
    assert.equal(metricValue(text, 's3up_uploads_total', { client: 'alice', kind: 'multipart', status: 'succeeded' }), 1);
    assert.equal(metricValue(text, 's3up_uploads_total', { client: 'alice', kind: 'raw', status: 'failed' }), 1);
    assert.equal(metricValue(text, 's3up_upload_bytes_total', { client: 'alice', kind: 'raw' }), 1000);
    assert.equal(metricValue(text, 's3up_upload_bytes_total', { client: 'alice', kind: 'multipart' }), 24);
    assert.equal(metricValue(text, 's3up_upload_duration_seconds_count', { kind: 'raw', status: 'succeeded' }), 1);
    assert.equal(metricValue(text, 's3up_uploads_in_flight', { client: 'alice', kind: 'raw' }), 0);
    assert.equal(metricValue(text, 's3up_errors_total', { code: 'CHECKSUM_MISMATCH' }), 1);
    assert.equal(metricValue(text, 's3up_errors_total', { code: 'NOT_FOUND' }), 2);
    assert.equal(metricValue(text, 's3up_errors_total', { code: 'UNAUTHORIZED' }), 3);
    assert.ok((metricValue(text, 's3up_http_request_duration_seconds_count', { method: 'PUT', route: '/objects/*', status_class: '2xx' }) ?? 0) >= 1);
    assert.ok(text.includes('# TYPE s3up_sweeper_deleted_objects_total counter'));
  });

  it('the Grafana dashboard only queries metrics the gateway exports', async () => {
    const dashboard = readFileSync(new URL('../docs/grafana-dashboard.json', import.meta.url), 'utf8');
    JSON.parse(dashboard);
    const used = new Set([...dashboard.matchAll(/s3up_[a-z0-9_]+/g)].map((m) => m[0].replace(/_(bucket|count|sum)$/, '')));
    const text = await (await fetch(`${t.url}/metrics`, { headers: { 'x-admin-token': ADMIN_TOKEN } })).text();
    const exported = new Set([...text.matchAll(/^# TYPE (\S+)/gm)].map((m) => m[1]));
    assert.ok(used.size >= 10);
    for (const name of used) assert.ok(exported.has(name), `${name} is not exported`);
  });

  it('serves /openapi.json without auth, covering every registered route', async () => {
    const res = await fetch(`${t.url}/openapi.json`);
    assert.equal(res.status, 200);
    const doc = (await res.json()) as { openapi: string; paths: Record<string, Record<string, { security?: unknown[] }>> };
    assert.match(doc.openapi, /^3\./);
    const norm = (u: string) => u.replace(/:([A-Za-z0-9_]+)/g, '{$1}').replace(/\{\*\}|\*/g, '{*}');
    const documented = new Set<string>();
    for (const [p, ops] of Object.entries(doc.paths)) for (const m of Object.keys(ops)) documented.add(`${m.toUpperCase()} ${norm(p)}`);
    const routes = registeredRoutes(t.server.app);
    assert.ok(routes.length >= 15, `routes: ${routes.length}`);
    const missing = routes.map((r) => `${r.method} ${norm(r.url)}`).filter((r) => !documented.has(r));
    assert.deepEqual(missing, []);
    for (const must of [
      'GET /runs/v1',
      'GET /runs/v1/{run_id}',
      'POST /runs/v1/prune',
      'POST /reports',
      'GET /clients',
      'GET /config',
      'GET /metrics',
      'GET /openapi.json',
    ]) {
      assert.ok(documented.has(must), must);
    }
    assert.deepEqual(doc.paths['/clients']?.get?.security, [{ adminToken: [] }]);
    assert.deepEqual(doc.paths['/health']?.get?.security, []);
  });
});

// The baseline: a bare Node HTTP server that streams each PUT body into a file
// with `pipeline(req, fs.createWriteStream(...))` and nothing else (no auth, no
// hashing, no database, no temp file + rename). With --fsync the write stream
// is opened with `flush: true`, i.e. one fsync when the file is closed, as the
// gateway does before it publishes. With --publish it also follows the gateway's
// durability protocol: write to a temp file, fsync, rename into place, fsync
// the folder (concurrent renames into one folder share that fsync), so the
// cost of publishing atomically and durably can be told from the gateway's own.
//   node bench/baseline-server.mjs --port N --dir DIR [--fsync | --publish]
import { randomUUID } from 'node:crypto';
import { createWriteStream, mkdirSync } from 'node:fs';
import { open, rename } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: { port: { type: 'string' }, dir: { type: 'string' }, fsync: { type: 'boolean', default: false }, publish: { type: 'boolean', default: false } },
});
const root = path.resolve(values.dir ?? '.');
const publish = values.publish;
const flush = values.fsync || publish;
const tmpDir = path.join(root, '.tmp');
if (publish) mkdirSync(tmpDir, { recursive: true });
const made = new Set();

/** fsync a folder; callers arriving while one runs share the next (as the gateway's DirSyncer). */
const dirSyncs = new Map();
async function fsyncDir(dir) {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
function syncDir(dir) {
  let s = dirSyncs.get(dir);
  if (!s) {
    s = {};
    dirSyncs.set(dir, s);
  }
  const state = s;
  const start = () => {
    state.running = fsyncDir(dir).finally(() => {
      state.running = undefined;
    });
    return state.running;
  };
  if (state.queued) return state.queued;
  if (!state.running) return start();
  state.queued = state.running.then(() => {
    state.queued = undefined;
    return start();
  });
  return state.queued;
}

const server = http.createServer(async (req, res) => {
  if (req.method === 'GET' && req.url === '/health') {
    res.end('ok');
    return;
  }
  if (req.method !== 'PUT') {
    res.statusCode = 405;
    res.end();
    return;
  }
  // Same layout as the gateway: the URL path below the root (benchmark input only, not hardened).
  const rel = decodeURIComponent(req.url.split('?')[0]).replace(/^\/+/, '').replace(/\.\./g, '_');
  const file = path.join(root, rel);
  const dir = path.dirname(file);
  try {
    if (!made.has(dir)) {
      mkdirSync(dir, { recursive: true });
      made.add(dir);
    }
    const target = publish ? path.join(tmpDir, `${randomUUID()}.part`) : file;
    const out = createWriteStream(target, { flush });
    await pipeline(req, out);
    if (publish) {
      await rename(target, file);
      await syncDir(dir);
    }
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ success: true, size: out.bytesWritten }));
  } catch (err) {
    res.statusCode = 500;
    res.end(String(err));
  }
});
server.keepAliveTimeout = 65_000;
server.listen(Number(values.port ?? 0), '127.0.0.1');
process.on('SIGTERM', () => server.close(() => process.exit(0)));

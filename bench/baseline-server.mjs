// The baseline: a bare Node HTTP server that streams each PUT body into a file
// with `pipeline(req, fs.createWriteStream(...))` and nothing else (no auth, no
// hashing, no database, no temp file + rename). With --fsync the write stream
// is opened with `flush: true`, i.e. one fsync when the file is closed, as the
// gateway does before it publishes.
//   node bench/baseline-server.mjs --port N --dir DIR [--fsync]
import { createWriteStream, mkdirSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { port: { type: 'string' }, dir: { type: 'string' }, fsync: { type: 'boolean', default: false } } });
const root = path.resolve(values.dir ?? '.');
const flush = values.fsync;
const made = new Set();

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
    const out = createWriteStream(file, { flush });
    await pipeline(req, out);
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

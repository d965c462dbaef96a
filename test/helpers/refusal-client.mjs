// A separate process sending refused requests with Node's fetch (undici), so
// the client's writes race the gateway's answer as they do between machines
// (in one process the event loop orders them and hides lost answers).
// argv: gateway URL, JSON {key, jobs: [{kind, size}], concurrency}; prints JSON failures and the count answered.
const [url, spec] = process.argv.slice(2);
const { key, jobs, concurrency } = JSON.parse(spec);
const WRONG = 'sk_wrong_0123456789abcdef0123456789abcdef';

function form(path, size) {
  const fd = new FormData();
  fd.append('path', path);
  fd.append('file', new Blob([new Uint8Array(size).fill(7)]), 'x.bin');
  return fd;
}

function streamed(size) {
  let sent = 0;
  return new ReadableStream({
    pull(c) {
      if (sent >= size) return c.close();
      const n = Math.min(64 * 1024, size - sent);
      sent += n;
      c.enqueue(new Uint8Array(n));
    },
  });
}

const auth = (k) => ({ authorization: `Bearer ${k}` });
const send = {
  'form-bad-path': (size) => fetch(`${url}/upload`, { method: 'POST', headers: auth(key), body: form('../x', size) }),
  'form-wrong-key': (size) => fetch(`${url}/upload`, { method: 'POST', headers: auth(WRONG), body: form('ok/x.bin', size) }),
  'form-over-limit': (size) => fetch(`${url}/upload`, { method: 'POST', headers: auth(key), body: form('ok/big.bin', size) }),
  'raw-bad-path': (size) => fetch(`${url}/objects/a%5cb.bin`, { method: 'PUT', headers: auth(key), body: new Uint8Array(size) }),
  'raw-wrong-key': (size) => fetch(`${url}/objects/ok/x.bin`, { method: 'PUT', headers: auth(WRONG), body: new Uint8Array(size) }),
  'raw-streamed-over-limit': (size) => fetch(`${url}/objects/ok/s.bin`, { method: 'PUT', headers: auth(key), body: streamed(size), duplex: 'half' }),
};

const results = [];
let next = 0;
async function worker() {
  for (;;) {
    const i = next++;
    const job = jobs[i];
    if (!job) return;
    try {
      const res = await send[job.kind](job.size);
      const text = await res.text();
      let body;
      try {
        body = JSON.parse(text);
      } catch {
        body = { text };
      }
      results[i] = { status: res.status, error_code: body.error_code ?? null, request_id: body.request_id ?? null };
    } catch (err) {
      results[i] = { lost: `${String(err)} ${err?.cause?.code ?? err?.cause?.message ?? ''}` };
    }
  }
}
await Promise.all(Array.from({ length: concurrency }, worker));
process.stdout.write(JSON.stringify(results));

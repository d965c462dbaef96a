import http from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A small HTTP proxy in front of a real gateway, for fault tests: it passes
 * requests through, counts them, can stop answering uploads after N answers
 * (the gateway did the work, the client never hears: a crash right after), or
 * act as a gateway that is down (connections dropped).
 */
export interface FaultProxy {
  url: string;
  mode: 'pass' | 'down';
  /** Upload answers (PUT /objects, chunked complete) passed back before the rest are held. */
  holdAfter: number | undefined;
  uploadsAnswered: number;
  held: number;
  /** Every request, with the gateway's status once it answered (undefined: no answer reached the proxy). */
  requests: Array<{ method: string; path: string; status?: number | undefined }>;
  /** Hold every chunk request (POST /upload/chunked/.../chunk) back this long: a slow link. */
  chunkDelayMs: number;
  release(): void;
  close(): Promise<void>;
}

export async function startFaultProxy(targetUrl: string): Promise<FaultProxy> {
  const target = new URL(targetUrl);
  const heldResponses: http.ServerResponse[] = [];
  const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  const proxy: FaultProxy = {
    url: '',
    mode: 'pass',
    holdAfter: undefined,
    uploadsAnswered: 0,
    held: 0,
    requests: [],
    chunkDelayMs: 0,
    release() {
      proxy.holdAfter = undefined;
      proxy.held = 0;
      for (const r of heldResponses.splice(0)) r.socket?.destroy();
    },
    close: async () => {
      proxy.release();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
      agent.destroy();
    },
  };
  const answers = new WeakMap<http.IncomingMessage, { status?: number | undefined }>();
  const server = http.createServer((req, res) => {
    const record: { method: string; path: string; status?: number | undefined } = { method: req.method ?? '', path: req.url ?? '' };
    proxy.requests.push(record);
    answers.set(req, record);
    if (proxy.mode === 'down') {
      req.socket.destroy();
      return;
    }
    const isChunk = req.method === 'POST' && /\/upload\/chunked\/[^/]+\/chunk/.test(req.url ?? '');
    if (isChunk && proxy.chunkDelayMs > 0) setTimeout(() => forward(req, res), proxy.chunkDelayMs);
    else forward(req, res);
  });
  const forward = (req: http.IncomingMessage, res: http.ServerResponse) => {
    const upstream = http.request({ host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers, agent }, (up) => {
      const record = answers.get(req);
      if (record) record.status = up.statusCode;
      const isUpload = (req.method === 'PUT' && req.url?.startsWith('/objects/')) || /\/complete$/.test(req.url ?? '');
      if (isUpload && up.statusCode === 200) {
        if (proxy.holdAfter !== undefined && proxy.uploadsAnswered >= proxy.holdAfter) {
          proxy.held++;
          up.resume();
          heldResponses.push(res);
          return;
        }
        proxy.uploadsAnswered++;
      }
      res.writeHead(up.statusCode ?? 502, up.headers);
      up.pipe(res);
    });
    upstream.on('error', () => res.socket?.destroy());
    // A client that goes away takes its upstream request with it, as a real proxy does.
    res.on('close', () => {
      if (!res.writableFinished) upstream.destroy();
    });
    req.pipe(upstream);
  };
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  proxy.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return proxy;
}

import net from 'node:net';

/**
 * A TCP proxy between the gateway and a server (PostgreSQL) that a test can
 * cut: a real network fault (every connection reset, new ones refused at once),
 * not a mock; `restore` lets connections through again.
 */
export interface CuttableProxy {
  port: number;
  /**
   * Close every open connection and refuse new ones (ECONNREFUSED) until
   * `restore`, as a stopped server does; `reset: true` resets them (RST), as a
   * network failure does.
   */
  cut(opts?: { reset?: boolean }): Promise<void>;
  restore(): Promise<void>;
  close(): Promise<void>;
}

export async function startTcpProxy(target: { host: string; port: number }): Promise<CuttableProxy> {
  const sockets = new Set<net.Socket>();
  let isCut = false;
  const track = (s: net.Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
  };
  const server = net.createServer((client) => {
    track(client);
    const upstream = net.connect(target);
    track(upstream);
    client.pipe(upstream).pipe(client);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    async cut(opts = {}) {
      if (isCut) return;
      isCut = true;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const s of sockets) {
        if (opts.reset) s.resetAndDestroy();
        else s.destroy();
      }
      await closed;
    },
    async restore() {
      if (!isCut) return;
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, '127.0.0.1', () => {
          server.off('error', reject);
          resolve();
        });
      });
      isCut = false;
    },
    async close() {
      for (const s of sockets) s.destroy();
      if (!isCut) await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

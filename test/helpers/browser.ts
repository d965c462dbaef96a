import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, statSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Browser, type BrowserContext, chromium, type Page } from 'playwright-core';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const CHROMIUM = process.env.S3UP_CHROMIUM ?? '/usr/bin/chromium';

/** Why the browser suites cannot run here (undefined: they can). Under CI they must. */
export function browserSkipReason(): string | undefined {
  if (existsSync(CHROMIUM)) return undefined;
  if (process.env.CI) throw new Error(`CI is set but ${CHROMIUM} is missing: .ci/run installs Debian's chromium`);
  return `Chromium not installed at ${CHROMIUM} (apt-get install chromium; .ci/run does it)`;
}

function newestMtime(dir: string): number {
  let newest = 0;
  for (const name of readdirSync(dir)) {
    const full = path.join(dir, name);
    const st = statSync(full);
    newest = Math.max(newest, st.isDirectory() ? newestMtime(full) : st.mtimeMs);
  }
  return newest;
}

/** Build the web pages (dist/web) when missing or older than web/: the gateway serves what is built. */
export function ensureWebBuild(): void {
  const index = path.join(root, 'dist', 'web', 'admin', 'index.html');
  if (existsSync(index) && statSync(index).mtimeMs >= newestMtime(path.join(root, 'web'))) return;
  execFileSync(process.execPath, [path.join(root, 'node_modules', 'vite', 'bin', 'vite.js'), 'build', '--config', 'web/vite.config.ts', '--logLevel', 'warn'], {
    cwd: root,
    stdio: 'inherit',
  });
}

export async function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      '--disable-quic',
    ],
  });
}

/** Console errors and uncaught exceptions of a page (CSP violations show up here too). */
export function watchConsole(page: Page, allow: RegExp[] = []): string[] {
  const errors: string[] = [];
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    const text = msg.text();
    if (!allow.some((re) => re.test(text))) errors.push(text);
  });
  page.on('pageerror', (err) => errors.push(`pageerror: ${err.message}`));
  return errors;
}

// Every run writes every page here (ignored by git); the few images the docs show are copied from it to docs/screenshots/.
export const SCREENSHOT_DIR = process.env.S3UP_SCREENSHOT_DIR ?? path.join(root, 'docs', 'screenshots', 'latest');

export async function screenshot(page: Page, name: string): Promise<void> {
  mkdirSync(SCREENSHOT_DIR, { recursive: true });
  await page.screenshot({ path: path.join(SCREENSHOT_DIR, `${name}.png`), fullPage: false });
}

export async function newContext(browser: Browser, opts: { phone?: boolean } = {}): Promise<BrowserContext> {
  return browser.newContext(
    opts.phone ? { viewport: { width: 390, height: 844 }, deviceScaleFactor: 1, isMobile: true, hasTouch: true } : { viewport: { width: 1280, height: 800 } },
  );
}

/**
 * A TCP proxy in front of the gateway, to take the network away under a
 * browser: `budget(n)` lets only n more bytes go upstream (then the upload
 * stalls mid-body, with its connection open), `cut()` drops every connection
 * and refuses new ones, `restore()` lifts both.
 */
export class TcpProxy {
  private server: net.Server;
  private sockets = new Set<net.Socket>();
  private allowance = Number.POSITIVE_INFINITY;
  private down = false;
  private stalled: Array<() => void> = [];
  /** Bytes sent upstream so far. */
  upstreamBytes = 0;
  port = 0;

  constructor(private readonly target: { host: string; port: number }) {
    this.server = net.createServer((client) => this.accept(client));
  }

  async start(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as net.AddressInfo).port;
    return `http://127.0.0.1:${this.port}`;
  }

  private accept(client: net.Socket): void {
    if (this.down) {
      client.destroy();
      return;
    }
    const upstream = net.connect(this.target.port, this.target.host);
    this.sockets.add(client);
    this.sockets.add(upstream);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      this.sockets.delete(client);
      this.sockets.delete(upstream);
    };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
    upstream.on('data', (d) => client.write(d));
    const forward = (d: Buffer): void => {
      if (client.destroyed) return;
      const n = Math.min(d.length, Math.max(0, this.allowance));
      if (n > 0) {
        this.allowance -= n;
        this.upstreamBytes += n;
        upstream.write(d.subarray(0, n));
      }
      if (n < d.length) {
        client.pause();
        const rest = d.subarray(n);
        this.stalled.push(() => {
          client.resume();
          forward(rest);
        });
      }
    };
    client.on('data', forward);
  }

  /** Let only `bytes` more bytes go upstream (across all connections). */
  budget(bytes: number): void {
    this.allowance = bytes;
  }

  /** True when some request is waiting for budget. */
  get isStalled(): boolean {
    return this.stalled.length > 0;
  }

  cut(): void {
    this.down = true;
    this.stalled = [];
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
  }

  restore(): void {
    this.down = false;
    this.allowance = Number.POSITIVE_INFINITY;
    const waiting = this.stalled;
    this.stalled = [];
    for (const go of waiting) go();
  }

  async stop(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** Wait for a condition (polling), failing with `what` after `timeoutMs`: no fixed sleeps in assertions. */
export async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 60_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { AppError, ErrorCode } from '../errors.js';

/**
 * A refusal sent while the client is still sending its body must reach it.
 * Closing the socket with request bytes unread makes the kernel answer with a
 * reset, and a reset makes the client drop the response it has not read yet.
 * So (RFC 9112 section 9.6):
 * - a small remainder (a known length up to DISCARD_MAX) is read and thrown
 *   away, and the connection stays open for the next request;
 * - a larger or unknown one gets `Connection: close`; once the response is
 *   written, the gateway half-closes (FIN) and keeps reading and discarding
 *   until the client closes, for at most LINGER_MS and LINGER_MAX_BYTES,
 *   and only then closes the socket.
 */
export const DISCARD_MAX = 1024 * 1024;
export const LINGER_MS = 5_000;
export const LINGER_MAX_BYTES = 64 * 1024 * 1024;

const handled = new WeakSet<IncomingMessage>();
/** Requests whose body went idle: their connection is never reused. */
const timedOut = new WeakSet<IncomingMessage>();

/** Whether the request still has body bytes the gateway has not read. */
export function bodyUnread(req: IncomingMessage): boolean {
  if (req.complete || req.method === 'GET' || req.method === 'HEAD' || req.method === 'OPTIONS') return false;
  return !req.socket?.destroyed;
}

/**
 * Make the socket read again. The HTTP parser reads the socket's handle
 * directly and stops it when the request applies backpressure; once the body
 * is thrown away, a pause/resume pair restarts the handle (a plain resume of a
 * socket already marked flowing does not).
 */
function kick(socket: Socket): void {
  if (socket.destroyed) return;
  socket.pause();
  socket.resume();
}

/** Stop whoever was reading the body (a parser, a pipeline) and throw the rest away. */
function discard(req: IncomingMessage, res: ServerResponse): void {
  req.unpipe();
  req.removeAllListeners('data');
  req.on('error', () => {});
  req.resume();
  res.once('finish', () => {
    if (!req.complete) kick(req.socket);
  });
}

/**
 * Call before answering a request whose body may be unread: decides between
 * discarding the remainder (connection kept) and a lingering close (sets
 * `Connection: close` on `res`). Safe to call more than once.
 */
export function settleUnreadBody(req: IncomingMessage, res: ServerResponse): void {
  if (handled.has(req) || !bodyUnread(req)) return;
  handled.add(req);
  const len = Number(req.headers['content-length']);
  // An unanswered Expect: 100-continue: the client may or may not send the body, so the connection cannot be reused.
  const waitsForContinue = String(req.headers.expect).toLowerCase() === '100-continue';
  const small = Number.isSafeInteger(len) && len <= DISCARD_MAX && !waitsForContinue && !timedOut.has(req);
  if (!small && !res.headersSent) res.setHeader('connection', 'close');
  lingerOnClose(req.socket);
  discard(req, res);
}

/**
 * Replace the immediate close Node does after a `Connection: close` response
 * (socket.destroySoon) by a lingering one on this socket: half-close, read
 * and discard until the client closes, within LINGER_MS and LINGER_MAX_BYTES.
 */
function lingerOnClose(socket: Socket): void {
  const own = socket as Socket & { destroySoon?: () => void };
  own.destroySoon = () => {
    const started = socket.bytesRead;
    const until = Date.now() + LINGER_MS;
    const stop = () => {
      clearInterval(timer);
      socket.destroy();
    };
    // The parser consumes the socket's handle (no 'data' events): watch the byte count.
    const timer = setInterval(() => {
      if (Date.now() >= until || socket.bytesRead - started > LINGER_MAX_BYTES) stop();
    }, 100);
    timer.unref();
    socket.once('end', stop);
    socket.once('close', () => clearInterval(timer));
    socket.end();
    kick(socket);
  };
}

/**
 * Cut a request body that stops arriving. When no byte comes for `idleMs`
 * while the gateway is ready to read, the returned signal aborts with
 * REQUEST_TIMEOUT: whoever reads the body (the upload pipeline, a chunk, a tus
 * PATCH) stops, fails or keeps what it has, and the refusal is answered with
 * 408 and a lingering close. If the body is still unread one more period
 * later (nobody was reading it), the socket is closed. Time the gateway
 * itself spends not reading (backpressure from a slow store, a database
 * write before the bytes flow) does not count.
 */
export function watchBodyIdle(req: IncomingMessage, res: ServerResponse, idleMs: number): AbortSignal | undefined {
  if (!bodyUnread(req) || idleMs <= 0) return undefined;
  const controller = new AbortController();
  req.setTimeout(idleMs, () => {
    if (!bodyUnread(req)) return;
    const waitingForUs = req.readableFlowing !== true || req.readableLength > 0;
    if (waitingForUs && !controller.signal.aborted) {
      req.socket.setTimeout(idleMs);
      return;
    }
    if (controller.signal.aborted) {
      req.socket.destroy();
      return;
    }
    timedOut.add(req);
    controller.abort(new AppError(ErrorCode.REQUEST_TIMEOUT, `the request body stopped arriving (no data for ${idleMs / 1000} s)`));
    req.socket.setTimeout(idleMs);
  });
  // Once the body is in, the answer may take its time (a large publish): the
  // socket's idle timer must not cut it. Node reports a timeout after the body
  // is complete to the response only (and closes the socket if nobody listens).
  const bodyIn = () => {
    if (!controller.signal.aborted && !bodyUnread(req)) req.socket?.setTimeout(0);
  };
  req.once('end', bodyIn);
  res.on('timeout', bodyIn);
  return controller.signal;
}

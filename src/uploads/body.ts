import { IncomingMessage } from 'node:http';
import { finished, type Readable, type Writable } from 'node:stream';

/**
 * Feed a request body into `into` (a meter, a hasher). Unlike
 * `stream.pipeline`, a failure of `into` (a limit passed, a wrong length)
 * never destroys the body: destroying an HTTP request resets its connection,
 * and the client would lose the refusal the gateway is about to send (the
 * error handler reads or lingers over what is left; see server/request-body.ts).
 * Resolves once `into` has taken everything; rejects on either side's error.
 * `signal` (the body went idle) fails `into` with its reason.
 */
export function feed(body: Readable, into: Writable, signal?: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const onAbort = () => {
      body.unpipe(into);
      into.destroy(signal?.reason as Error);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    const stopBody = finished(body, { writable: false }, (err) => {
      stopBody();
      if (err) {
        body.unpipe(into);
        into.destroy(err);
        reject(err);
      }
    });
    const stopInto = finished(into, { readable: false }, (err) => {
      stopInto();
      signal?.removeEventListener('abort', onAbort);
      if (err) {
        body.unpipe(into);
        reject(err);
      } else {
        resolve();
      }
    });
    if (signal?.aborted) onAbort();
    else body.pipe(into);
  });
}

/**
 * Stop reading a body that will not be used. A part of a form, or any other
 * stream, is destroyed; the HTTP request itself is only detached, so the
 * connection stays answerable.
 */
export function release(body: Readable): void {
  if (body instanceof IncomingMessage) {
    body.unpipe();
    return;
  }
  body.destroy();
}

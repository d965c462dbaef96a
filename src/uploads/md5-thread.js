// @ts-check
/**
 * The MD5 worker thread (see md5-worker.ts): hashes slots of the shared buffer
 * for the streams the main thread names, and frees each slot once hashed.
 *
 * Plain JavaScript (type-checked through JSDoc) because a worker's entry must
 * load without a TypeScript loader: on Node 20 tsx does not install its hooks
 * in worker threads, so the same file runs under tsx (tests, dev) and from
 * dist/ (tsc copies it there with allowJs).
 *
 * Messages in: {op: 'update', id, slot, len} | {op: 'digest', id} | {op: 'drop', id}
 * Messages out: {op: 'free', slot} | {op: 'digest', id, hex}
 */
import { createHash } from 'node:crypto';
import { parentPort, workerData } from 'node:worker_threads';

const { sab, slotSize } = /** @type {{ sab: SharedArrayBuffer, slotSize: number }} */ (workerData);
const shared = Buffer.from(sab);
/** @type {Map<number, import('node:crypto').Hash>} */
const hashes = new Map();
const port = parentPort;
if (!port) throw new Error('md5-thread runs as a worker thread');

port.on('message', (/** @type {{ op: string, id: number, slot: number, len: number }} */ m) => {
  if (m.op === 'update') {
    let h = hashes.get(m.id);
    if (!h) {
      h = createHash('md5');
      hashes.set(m.id, h);
    }
    h.update(shared.subarray(m.slot * slotSize, m.slot * slotSize + m.len));
    port.postMessage({ op: 'free', slot: m.slot });
  } else if (m.op === 'digest') {
    const h = hashes.get(m.id) ?? createHash('md5');
    hashes.delete(m.id);
    port.postMessage({ op: 'digest', id: m.id, hex: h.digest('hex') });
  } else if (m.op === 'drop') {
    hashes.delete(m.id);
  }
});

import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import v8 from 'node:v8';
import vm from 'node:vm';

/**
 * Keeps the memory of streamed bytes from piling up between garbage collections.
 *
 * Every socket read gives Node a new 64 KiB buffer (a file read stream, 1 MiB).
 * That memory lives outside the JavaScript heap and is returned only when the
 * garbage collector finds the small object that points to it dead. Those
 * objects are so small that even a 1 GiB upload hardly fills V8's young
 * generation, so V8 collects on its own only once ~30 MB of dead buffers have
 * piled up (measured: the bare Node baseline server and the gateway both hold
 * 25-35 MB of `arrayBuffers` during a large upload).
 *
 * So while bytes move through the gateway's connections, this runs a
 * young-generation collection for every 4 MiB moved (looking every 25 ms; the
 * dead buffers are then freed on V8's background thread, ~1.6 ms of main
 * thread per collection). "Moved" is read from the byte counters of the
 * connections with a request in progress: an idle gateway runs none, and idle
 * keep-alive connections cost nothing. After a burst it runs a few more once
 * things are quiet, at a low allocation rate, which lets V8 shrink the young
 * generation. Together with `holdYoungGeneration`, measured on the 1 GiB
 * benchmark (docs/benchmarks.md): idle RSS ~110 -> ~92 MB, peak ~150 ->
 * ~111 MB. Collecting on every look while bytes move freed a little more
 * (peak ~108 MB) for twice the collections.
 *
 * Tried first and dropped: collections triggered by growth of `arrayBuffers`
 * (allocation and freeing overlap, so growth shows too late) and by event-loop
 * utilization (a collection's own follow-up work keeps the loop "busy", so an
 * idle gateway kept collecting: 4-9% of a core).
 *
 * The collector is reached with `--expose-gc` set at run time and taken from a
 * fresh context, so no `gc` global appears in the gateway's own context.
 */
export interface BufferReclaimerOptions {
  /** How often to look, in milliseconds (default 25: at 250 MB/s about 6 MB arrive per look). */
  intervalMs?: number;
  /** Bytes read plus written on the tracked connections between two collections (default 4 MiB). */
  minBytes?: number;
  /** Collections once quiet after a burst or start-up, one per second (default 3). */
  settleCollections?: number;
}

export interface BufferReclaimer {
  /** Count the bytes of this HTTP(S) server's requests in progress. */
  track(server: Server): void;
  /** Young-generation collections run so far. */
  readonly collections: number;
  stop(): void;
}

type GcFunction = (options?: { type?: 'minor' | 'major'; execution?: 'sync' | 'async' }) => void;

let gcFunction: GcFunction | null | undefined;

/** V8's collector, or null where it cannot be reached. */
function collector(): GcFunction | null {
  if (gcFunction !== undefined) return gcFunction;
  try {
    v8.setFlagsFromString('--expose-gc');
    const fn: unknown = vm.runInNewContext('gc');
    gcFunction = typeof fn === 'function' ? (fn as GcFunction) : null;
  } catch {
    gcFunction = null;
  }
  return gcFunction;
}

let held = false;

/**
 * Hold V8's young generation at its initial size (1 MB semi-spaces) while the
 * gateway starts: loading and compiling its modules otherwise grows it to its
 * 16 MB maximum, and it stays that large, idle (measured: idle RSS ~110 ->
 * ~92 MB). Skipped when the operator sets a semi-space flag of their own.
 */
export function holdYoungGeneration(): void {
  const own = [...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(/\s+/)].some((a) => /semi[-_]space/.test(a));
  if (own) return;
  v8.setFlagsFromString('--semi-space-growth-factor=1');
  held = true;
}

/**
 * Once serving, let the young generation grow again (V8's default factor): a
 * fixed 1 MB young generation costs many small requests 15-20% more main-thread
 * CPU in collections, while streaming does not grow it (the reclaimer keeps
 * it small): 1 GiB upload peak ~111 MB either way.
 */
export function releaseYoungGeneration(): void {
  if (!held) return;
  v8.setFlagsFromString('--semi-space-growth-factor=2');
  held = false;
}

export function startBufferReclaimer(opts: BufferReclaimerOptions = {}): BufferReclaimer {
  const gc = collector();
  const intervalMs = opts.intervalMs ?? 25;
  const minBytes = opts.minBytes ?? 4 * 1024 * 1024;
  const settle = opts.settleCollections ?? 3;
  const ticksPerSecond = Math.max(1, Math.round(1000 / intervalMs));

  // Connections with a request in progress, and their byte counts when it began:
  // idle keep-alive connections are not looked at (each look costs ~70 ns per connection).
  const active = new Map<Socket, number>();
  // Bytes of requests already finished since start-up, and the last look's total.
  let finishedBytes = 0;
  let lastTotal = 0;
  const moved = (s: Socket): number => s.bytesRead + s.bytesWritten;

  let collections = 0;
  let quietTicks = 0;
  // Start-up leaves a grown young generation: settle it too.
  let settleLeft = settle;
  const collect = (): void => {
    gc?.({ type: 'minor' });
    collections++;
  };

  // Bytes moved since the last collection.
  let pending = 0;
  const timer = gc
    ? setInterval(() => {
        let total = finishedBytes;
        for (const [s, base] of active) total += moved(s) - base;
        const delta = total - lastTotal;
        lastTotal = total;
        if (delta > 0) {
          quietTicks = 0;
          settleLeft = settle;
          pending += delta;
          if (pending >= minBytes) {
            pending = 0;
            collect();
          }
          return;
        }
        if (settleLeft > 0 && ++quietTicks >= ticksPerSecond) {
          quietTicks = 0;
          settleLeft--;
          collect();
        }
      }, intervalMs)
    : undefined;
  timer?.unref();

  return {
    track(server: Server): void {
      server.on('request', (req: IncomingMessage, res: ServerResponse) => {
        const socket = req.socket;
        if (active.has(socket)) return;
        active.set(socket, moved(socket));
        res.once('close', () => {
          const base = active.get(socket);
          if (base === undefined) return;
          active.delete(socket);
          finishedBytes += moved(socket) - base;
        });
      });
    },
    get collections() {
      return collections;
    },
    stop() {
      if (timer) clearInterval(timer);
      active.clear();
    },
  };
}

import { createHash, type Hash } from 'node:crypto';

/**
 * The checksums the gateway reports for an object (GET /exists, GET /list) and
 * a client computes locally, in one place for both sides:
 * - `sha256`: the plain SHA-256 of the content (plain uploads, and resumable
 *   uploads of at most one chunk);
 * - `sha256-of-sha256s`: the composite of a resumable upload, SHA-256 over the
 *   concatenated raw SHA-256 digests of its chunks, in chunk order, written
 *   "<hex>-<N>" (docs/resumable-uploads.md).
 */
export const COMPOSITE_ALGORITHM = 'sha256-of-sha256s';

export type ChecksumAlgorithm = 'sha256' | typeof COMPOSITE_ALGORITHM;

/** The composite from the chunks' SHA-256 digests (hex), in chunk order. */
export function compositeChecksum(partSha256Hex: readonly string[]): string {
  const h = createHash('sha256');
  for (const hex of partSha256Hex) h.update(Buffer.from(hex, 'hex'));
  return `${h.digest('hex')}-${partSha256Hex.length}`;
}

/**
 * Both checksums in one pass over a stream of bytes: the plain SHA-256 and,
 * when `chunkSize` is given, the composite over pieces of that size.
 */
export class ContentHasher {
  private readonly whole = createHash('sha256');
  private part: Hash | undefined;
  private partFill = 0;
  private readonly outer = createHash('sha256');
  private parts = 0;
  size = 0;

  constructor(private readonly chunkSize?: number) {}

  update(data: Uint8Array): void {
    this.whole.update(data);
    this.size += data.byteLength;
    const cs = this.chunkSize;
    if (!cs) return;
    let off = 0;
    while (off < data.byteLength) {
      this.part ??= createHash('sha256');
      const take = Math.min(cs - this.partFill, data.byteLength - off);
      this.part.update(data.subarray(off, off + take));
      this.partFill += take;
      off += take;
      if (this.partFill === cs) this.closePart();
    }
  }

  private closePart(): void {
    if (!this.part) return;
    this.outer.update(this.part.digest());
    this.parts++;
    this.part = undefined;
    this.partFill = 0;
  }

  digest(): { sha256: string; composite: string | undefined } {
    const sha256 = this.whole.digest('hex');
    if (!this.chunkSize) return { sha256, composite: undefined };
    if (this.partFill > 0) this.closePart();
    return { sha256, composite: `${this.outer.digest('hex')}-${this.parts}` };
  }
}

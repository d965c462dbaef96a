import type { ResolvedConfig } from '../config/load.js';
import { FsStorage } from './fs.js';
import type { StorageBackend } from './types.js';

export type { StorageBackend } from './types.js';

const MiB = 1024 * 1024;

export async function openStorage(storage: ResolvedConfig['storage']): Promise<StorageBackend> {
  if (storage.backend === 'fs') return FsStorage.open(storage.root);
  // Loaded only for the S3 backend: the AWS SDK costs ~20 MB of heap that a
  // filesystem gateway never needs (and a larger heap makes every GC dearer).
  const { S3Storage } = await import('./s3.js');
  const s3 = storage.s3;
  return new S3Storage({
    endpoint: s3.endpoint,
    region: s3.region,
    bucket: s3.bucket,
    accessKeyId: s3.access_key_id,
    secretAccessKey: s3.secret_access_key,
    forcePathStyle: s3.force_path_style,
    partSize: s3.part_size_mb * MiB,
    queueSize: s3.queue_size,
  });
}

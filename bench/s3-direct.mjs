// The S3 baseline: upload one file straight to the store with @aws-sdk/client-s3 +
// @aws-sdk/lib-storage `Upload` (same part size and parallelism as the gateway),
// and print one JSON line with the elapsed time.
//   node bench/s3-direct.mjs --endpoint URL --bucket B --key K --file F [--part-mb 8] [--queue 4]
import { createReadStream, statSync } from 'node:fs';
import http from 'node:http';
import { parseArgs } from 'node:util';
import { S3Client } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
const { values } = parseArgs({
  options: {
    endpoint: { type: 'string' },
    bucket: { type: 'string' },
    key: { type: 'string' },
    file: { type: 'string' },
    'part-mb': { type: 'string', default: '8' },
    queue: { type: 'string', default: '4' },
  },
});
const client = new S3Client({
  endpoint: values.endpoint,
  region: 'us-east-1',
  forcePathStyle: true,
  credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
  // As the gateway: no extra CRC per part (integrity is the caller's business).
  requestChecksumCalculation: 'WHEN_REQUIRED',
  responseChecksumValidation: 'WHEN_REQUIRED',
  requestHandler: { httpAgent: new http.Agent({ keepAlive: true, maxSockets: 64 }) },
});
const size = statSync(values.file).size;
const t0 = process.hrtime.bigint();
const upload = new Upload({
  client,
  params: {
    Bucket: values.bucket,
    Key: values.key,
    Body: createReadStream(values.file, { highWaterMark: 1024 * 1024 }),
    ContentType: 'application/octet-stream',
  },
  partSize: Number(values['part-mb']) * 1024 * 1024,
  queueSize: Number(values.queue),
  leavePartsOnError: true,
});
await upload.done();
const ms = Number(process.hrtime.bigint() - t0) / 1e6;
client.destroy();
console.log(JSON.stringify({ size, ms }));

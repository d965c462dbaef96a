// A separate process that starts a resumable upload and is killed with SIGKILL
// (by itself, at a chosen point) so a test can resume what it left.
// argv: baseUrl apiKey localPath remotePath idFile killAfterChunks
import { writeFileSync } from 'node:fs';
import { GatewayClient } from '../../src/client/gateway.js';
import { GatewayTarget, uploadLocalFile } from '../../src/transfer/index.js';

const [baseUrl, apiKey, localPath, remotePath, idFile, killAfter] = process.argv.slice(2) as [string, string, string, string, string, string];
const target = new GatewayTarget(new GatewayClient({ baseUrl, apiKey }));
let chunks = 0;
const MiB = 1024 * 1024;
await uploadLocalFile(target, {
  localPath,
  remotePath,
  resumableThreshold: 1,
  chunkSize: MiB,
  partConcurrency: 1,
  onUploadId: (id) => writeFileSync(idFile, id),
  onProgress: (p) => {
    chunks = Math.floor(p.bytesSent / MiB);
    if (chunks >= Number(killAfter)) process.kill(process.pid, 'SIGKILL');
  },
});
process.stdout.write('finished without being killed\n');

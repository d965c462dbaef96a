export {
  type ChecksumAlgorithm,
  COMPOSITE_ALGORITHM,
  type FileChecksums,
  fileChecksums,
  matchesRemote,
  type ReportedChecksum,
  reportedFor,
} from './checksum.js';
export { GatewayTarget } from './gateway-target.js';
export { parseS3Url, S3Target, type S3TargetOptions } from './s3-target.js';
export { type FoundFile, pathFilter, type ScannedFile, type ScanOptions, scanBatches, scanTree, statFound, walkTree } from './scan.js';
export {
  judgeLocal,
  type RemoteObject,
  type TargetProgress,
  type TargetResult,
  type TargetUpload,
  type TransferError,
  type TransferVerdict,
  type UploadTarget,
} from './target.js';
export {
  DEFAULT_CHUNK_SIZE,
  DEFAULT_PART_CONCURRENCY,
  DEFAULT_RESUMABLE_THRESHOLD,
  type UploadLocalFileOptions,
  type UploadLocalFileResult,
  uploadLocalFile,
} from './upload.js';

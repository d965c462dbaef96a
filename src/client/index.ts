export { errorFromResponse, GatewayError, judge, networkError, parseRetryAfter, type Verdict } from './errors.js';
export {
  type ChunkedComplete,
  type ChunkedInit,
  type ChunkedStatus,
  type ExistsResult,
  encodePath,
  fetchTransport,
  GatewayClient,
  type GatewayClientOptions,
  type GatewayResponse,
  type ListedObject,
  type ListPage,
  type Transport,
  type TransportRequest,
  type UploadBody,
  type UploadOptions,
  type UploadResult,
} from './gateway.js';
export {
  blobSource,
  type ChunkSource,
  chunkSizeToAsk,
  type ResumableOptions,
  type ResumableProgress,
  type ResumableResult,
  sha256Hex,
  uploadResumable,
} from './resumable.js';
export { backoffDelay, DEFAULT_RETRY, type RetryPolicy, retryDelay, sleep, withRetry } from './retry.js';

export { errorFromResponse, GatewayError } from './errors.js';
export { type ExistsResult, encodePath, GatewayClient, type GatewayClientOptions, type UploadBody, type UploadOptions, type UploadResult } from './gateway.js';
export { backoffDelay, DEFAULT_RETRY, type RetryPolicy, withRetry } from './retry.js';

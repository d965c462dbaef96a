/** A failure reported by the gateway (its error contract) or by the network. */
export class GatewayError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly errorCode: string,
    readonly requestId: string | undefined,
    readonly body: Record<string, unknown> | undefined,
  ) {
    super(message);
    this.name = 'GatewayError';
  }

  /** Worth trying again: the network, a store or database that is down, a gateway restarting. */
  get retryable(): boolean {
    return this.status === 0 || this.status === 408 || this.status === 429 || this.status >= 500;
  }
}

export async function errorFromResponse(res: Response): Promise<GatewayError> {
  let body: Record<string, unknown> | undefined;
  try {
    body = (await res.json()) as Record<string, unknown>;
  } catch {
    body = undefined;
  }
  const code = typeof body?.error_code === 'string' ? body.error_code : `HTTP_${res.status}`;
  const message = typeof body?.message === 'string' ? body.message : res.statusText || `HTTP ${res.status}`;
  const requestId = typeof body?.request_id === 'string' ? body.request_id : (res.headers.get('x-request-id') ?? undefined);
  return new GatewayError(message, res.status, code, requestId, body);
}

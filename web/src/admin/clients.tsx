import { useEffect, useState } from 'preact/hooks';
import { formatAgo, formatBytes } from '../shared/format.js';
import { type ApiError, api } from './api.js';

interface ClientRow {
  name: string;
  last_seen: string | null;
  uploads_today: number;
  failures_today: number;
  uploads_7d: number;
  bytes_7d: number;
  failures_7d: number;
  in_progress: number;
  storage: { objects: number; bytes: number };
  retention_days: number;
  max_file_size_bytes: number;
  latest_report: { date: string; files_uploaded: number; failures: number; queue_depth: number; host: string | null; agent_version: string | null } | null;
}

/** A client seen before but silent for longer than this has stopped reporting. */
const SILENT_MS = 24 * 3600 * 1000;

export function ClientsView() {
  const [data, setData] = useState<{ generated_at: string; clients: ClientRow[] } | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  const [reload, setReload] = useState(0);
  useEffect(() => {
    setError(null);
    api<{ generated_at: string; clients: ClientRow[] }>('/clients')
      .then(setData)
      .catch((e: ApiError) => setError(e));
  }, [reload]);
  if (error)
    return (
      <div class="panel state error" role="alert">
        <p>Could not load clients: {error.message}</p>
        <button type="button" onClick={() => setReload((n) => n + 1)}>
          Retry
        </button>
      </div>
    );
  if (!data)
    return (
      <p class="state" aria-busy="true">
        Loading clients…
      </p>
    );
  const now = new Date(data.generated_at).getTime();
  return (
    <section aria-labelledby="clients-title">
      <h2 id="clients-title">Clients</h2>
      <div class="panel">
        {data.clients.length === 0 ? (
          <p class="state">No clients configured.</p>
        ) : (
          <div class="table-wrap">
            <table data-testid="clients-table">
              <thead>
                <tr>
                  <th scope="col">Client</th>
                  <th scope="col">Last seen</th>
                  <th scope="col" class="num">
                    Uploads 7d
                  </th>
                  <th scope="col" class="num">
                    Bytes 7d
                  </th>
                  <th scope="col" class="num">
                    Failures 7d
                  </th>
                  <th scope="col" class="num">
                    In progress
                  </th>
                  <th scope="col" class="num">
                    Stored
                  </th>
                  <th scope="col">Latest report</th>
                </tr>
              </thead>
              <tbody>
                {data.clients.map((c) => {
                  const silent = c.last_seen !== null && now - new Date(c.last_seen).getTime() > SILENT_MS;
                  return (
                    <tr key={c.name} class={silent ? 'stale' : undefined} data-client={c.name}>
                      <th scope="row">{c.name}</th>
                      <td>
                        {formatAgo(c.last_seen, now)}{' '}
                        {silent && (
                          <span class="badge warn" data-testid="stopped-reporting">
                            stopped reporting
                          </span>
                        )}
                        {c.last_seen === null && <span class="badge">no activity yet</span>}
                      </td>
                      <td class="num">{c.uploads_7d}</td>
                      <td class="num">{formatBytes(c.bytes_7d)}</td>
                      <td class="num">{c.failures_7d > 0 ? <span class="badge failed">{c.failures_7d}</span> : 0}</td>
                      <td class="num">{c.in_progress}</td>
                      <td class="num">
                        {c.storage.objects} / {formatBytes(c.storage.bytes)}
                      </td>
                      <td>
                        {c.latest_report
                          ? `${c.latest_report.date}: ${c.latest_report.files_uploaded} files, ${c.latest_report.failures} failures, queue ${c.latest_report.queue_depth}${c.latest_report.host ? ` (${c.latest_report.host})` : ''}`
                          : '–'}
                      </td>
                    </tr>
                  );
                })}
              </tbody>
            </table>
          </div>
        )}
      </div>
    </section>
  );
}

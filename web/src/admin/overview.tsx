import { useEffect, useRef, useState } from 'preact/hooks';
import uPlot from 'uplot';
import { formatBytes } from '../shared/format.js';
import { type ApiError, api, type UiConfig } from './api.js';
import { Select } from './select.js';

interface Overview {
  generated_at: string;
  from: string;
  bucket_seconds: number;
  totals: { succeeded: number; failed: number; bytes: number; success_rate: number | null; in_progress: number };
  series: Array<{ t: string; succeeded: number; failed: number; bytes: number }>;
  errors_by_code: Array<{ error_code: string; count: number }>;
  storage: Array<{ client: string; objects: number; bytes: number }>;
}

const WINDOWS = [
  { hours: 24, label: 'last 24 hours' },
  { hours: 168, label: 'last 7 days' },
  { hours: 720, label: 'last 30 days' },
];

/** Every hour of the window, with zeros where nothing happened (so the chart's x axis is even). */
function columns(ov: Overview): [number[], number[], number[], number[]] {
  const step = ov.bucket_seconds;
  const start = Math.floor(new Date(ov.from).getTime() / 1000);
  const end = Math.floor(new Date(ov.generated_at).getTime() / 1000);
  const byT = new Map(ov.series.map((r) => [Math.floor(new Date(r.t).getTime() / 1000), r]));
  const xs: number[] = [];
  const ok: number[] = [];
  const bad: number[] = [];
  const bytes: number[] = [];
  for (let t = start; t <= end; t += step) {
    const r = byT.get(t);
    xs.push(t);
    ok.push(r?.succeeded ?? 0);
    bad.push(r?.failed ?? 0);
    bytes.push(r?.bytes ?? 0);
  }
  return [xs, ok, bad, bytes];
}

function Chart({ ov }: { ov: Overview }) {
  const ref = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const el = ref.current;
    if (!el) return;
    const width = () => Math.max(280, el.clientWidth);
    const plot = new uPlot(
      {
        width: width(),
        height: 280,
        title: 'Uploads and bytes per hour',
        scales: { x: { time: true }, bytes: {} },
        series: [
          {},
          { label: 'succeeded', stroke: '#1a7f37', width: 2 },
          { label: 'failed', stroke: '#c0272d', width: 2 },
          { label: 'bytes', stroke: '#1f5fbf', width: 1, dash: [6, 4], scale: 'bytes', value: (_u, v) => (v === null ? '–' : formatBytes(v)) },
        ],
        axes: [{}, { label: 'uploads' }, { side: 1, scale: 'bytes', label: 'bytes', values: (_u, vals) => vals.map((v) => formatBytes(v)), size: 80 }],
      },
      columns(ov),
      el,
    );
    const onResize = () => plot.setSize({ width: width(), height: 280 });
    window.addEventListener('resize', onResize);
    return () => {
      window.removeEventListener('resize', onResize);
      plot.destroy();
    };
  }, [ov]);
  return <div ref={ref} class="chart" role="img" aria-label="Chart of succeeded and failed uploads and bytes per hour" data-testid="chart" />;
}

export function OverviewView({ cfg }: { cfg: UiConfig }) {
  const [hours, setHours] = useState(168);
  const [client, setClient] = useState('');
  const [ov, setOv] = useState<Overview | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  const [reload, setReload] = useState(0);
  useEffect(() => {
    let live = true;
    setError(null);
    const qs = new URLSearchParams({ hours: String(hours) });
    if (client) qs.set('client', client);
    api<Overview>(`/api/admin/overview?${qs}`)
      .then((o) => live && setOv(o))
      .catch((e: ApiError) => live && setError(e));
    return () => {
      live = false;
    };
  }, [hours, client, reload]);

  const t = ov?.totals;
  return (
    <section aria-labelledby="overview-title">
      <h2 id="overview-title">Overview</h2>
      <form class="panel filters" aria-label="Window" onSubmit={(e) => e.preventDefault()}>
        <Select
          label="Window"
          value={String(hours)}
          options={WINDOWS.map((w) => ({ value: String(w.hours), label: w.label }))}
          onChange={(v) => setHours(Number(v))}
        />
        <Select label="Client" any="all" value={client} options={cfg.clients} onChange={setClient} />
      </form>
      {error ? (
        <div class="panel state error" role="alert">
          <p>Could not load the overview: {error.message}</p>
          <button type="button" onClick={() => setReload((n) => n + 1)}>
            Retry
          </button>
        </div>
      ) : !ov || !t ? (
        <p class="state" aria-busy="true">
          Loading overview…
        </p>
      ) : (
        <>
          <div class="cards">
            <div class="card">
              <div class="value" data-testid="stat-succeeded">
                {t.succeeded}
              </div>
              <div class="label">uploads succeeded</div>
            </div>
            <div class="card">
              <div class="value" data-testid="stat-failed">
                {t.failed}
              </div>
              <div class="label">uploads failed</div>
            </div>
            <div class="card">
              <div class="value" data-testid="stat-success-rate">
                {t.success_rate === null ? '–' : `${(t.success_rate * 100).toFixed(1)}%`}
              </div>
              <div class="label">success rate</div>
            </div>
            <div class="card">
              <div class="value" data-testid="stat-in-progress">
                {t.in_progress}
              </div>
              <div class="label">in progress now</div>
            </div>
            <div class="card">
              <div class="value" data-testid="stat-bytes">
                {formatBytes(t.bytes)}
              </div>
              <div class="label">bytes uploaded</div>
            </div>
          </div>
          <div class="panel">{ov.series.length === 0 ? <p class="state">No finished uploads in this window.</p> : <Chart ov={ov} />}</div>
          <div class="grid2">
            <div class="panel">
              <h3>Errors by code</h3>
              {ov.errors_by_code.length === 0 ? (
                <p class="state">No failed uploads in this window.</p>
              ) : (
                <table data-testid="errors-table">
                  <thead>
                    <tr>
                      <th scope="col">error_code</th>
                      <th scope="col" class="num">
                        failures
                      </th>
                    </tr>
                  </thead>
                  <tbody>
                    {ov.errors_by_code.map((e) => (
                      <tr key={e.error_code}>
                        <td>{e.error_code}</td>
                        <td class="num">{e.count}</td>
                      </tr>
                    ))}
                  </tbody>
                </table>
              )}
            </div>
            <div class="panel">
              <h3>Storage used per client</h3>
              {ov.storage.length === 0 ? (
                <p class="state">Nothing stored yet.</p>
              ) : (
                <table data-testid="storage-table">
                  <thead>
                    <tr>
                      <th scope="col">client</th>
                      <th scope="col" class="num">
                        objects
                      </th>
                      <th scope="col" class="num">
                        bytes
                      </th>
                    </tr>
                  </thead>
                  <tbody>
                    {ov.storage.map((s) => (
                      <tr key={s.client}>
                        <td>{s.client}</td>
                        <td class="num">{s.objects}</td>
                        <td class="num" title={`${s.bytes} bytes`}>
                          {formatBytes(s.bytes)}
                        </td>
                      </tr>
                    ))}
                  </tbody>
                </table>
              )}
            </div>
          </div>
        </>
      )}
    </section>
  );
}

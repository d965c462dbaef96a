import { useEffect, useRef, useState } from 'preact/hooks';
import { formatBytes, formatDuration, formatTime } from '../shared/format.js';
import { type ApiError, api, RUN_KINDS, RUN_STATUSES, type Run, type UiConfig } from './api.js';
import { navigate } from './router.js';
import { Select } from './select.js';

const PAGE_SIZES = [25, 50, 100];
const FILTER_KEYS = ['status', 'kind', 'client', 'created_from', 'created_to', 'limit'] as const;

interface Page {
  runs: Run[];
  next_cursor: string | null;
}

/** datetime-local value (local time) <-> ISO 8601 for the API. */
function toIso(local: string): string {
  if (local === '') return '';
  const d = new Date(local);
  return Number.isNaN(d.getTime()) ? '' : d.toISOString();
}
function toLocal(iso: string | null): string {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  const pad = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

function durationOf(r: Run): number | null {
  if (r.timings.total_ms !== null) return r.timings.total_ms;
  if (r.started_at && r.finished_at) return new Date(r.finished_at).getTime() - new Date(r.started_at).getTime();
  return null;
}

export function RunsView({ cfg, search }: { cfg: UiConfig; search: URLSearchParams }) {
  const [page, setPage] = useState<Page | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  const [loading, setLoading] = useState(true);
  const [open, setOpen] = useState<Run | null>(null);
  const [reload, setReload] = useState(0);
  // Cursors of the pages before this one (Prev), for the current filters.
  const history = useRef<string[]>([]);
  const filterKey = FILTER_KEYS.map((k) => search.get(k) ?? '').join('|');
  const lastFilterKey = useRef(filterKey);
  if (lastFilterKey.current !== filterKey) {
    lastFilterKey.current = filterKey;
    history.current = [];
  }
  const cursor = search.get('cursor') ?? '';
  const limit = PAGE_SIZES.includes(Number(search.get('limit'))) ? Number(search.get('limit')) : 25;

  useEffect(() => {
    const qs = new URLSearchParams();
    for (const k of FILTER_KEYS) {
      const v = search.get(k);
      if (v) qs.set(k, v);
    }
    qs.set('limit', String(limit));
    if (cursor) qs.set('cursor', cursor);
    let live = true;
    setLoading(true);
    setError(null);
    api<Page>(`/runs/v1?${qs}`)
      .then((p) => live && setPage(p))
      .catch((err: ApiError) => live && setError(err))
      .finally(() => live && setLoading(false));
    return () => {
      live = false;
    };
  }, [filterKey, cursor, reload]);

  const setFilter = (key: string, value: string) => {
    const qs = new URLSearchParams(search);
    if (value === '') qs.delete(key);
    else qs.set(key, value);
    qs.delete('cursor');
    navigate(`/admin/runs?${qs}`);
  };
  const goCursor = (c: string | null) => {
    const qs = new URLSearchParams(search);
    if (c) qs.set('cursor', c);
    else qs.delete('cursor');
    navigate(`/admin/runs?${qs}`);
  };
  const next = () => {
    if (!page?.next_cursor) return;
    history.current.push(cursor);
    goCursor(page.next_cursor);
  };
  const prev = () => goCursor(history.current.pop() ?? null);
  const hasFilters = FILTER_KEYS.some((k) => k !== 'limit' && search.get(k));

  return (
    <section aria-labelledby="runs-title">
      <h2 id="runs-title">Runs</h2>
      <form class="panel filters" aria-label="Filters" onSubmit={(e) => e.preventDefault()}>
        <Select label="Status" name="status" any="any" value={search.get('status') ?? ''} options={RUN_STATUSES} onChange={(v) => setFilter('status', v)} />
        <Select label="Kind" name="kind" any="any" value={search.get('kind') ?? ''} options={RUN_KINDS} onChange={(v) => setFilter('kind', v)} />
        <Select label="Client" name="client" any="any" value={search.get('client') ?? ''} options={cfg.clients} onChange={(v) => setFilter('client', v)} />
        <label>
          Created from
          <input
            type="datetime-local"
            name="created_from"
            value={toLocal(search.get('created_from'))}
            onChange={(e) => setFilter('created_from', toIso((e.currentTarget as HTMLInputElement).value))}
          />
        </label>
        <label>
          Created to
          <input
            type="datetime-local"
            name="created_to"
            value={toLocal(search.get('created_to'))}
            onChange={(e) => setFilter('created_to', toIso((e.currentTarget as HTMLInputElement).value))}
          />
        </label>
        <Select label="Per page" name="limit" value={String(limit)} options={PAGE_SIZES.map(String)} onChange={(v) => setFilter('limit', v)} />
        {hasFilters && (
          <button type="button" onClick={() => navigate('/admin/runs')}>
            Clear filters
          </button>
        )}
      </form>

      <Prune cfg={cfg} client={search.get('client') ?? ''} onPruned={() => setReload((n) => n + 1)} />

      <div class="panel" aria-busy={loading ? 'true' : 'false'}>
        {error ? (
          <div class="state error" role="alert">
            <p>Could not load runs: {error.message}</p>
            <button type="button" onClick={() => setReload((n) => n + 1)}>
              Retry
            </button>
          </div>
        ) : !page ? (
          <p class="state">Loading runs…</p>
        ) : page.runs.length === 0 ? (
          <p class="state" data-testid="runs-empty">
            {hasFilters || cursor ? 'No runs match these filters.' : 'No uploads recorded yet.'}
          </p>
        ) : (
          <div class="table-wrap">
            <table data-testid="runs-table">
              <caption class="skip">Upload records, newest first. Press Enter on a row for details.</caption>
              <thead>
                <tr>
                  <th scope="col">Created</th>
                  <th scope="col">Status</th>
                  <th scope="col">Kind</th>
                  <th scope="col">Client</th>
                  <th scope="col">Path</th>
                  <th scope="col" class="num">
                    Size
                  </th>
                  <th scope="col" class="num">
                    Duration
                  </th>
                  <th scope="col">Error</th>
                </tr>
              </thead>
              <tbody>
                {page.runs.map((r) => (
                  <tr
                    key={r.run_id}
                    class="clickable"
                    tabIndex={0}
                    data-run-id={r.run_id}
                    aria-label={`Run ${r.path}, ${r.status}; open details`}
                    onClick={() => setOpen(r)}
                    onKeyDown={(e) => {
                      if (e.key === 'Enter' || e.key === ' ') {
                        e.preventDefault();
                        setOpen(r);
                      }
                    }}
                  >
                    <td>{formatTime(r.created_at)}</td>
                    <td>
                      <span class={`badge ${r.status}`}>{r.status}</span>
                    </td>
                    <td>{r.kind}</td>
                    <td>{r.client}</td>
                    <td class="path" title={r.path}>
                      {r.path}
                    </td>
                    <td class="num">{formatBytes(r.size)}</td>
                    <td class="num">{formatDuration(durationOf(r))}</td>
                    <td>{r.error_code ?? ''}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
        <nav class="pager" aria-label="Pages">
          <button type="button" onClick={prev} disabled={!cursor || loading}>
            ← Prev
          </button>
          <button type="button" onClick={next} disabled={!page?.next_cursor || loading}>
            Next →
          </button>
          {page && <span style={{ color: 'var(--muted)' }}>{page.runs.length} on this page</span>}
        </nav>
      </div>
      {open && <RunDrawer run={open} onClose={() => setOpen(null)} />}
    </section>
  );
}

function RunDrawer({ run, onClose }: { run: Run; onClose: () => void }) {
  const ref = useRef<HTMLDivElement>(null);
  const opener = useRef<Element | null>(document.activeElement);
  useEffect(() => {
    ref.current?.focus();
    const onKey = (e: KeyboardEvent) => {
      if (e.key === 'Escape') onClose();
    };
    window.addEventListener('keydown', onKey);
    const back = opener.current;
    return () => {
      window.removeEventListener('keydown', onKey);
      if (back instanceof HTMLElement) back.focus();
    };
  }, []);
  const duration = durationOf(run);
  return (
    <>
      <button type="button" class="drawer-backdrop" aria-label="Close details" tabIndex={-1} onClick={onClose} />
      <div class="drawer" role="dialog" aria-modal="true" aria-labelledby="drawer-title" tabIndex={-1} ref={ref} data-testid="run-drawer">
        <header>
          <h2 id="drawer-title">Run {run.run_id}</h2>
          <button type="button" onClick={onClose} aria-label="Close details">
            ✕
          </button>
        </header>
        <p>
          <span class={`badge ${run.status}`}>{run.status}</span> {run.kind} upload by <strong>{run.client}</strong>
        </p>
        <h3>Lifecycle</h3>
        <dl class="kv">
          <dt>created</dt>
          <dd>{formatTime(run.created_at)}</dd>
          <dt>started</dt>
          <dd>{formatTime(run.started_at)}</dd>
          <dt>finished</dt>
          <dd>{formatTime(run.finished_at)}</dd>
          <dt>updated</dt>
          <dd>{formatTime(run.updated_at)}</dd>
          <dt>deleted</dt>
          <dd>{formatTime(run.deleted_at)}</dd>
          <dt>duration</dt>
          <dd data-testid="drawer-duration">{formatDuration(duration)}</dd>
        </dl>
        <h3>Inputs</h3>
        <dl class="kv">
          <dt>path</dt>
          <dd>{run.path}</dd>
          <dt>key</dt>
          <dd>{run.s3_key}</dd>
          <dt>filename</dt>
          <dd>{run.inputs.filename ?? '–'}</dd>
          <dt>content type</dt>
          <dd>{run.inputs.content_type ?? '–'}</dd>
          <dt>size</dt>
          <dd>
            {formatBytes(run.size)}
            {run.size !== null ? ` (${run.size} bytes)` : ''}
          </dd>
          <dt>sha256</dt>
          <dd>{run.sha256 ?? '–'}</dd>
        </dl>
        <h3>Timings</h3>
        <dl class="kv">
          <dt>total</dt>
          <dd>{formatDuration(run.timings.total_ms)}</dd>
          <dt>throughput</dt>
          <dd>{run.timings.bytes_per_sec === null ? '–' : `${formatBytes(run.timings.bytes_per_sec)}/s`}</dd>
        </dl>
        <h3>Error</h3>
        {run.error_code ? (
          <dl class="kv" data-testid="drawer-error">
            <dt>error_code</dt>
            <dd>{run.error_code}</dd>
            <dt>message</dt>
            <dd>{run.error_message ?? ''}</dd>
          </dl>
        ) : (
          <p>None.</p>
        )}
        <h3>Diagnostics (raw JSON)</h3>
        <pre class="raw" data-testid="drawer-raw">
          {JSON.stringify(run, null, 2)}
        </pre>
      </div>
    </>
  );
}

interface PruneResult {
  scanned: number;
  deleted: number;
  kept: number;
}

/** Spec 001's guarded prune: shown when enabled, disabled when locked, armed by typing PRUNE, a dry run first. */
function Prune({ cfg, client, onPruned }: { cfg: UiConfig; client: string; onPruned: () => void }) {
  const [openPanel, setOpenPanel] = useState(false);
  const [confirm, setConfirm] = useState('');
  const [maxRuns, setMaxRuns] = useState('');
  const [maxAge, setMaxAge] = useState('');
  const [dry, setDry] = useState<{ params: string; result: PruneResult } | null>(null);
  const [done, setDone] = useState<PruneResult | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  if (!cfg.prune.enabled) return null;

  const fieldErrors: Record<string, string> = {};
  if (maxRuns !== '' && !/^\d+$/.test(maxRuns)) fieldErrors.maxRuns = 'a whole number, 0 or more';
  if (maxAge !== '' && !(Number(maxAge) > 0)) fieldErrors.maxAge = 'a number of days above 0';
  const params = new URLSearchParams();
  if (maxRuns !== '') params.set('max_runs', maxRuns);
  if (maxAge !== '') params.set('max_age_days', maxAge);
  if (client !== '') params.set('client', client);
  const paramKey = params.toString();
  const noLimit = maxRuns === '' && maxAge === '' && cfg.prune.max_runs === null && cfg.prune.max_age_days === null;
  const valid = Object.keys(fieldErrors).length === 0 && !noLimit;
  const armed = confirm === 'PRUNE';

  const run = async (dryRun: boolean) => {
    setBusy(true);
    setError(null);
    try {
      const qs = new URLSearchParams(params);
      if (dryRun) qs.set('dry_run', 'true');
      const res = await api<PruneResult>(`/runs/v1/prune?${qs}`, { method: 'POST' });
      if (dryRun) setDry({ params: paramKey, result: res });
      else {
        setDone(res);
        setDry(null);
        setConfirm('');
        onPruned();
      }
    } catch (err) {
      setError((err as ApiError).message);
    } finally {
      setBusy(false);
    }
  };

  return (
    <div class="panel" data-testid="prune">
      <div class="row">
        <button
          type="button"
          class="danger"
          disabled={cfg.prune.locked}
          aria-expanded={openPanel ? 'true' : 'false'}
          aria-controls="prune-panel"
          onClick={() => setOpenPanel(!openPanel)}
        >
          Prune records…
        </button>
        {cfg.prune.locked ? (
          <span class="badge warn" data-testid="prune-locked">
            Locked on this gateway ({cfg.prune.reason})
          </span>
        ) : (
          <span style={{ color: 'var(--muted)' }}>Deletes terminal records (never queued/processing ones, never the record of a stored object).</span>
        )}
      </div>
      {openPanel && !cfg.prune.locked && (
        <div id="prune-panel" style={{ marginTop: '12px' }}>
          <div class="filters">
            <label>
              max_runs (keep this many newest)
              <input
                name="max_runs"
                inputMode="numeric"
                value={maxRuns}
                placeholder={cfg.prune.max_runs === null ? 'none' : `default ${cfg.prune.max_runs}`}
                aria-invalid={fieldErrors.maxRuns ? 'true' : undefined}
                aria-describedby="max-runs-error"
                onInput={(e) => setMaxRuns((e.currentTarget as HTMLInputElement).value.trim())}
              />
              <span id="max-runs-error" class="field-error">
                {fieldErrors.maxRuns ?? ''}
              </span>
            </label>
            <label>
              max_age_days
              <input
                name="max_age_days"
                inputMode="decimal"
                value={maxAge}
                placeholder={cfg.prune.max_age_days === null ? 'none' : `default ${cfg.prune.max_age_days}`}
                aria-invalid={fieldErrors.maxAge ? 'true' : undefined}
                aria-describedby="max-age-error"
                onInput={(e) => setMaxAge((e.currentTarget as HTMLInputElement).value.trim())}
              />
              <span id="max-age-error" class="field-error">
                {fieldErrors.maxAge ?? ''}
              </span>
            </label>
            <button type="button" disabled={!valid || busy} onClick={() => run(true)}>
              Count (dry run)
            </button>
          </div>
          {noLimit && <p class="note">Give max_runs and/or max_age_days: with neither, nothing is pruned.</p>}
          {client !== '' && <p class="note">Only client {client}'s records (the Client filter).</p>}
          {dry && dry.params === paramKey && (
            <p class="note" data-testid="prune-dry-run" role="status">
              Dry run: {dry.result.deleted} of {dry.result.scanned} records would be deleted; {dry.result.kept} kept.
            </p>
          )}
          <div class="filters" style={{ marginTop: '8px' }}>
            <label>
              Type PRUNE to arm
              <input name="confirm" autocomplete="off" value={confirm} onInput={(e) => setConfirm((e.currentTarget as HTMLInputElement).value)} />
            </label>
            <button type="button" class="danger" disabled={!armed || !valid || busy || !dry || dry.params !== paramKey} onClick={() => run(false)}>
              Prune {dry && dry.params === paramKey ? dry.result.deleted : ''} records
            </button>
          </div>
          {!dry && <p style={{ color: 'var(--muted)' }}>Run the dry-run count first.</p>}
        </div>
      )}
      {error && (
        <p class="alert" role="alert">
          {error}
        </p>
      )}
      {done && (
        <p class="success" role="status" data-testid="prune-result">
          Pruned: scanned {done.scanned}, deleted {done.deleted}, kept {done.kept}.
        </p>
      )}
    </div>
  );
}

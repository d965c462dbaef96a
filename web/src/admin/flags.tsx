import { useEffect, useState } from 'preact/hooks';
import { type ApiError, api } from './api.js';

interface Flag {
  enabled?: boolean;
  rolloutPercent?: number;
  clients?: string[];
  description?: string;
}
interface FlagsDoc {
  version?: number;
  flags: Record<string, Flag>;
  upload?: unknown;
  clients?: unknown;
}

/** One editable row; numbers are kept as typed so the server's validation speaks about what was entered. */
interface Row {
  name: string;
  enabled: boolean;
  rollout: string;
  clients: string;
  description: string;
}

function toRows(doc: FlagsDoc): Row[] {
  return Object.entries(doc.flags).map(([name, f]) => ({
    name,
    enabled: f.enabled !== false,
    rollout: f.rolloutPercent === undefined ? '' : String(f.rolloutPercent),
    clients: (f.clients ?? []).join(', '),
    description: f.description ?? '',
  }));
}

function toDoc(base: FlagsDoc, rows: Row[]): FlagsDoc {
  const flags: Record<string, Flag> = {};
  for (const r of rows) {
    const f: Flag = { enabled: r.enabled };
    if (r.rollout.trim() !== '') f.rolloutPercent = Number(r.rollout);
    const clients = r.clients
      .split(',')
      .map((c) => c.trim())
      .filter(Boolean);
    if (clients.length > 0) f.clients = clients;
    if (r.description.trim() !== '') f.description = r.description.trim();
    flags[r.name.trim()] = f;
  }
  const out: FlagsDoc = { version: base.version ?? 1, flags };
  if (base.upload !== undefined) out.upload = base.upload;
  if (base.clients !== undefined) out.clients = base.clients;
  return out;
}

/** The server names the offending field ("flags.<name>.<field>: problem"): show it next to that input. */
function fieldOf(message: string): { flag: string; field: string; problem: string } | null {
  const m = /flags\.([A-Za-z0-9_.-]+?)\.(enabled|rolloutPercent|clients|description)(?:\.\d+)?: (.*)$/.exec(message);
  if (m) return { flag: m[1] as string, field: m[2] as string, problem: m[3] as string };
  const n = /flags\.([^:]+): (.*)$/.exec(message);
  if (n) return { flag: n[1] as string, field: 'name', problem: n[2] as string };
  return null;
}

export function FlagsView() {
  const [doc, setDoc] = useState<FlagsDoc | null>(null);
  const [rows, setRows] = useState<Row[]>([]);
  const [loadError, setLoadError] = useState<ApiError | null>(null);
  const [saveError, setSaveError] = useState<string | null>(null);
  const [inline, setInline] = useState<{ flag: string; field: string; problem: string } | null>(null);
  const [saved, setSaved] = useState(false);
  const [busy, setBusy] = useState(false);
  const [reload, setReload] = useState(0);

  useEffect(() => {
    setLoadError(null);
    api<FlagsDoc>('/api/admin/feature-flags/config')
      .then((d) => {
        setDoc(d);
        setRows(toRows(d));
      })
      .catch((e: ApiError) => setLoadError(e));
  }, [reload]);

  const update = (i: number, patch: Partial<Row>) => {
    setSaved(false);
    setRows(rows.map((r, j) => (j === i ? { ...r, ...patch } : r)));
  };
  const save = async (e: Event) => {
    e.preventDefault();
    if (!doc) return;
    setBusy(true);
    setSaveError(null);
    setInline(null);
    setSaved(false);
    try {
      const next = await api<FlagsDoc>('/api/admin/feature-flags/config', { method: 'PUT', body: toDoc(doc, rows) });
      setDoc(next);
      setRows(toRows(next));
      setSaved(true);
    } catch (err) {
      const msg = (err as ApiError).message;
      const f = fieldOf(msg);
      if (f && rows.some((r) => r.name.trim() === f.flag)) setInline(f);
      else setSaveError(msg);
    } finally {
      setBusy(false);
    }
  };
  const errorFor = (name: string, field: string) => (inline && inline.flag === name.trim() && inline.field === field ? inline.problem : null);

  if (loadError)
    return (
      <div class="panel state error" role="alert">
        <p>Could not load the feature flags: {loadError.message}</p>
        <button type="button" onClick={() => setReload((n) => n + 1)}>
          Retry
        </button>
      </div>
    );
  if (!doc)
    return (
      <p class="state" aria-busy="true">
        Loading feature flags…
      </p>
    );
  return (
    <section aria-labelledby="flags-title">
      <h2 id="flags-title">Feature flags</h2>
      <form class="panel" onSubmit={save} noValidate>
        {rows.length === 0 && <p class="state">No flags yet. Add one below.</p>}
        {rows.length > 0 && (
          <div class="table-wrap">
            <table data-testid="flags-table">
              <thead>
                <tr>
                  <th scope="col">Flag</th>
                  <th scope="col">Enabled</th>
                  <th scope="col">Rollout %</th>
                  <th scope="col">Always on for clients</th>
                  <th scope="col">Description</th>
                  <th scope="col">
                    <span class="skip">Remove</span>
                  </th>
                </tr>
              </thead>
              <tbody>
                {rows.map((r, i) => {
                  const nameErr = errorFor(r.name, 'name');
                  const rollErr = errorFor(r.name, 'rolloutPercent');
                  const clientsErr = errorFor(r.name, 'clients');
                  return (
                    <tr key={i} data-flag={r.name}>
                      <td>
                        <input
                          aria-label="Flag name"
                          value={r.name}
                          aria-invalid={nameErr ? 'true' : undefined}
                          onInput={(e) => update(i, { name: (e.currentTarget as HTMLInputElement).value })}
                        />
                        {nameErr && <div class="field-error">{nameErr}</div>}
                      </td>
                      <td>
                        <input
                          type="checkbox"
                          aria-label={`${r.name} enabled`}
                          checked={r.enabled}
                          onChange={(e) => update(i, { enabled: (e.currentTarget as HTMLInputElement).checked })}
                        />
                      </td>
                      <td>
                        <input
                          aria-label={`${r.name} rollout percent`}
                          name={`rollout-${r.name}`}
                          inputMode="numeric"
                          size={5}
                          value={r.rollout}
                          aria-invalid={rollErr ? 'true' : undefined}
                          aria-describedby={`rollout-error-${i}`}
                          onInput={(e) => update(i, { rollout: (e.currentTarget as HTMLInputElement).value })}
                        />
                        <div id={`rollout-error-${i}`} class="field-error" data-testid={rollErr ? 'inline-error' : undefined}>
                          {rollErr ?? ''}
                        </div>
                      </td>
                      <td>
                        <input
                          aria-label={`${r.name} clients`}
                          value={r.clients}
                          aria-invalid={clientsErr ? 'true' : undefined}
                          onInput={(e) => update(i, { clients: (e.currentTarget as HTMLInputElement).value })}
                        />
                        {clientsErr && <div class="field-error">{clientsErr}</div>}
                      </td>
                      <td>
                        <input
                          aria-label={`${r.name} description`}
                          value={r.description}
                          onInput={(e) => update(i, { description: (e.currentTarget as HTMLInputElement).value })}
                        />
                      </td>
                      <td>
                        <button type="button" aria-label={`Remove ${r.name}`} onClick={() => setRows(rows.filter((_, j) => j !== i))}>
                          Remove
                        </button>
                      </td>
                    </tr>
                  );
                })}
              </tbody>
            </table>
          </div>
        )}
        <p class="row" style={{ marginTop: '12px' }}>
          <button type="button" onClick={() => setRows([...rows, { name: '', enabled: true, rollout: '0', clients: '', description: '' }])}>
            Add flag
          </button>
          <button type="submit" class="primary" disabled={busy}>
            {busy ? 'Saving…' : 'Save'}
          </button>
          <button type="button" onClick={() => setReload((n) => n + 1)} disabled={busy}>
            Discard changes
          </button>
        </p>
        {saveError && (
          <p class="alert" role="alert">
            {saveError}
          </p>
        )}
        {inline && (
          <p class="alert" role="alert">
            Not saved: fix the field marked above ({inline.problem}).
          </p>
        )}
        {saved && (
          <p class="success" role="status" data-testid="flags-saved">
            Saved. Gateways pick the change up within 2 seconds.
          </p>
        )}
      </form>
      <div class="panel">
        <h3>Upload settings in the document</h3>
        <pre class="raw">{JSON.stringify({ upload: doc.upload ?? null, clients: doc.clients ?? null }, null, 2)}</pre>
      </div>
    </section>
  );
}

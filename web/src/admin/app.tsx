import { useEffect, useState } from 'preact/hooks';
import { type ApiError, api, forgetToken, setUnauthorizedHandler, storedToken, storeToken, type UiConfig } from './api.js';
import { ClientsView } from './clients.js';
import { FlagsView } from './flags.js';
import { OverviewView } from './overview.js';
import { linkHandler, useLocation } from './router.js';
import { RunsView } from './runs.js';

const NAV = [
  { href: '/admin', label: 'Overview' },
  { href: '/admin/runs', label: 'Runs' },
  { href: '/admin/clients', label: 'Clients' },
  { href: '/admin/flags', label: 'Feature flags' },
];

function SignIn({ onSignedIn, notice }: { onSignedIn: (cfg: UiConfig) => void; notice: string | null }) {
  const [token, setToken] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const cfg = await api<UiConfig>('/api/admin/ui-config', { token });
      storeToken(token);
      onSignedIn(cfg);
    } catch (err) {
      const e2 = err as ApiError;
      setError(e2.status === 401 ? `Sign-in refused: ${e2.message}.` : e2.message);
    } finally {
      setBusy(false);
    }
  };
  return (
    <main>
      <form class="panel signin" onSubmit={submit} aria-labelledby="signin-title">
        <h2 id="signin-title">s3up admin: sign in</h2>
        {notice && <p class="note">{notice}</p>}
        <label>
          Admin token
          <input
            type="password"
            name="admin-token"
            autocomplete="current-password"
            value={token}
            onInput={(e) => setToken((e.currentTarget as HTMLInputElement).value)}
            aria-invalid={error ? 'true' : undefined}
            aria-describedby={error ? 'signin-error' : undefined}
            required
          />
        </label>
        {error && (
          <p id="signin-error" class="alert" role="alert">
            {error}
          </p>
        )}
        <p class="row" style={{ marginTop: '12px' }}>
          <button class="primary" type="submit" disabled={busy || token === ''}>
            {busy ? 'Signing in…' : 'Sign in'}
          </button>
        </p>
        <p style={{ color: 'var(--muted)', fontSize: '0.85rem' }}>The token is the gateway's ADMIN_TOKEN. It is kept in this tab only (sessionStorage).</p>
      </form>
    </main>
  );
}

export function App() {
  const [cfg, setCfg] = useState<UiConfig | null>(null);
  const [checking, setChecking] = useState(storedToken() !== null);
  const [notice, setNotice] = useState<string | null>(null);
  const loc = useLocation();

  useEffect(() => {
    setUnauthorizedHandler((message) => {
      forgetToken();
      setCfg(null);
      setNotice(`Signed out: ${message}.`);
    });
    if (storedToken() === null) return;
    api<UiConfig>('/api/admin/ui-config')
      .then(setCfg)
      .catch((err: ApiError) => {
        if (err.status !== 401) setNotice(err.message);
      })
      .finally(() => setChecking(false));
  }, []);

  if (checking)
    return (
      <p class="state" aria-busy="true">
        Loading…
      </p>
    );
  if (!cfg)
    return (
      <SignIn
        onSignedIn={(c) => {
          setNotice(null);
          setCfg(c);
        }}
        notice={notice}
      />
    );

  const view = loc.path;
  const signOut = () => {
    forgetToken();
    setCfg(null);
    setNotice('Signed out.');
  };
  return (
    <>
      <a class="skip" href="#content">
        Skip to content
      </a>
      <header class="top">
        <h1>s3up admin</h1>
        <nav aria-label="Sections">
          {NAV.map((n) => (
            <a key={n.href} href={n.href} onClick={linkHandler} aria-current={view === n.href ? 'page' : undefined}>
              {n.label}
            </a>
          ))}
        </nav>
        <span class="spacer" />
        <span style={{ fontSize: '0.8rem', opacity: 0.8 }}>gateway {cfg.version}</span>
        <button type="button" onClick={signOut}>
          Sign out
        </button>
      </header>
      <main id="content" tabIndex={-1}>
        {view === '/admin/runs' ? (
          <RunsView cfg={cfg} search={loc.search} />
        ) : view === '/admin/clients' ? (
          <ClientsView />
        ) : view === '/admin/flags' ? (
          <FlagsView />
        ) : (
          <OverviewView cfg={cfg} />
        )}
      </main>
    </>
  );
}

import { render } from 'preact';
import { useEffect, useMemo, useRef, useState } from 'preact/hooks';
import '../shared/style.css';
import { formatBytes } from '../shared/format.js';
import { clearToken, saveToken, type TokenInfo, takeToken } from './token.js';
import { createUploader, type FileView } from './uploader.js';

const STATUS_TEXT: Record<FileView['status'], string> = {
  waiting: 'waiting',
  uploading: 'uploading',
  paused: 'paused',
  done: 'done',
  error: 'failed',
  offline: 'offline: waiting for the network',
  missing: 'needs the file again',
};

function TokenForm({ onToken }: { onToken: (t: TokenInfo) => void }) {
  const [value, setValue] = useState('');
  const [error, setError] = useState<string | null>(null);
  return (
    <form
      class="panel signin"
      onSubmit={(e) => {
        e.preventDefault();
        const info = saveToken(value.trim());
        if (!info) setError('That is not an upload token (it starts with s3upt.).');
        else if (info.expiresAt <= Date.now()) setError('That upload token has expired: ask for a new link.');
        else onToken(info);
      }}
    >
      <h2>Upload files</h2>
      <p>This page needs an upload token. Open the link you were given, or paste the token here.</p>
      <label>
        Upload token
        <input type="password" value={value} onInput={(e) => setValue((e.currentTarget as HTMLInputElement).value)} aria-invalid={error ? 'true' : undefined} />
      </label>
      {error && (
        <p class="alert" role="alert">
          {error}
        </p>
      )}
      <p>
        <button class="primary" type="submit" disabled={value.trim() === ''}>
          Continue
        </button>
      </p>
    </form>
  );
}

function Uploader({ info, onSignOut }: { info: TokenInfo; onSignOut: () => void }) {
  const [, setTick] = useState(0);
  const bump = () => setTick((n) => n + 1);
  const [over, setOver] = useState(false);
  const [online, setOnline] = useState(navigator.onLine);
  const [notice, setNotice] = useState<string | null>(null);
  const input = useRef<HTMLInputElement>(null);
  const up = useMemo(() => createUploader(info, new URL('/tus/', location.href).href, bump), [info.token]);
  useEffect(() => {
    const on = () => setOnline(navigator.onLine);
    window.addEventListener('online', on);
    window.addEventListener('offline', on);
    up.uppy.on('restriction-failed', (_file, err) => setNotice(err.message));
    up.uppy.on('info-visible', () => {
      const info2 = up.uppy.getState().info[0];
      if (info2 && info2.type === 'error') setNotice(info2.message);
    });
    return () => {
      window.removeEventListener('online', on);
      window.removeEventListener('offline', on);
      up.destroy();
    };
  }, [up]);
  const files = up.view();
  const expired = info.expiresAt <= Date.now();
  const pick = () => input.current?.click();
  return (
    <main>
      <h2>Upload files</h2>
      <p style={{ color: 'var(--muted)' }}>
        Files go to <strong>{info.prefix ? `${info.prefix}/` : '(your folder)'}</strong>, up to {formatBytes(info.maxSize)} each. This link works until{' '}
        {new Date(info.expiresAt).toLocaleString()}.{' '}
        <button type="button" onClick={onSignOut}>
          Use another link
        </button>
      </p>
      {!online && (
        <p class="alert" role="status" data-testid="offline">
          You are offline. Uploads continue by themselves when the connection is back.
        </p>
      )}
      {expired && (
        <p class="alert" role="alert">
          This upload link has expired: ask for a new one.
        </p>
      )}
      {notice && (
        <p class="alert" role="alert">
          {notice}
        </p>
      )}
      <button
        type="button"
        class={`dropzone${over ? ' over' : ''}`}
        aria-label="Add files: drop them here, or press Enter to choose"
        data-testid="dropzone"
        onClick={pick}
        onDragOver={(e) => {
          e.preventDefault();
          setOver(true);
        }}
        onDragLeave={() => setOver(false)}
        onDrop={(e) => {
          e.preventDefault();
          setOver(false);
          if (e.dataTransfer?.files) up.add(e.dataTransfer.files);
        }}
      >
        <strong>Drop files here</strong> or click to choose
      </button>
      <input
        ref={input}
        type="file"
        multiple
        hidden
        data-testid="file-input"
        onChange={(e) => {
          const el = e.currentTarget as HTMLInputElement;
          if (el.files) up.add(el.files);
          el.value = '';
        }}
      />
      {files.length === 0 ? (
        <p class="state">No files yet.</p>
      ) : (
        <ul class="files" aria-label="Uploads">
          {files.map((f) => (
            <li key={f.id} data-file={f.name} data-status={f.status}>
              <div class="row" style={{ justifyContent: 'space-between' }}>
                <span class="name">{f.path}</span>
                <span class={`badge ${f.status === 'done' ? 'succeeded' : f.status === 'error' ? 'failed' : 'processing'}`} data-testid="file-status">
                  {STATUS_TEXT[f.status]}
                </span>
              </div>
              <progress max={100} value={f.percent} aria-label={`${f.name} progress`} />
              <div class="row" style={{ justifyContent: 'space-between', fontSize: '0.85rem', color: 'var(--muted)' }}>
                <span>
                  {formatBytes(f.uploaded)} of {formatBytes(f.size)} ({f.percent}%){f.speed > 0 ? `, ${formatBytes(f.speed)}/s` : ''}
                </span>
                <span class="row">
                  {(f.status === 'uploading' || f.status === 'paused') && (
                    <button type="button" onClick={() => up.pauseResume(f.id)} aria-label={`${f.status === 'paused' ? 'Resume' : 'Pause'} ${f.name}`}>
                      {f.status === 'paused' ? 'Resume' : 'Pause'}
                    </button>
                  )}
                  {f.status === 'error' && (
                    <button type="button" onClick={() => up.retry(f.id)} aria-label={`Retry ${f.name}`}>
                      Retry
                    </button>
                  )}
                  {f.status !== 'uploading' && (
                    <button type="button" onClick={() => up.remove(f.id)} aria-label={`Remove ${f.name} from the list`}>
                      Remove
                    </button>
                  )}
                </span>
              </div>
              {f.error && <p class="field-error">{f.error}</p>}
            </li>
          ))}
        </ul>
      )}
    </main>
  );
}

function Page() {
  const [info, setInfo] = useState<TokenInfo | null>(() => takeToken());
  if (!info)
    return (
      <main>
        <TokenForm onToken={setInfo} />
      </main>
    );
  return (
    <Uploader
      info={info}
      onSignOut={() => {
        clearToken();
        setInfo(null);
      }}
    />
  );
}

const root = document.getElementById('app');
if (root) render(<Page />, root);

import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import fc from 'fast-check';
import { AppError, ErrorCode } from '../src/errors.js';
import { FS_TMP_DIR, FsStorage } from '../src/storage/fs.js';
import { MAX_KEY_BYTES, objectKey, validateClientPath } from '../src/uploads/keys.js';
import { BACKENDS, startTestServer, type TestServer } from './helpers/server.js';

// ---------------------------------------------------------------------------
// The oracle: what an accepted path must look like, however a later layer
// (a proxy, the store, a tool) decodes or normalizes it.
// ---------------------------------------------------------------------------

/** Decode every %XX run as UTF-8, leniently (invalid bytes become U+FFFD), never throwing. */
function lenientDecode(s: string): string {
  return s.replace(/(?:%[0-9A-Fa-f]{2})+/g, (run) => Buffer.from(run.replaceAll('%', ''), 'hex').toString('utf8'));
}

/** Every spelling reachable by NFC/NFKC normalization and repeated percent-decoding. */
function spellings(s: string): Set<string> {
  const seen = new Set<string>([s]);
  const queue = [s];
  while (queue.length > 0 && seen.size < 200) {
    const cur = queue.shift() as string;
    for (const next of [cur.normalize('NFC'), cur.normalize('NFKC'), lenientDecode(cur)]) {
      if (!seen.has(next)) {
        seen.add(next);
        queue.push(next);
      }
    }
  }
  return seen;
}

// C0, DEL, C1 and the Unicode line/paragraph separators.
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;

function assertSafeSpelling(form: string, input: string): void {
  const ctx = `input ${JSON.stringify(input)} -> spelling ${JSON.stringify(form)}`;
  assert.ok(!form.includes('\\'), `backslash: ${ctx}`);
  assert.ok(!CONTROL.test(form), `control character: ${ctx}`);
  assert.ok(!form.startsWith('/'), `absolute: ${ctx}`);
  for (const seg of form.split('/')) {
    assert.ok(seg !== '' && seg !== '.' && seg !== '..', `bad segment ${JSON.stringify(seg)}: ${ctx}`);
  }
}

// ---------------------------------------------------------------------------
// Arbitraries biased towards traversal material.
// ---------------------------------------------------------------------------

const NASTY = [
  '..',
  '.',
  '/',
  '\\',
  '%2e',
  '%2E',
  '%2f',
  '%2F',
  '%5c',
  '%5C',
  '%25',
  '%',
  '%252e',
  '%252f',
  '%25252e',
  '%c0%ae',
  '%e2%80%a8',
  '%ef%bc%8e',
  '%EF%BC%8F',
  '\u0000',
  '%00',
  '\r',
  '\n',
  '\u0085',
  '\u2028',
  '．', // FULLWIDTH FULL STOP -> '.'
  '／', // FULLWIDTH SOLIDUS -> '/'
  '＼', // FULLWIDTH REVERSE SOLIDUS -> '\'
  '％', // FULLWIDTH PERCENT SIGN -> '%'
  '２ｅ',
  '\u2024', // ONE DOT LEADER -> '.'
  '\u2025', // TWO DOT LEADER -> '..'
  '\ufe52', // SMALL FULL STOP -> '.'
  '\u0301', // combining acute
  '\u0338', // combining long solidus overlay
  '\u200b',
  '\u202e',
  'e\u0301',
  ' ',
  'C:',
  '~',
  'a',
  'b',
  'é',
  '\ud800', // lone surrogate
];

const token = fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...NASTY) }, { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 3 }) });

const pathInput = fc.oneof(
  { weight: 6, arbitrary: fc.array(token, { maxLength: 14 }).map((t) => t.join('')) },
  // Plausible paths with one nasty piece spliced in.
  {
    weight: 3,
    arbitrary: fc
      .tuple(
        fc.array(fc.constantFrom('docs', 'a', 'x.txt', 'ü', '2024'), { maxLength: 3 }),
        fc.constantFrom('/', '\\', '%2f', '／'),
        token,
        fc.array(token, { maxLength: 3 }),
      )
      .map(([segs, sep, t, rest]) => [...segs, t + rest.join('')].join(sep)),
  },
  { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 40 }) },
  { weight: 1, arbitrary: fc.string({ unit: 'grapheme', maxLength: 40 }) },
  // Long strings: key and segment limits.
  { weight: 1, arbitrary: fc.array(token, { minLength: 80, maxLength: 600 }).map((t) => t.join('')) },
  { weight: 1, arbitrary: fc.tuple(fc.integer({ min: 200, max: 1200 }), fc.constantFrom('a', 'é', '/a')).map(([n, c]) => c.repeat(n)) },
);

const clientName = fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9_-]{0,20}$/);
const prefix = fc.constantFrom('', 'backups/', 'a/b/', 'team-1/');

describe('path security: property (fast-check)', () => {
  let root: string;
  let fsStore: FsStorage;
  before(async () => {
    root = mkdtempSync(path.join(os.tmpdir(), 's3up-keys-'));
    fsStore = await FsStorage.open(root);
  });
  after(() => rmSync(root, { recursive: true, force: true }));

  it('any input is refused with INVALID_PATH or yields a key inside {prefix}{client}/ on both backends', () => {
    let accepted = 0;
    let refused = 0;
    fc.assert(
      fc.property(pathInput, clientName, prefix, (input, client, pfx) => {
        let result: { path: string; key: string };
        try {
          result = objectKey(pfx, client, input);
        } catch (err) {
          assert.ok(err instanceof AppError, `not an AppError: ${String(err)}`);
          assert.equal(err.code, ErrorCode.INVALID_PATH);
          assert.equal(err.status, 400);
          refused++;
          return;
        }
        accepted++;
        const { path: rel, key } = result;
        const base = `${pfx}${client}/`;
        // S3: the key string itself stays in the prefix, byte for byte.
        assert.ok(key.startsWith(base), `key ${JSON.stringify(key)} outside ${base}`);
        assert.equal(key, base + rel);
        assert.equal(path.posix.normalize(key), key, 'a key never changes under path normalization');
        assert.ok(Buffer.byteLength(key, 'utf8') <= MAX_KEY_BYTES);
        assert.ok(rel.isWellFormed());
        assert.equal(rel, rel.normalize('NFC'), 'the stored path is NFC');
        for (const form of spellings(rel)) assertSafeSpelling(form, input);
        for (const form of spellings(input)) assertSafeSpelling(form, input);
        // Filesystem: the file resolves inside root/prefix/client.
        const file = fsStore.pathFor(key);
        const clientDir = path.join(root, ...pfx.split('/').filter(Boolean), client);
        assert.ok(file.startsWith(clientDir + path.sep), `${file} outside ${clientDir}`);
        assert.equal(file, path.join(clientDir, ...rel.split('/')));
        assert.equal(validateClientPath(rel), rel, 'validation is idempotent');
      }),
      { numRuns: 4000 },
    );
    // Not a vacuous property: both outcomes occur often.
    assert.ok(accepted > 200, `accepted ${accepted}`);
    assert.ok(refused > 200, `refused ${refused}`);
  });

  it('known spellings of traversal are refused', () => {
    for (const attack of ATTACKS) {
      assert.throws(
        () => objectKey('backups/', 'alice', attack),
        (err: unknown) => err instanceof AppError && err.code === ErrorCode.INVALID_PATH,
        JSON.stringify(attack),
      );
    }
    for (const ok of ['a.txt', 'docs/2024/report.pdf', '...', 'a..b/c', '.hidden', 'ünïcödé/文件.txt', '100%', 'a%zz', 'a b/c d']) {
      assert.equal(objectKey('backups/', 'alice', ok).key, `backups/alice/${ok.normalize('NFC')}`, ok);
    }
  });
});

/** Attack paths (client-relative, before any URL encoding). Every one must be refused. */
const ATTACKS = [
  // Overlong UTF-8 escapes of "." and a lone continuation byte: not valid UTF-8, refused.
  '%c0%ae%c0%ae/pwned',
  'x%c0%ae',
  'a/%80b',
  '..',
  '.',
  '../pwned',
  '../../pwned',
  '../bob/secret.txt',
  './pwned',
  'a/../../pwned',
  'a/./b',
  'a/..',
  '/etc/passwd',
  '//pwned',
  'a//b',
  'a/',
  '',
  ' ',
  'a/ /b',
  '..\\pwned',
  'a\\..\\..\\pwned',
  'C:\\pwned',
  'C:/pwned',
  'a\u0000b',
  'a/\u0001',
  'a\r\nx-injected: 1',
  'a\u2028b',
  '%2e%2e/pwned',
  '%2e%2e%2fpwned',
  '..%2fpwned',
  '%2E%2E%5Cpwned',
  '%252e%252e/pwned',
  '%252e%252e%252fpwned',
  '%25252e%25252e/pwned',
  'a/%2e/b',
  'a%00b',
  '．．/pwned',
  '．．／pwned',
  'a／..／..／pwned',
  '\u2025/pwned',
  '\ufe52\ufe52/pwned',
  '％２ｅ％２ｅ/pwned',
  '%ef%bc%8e%ef%bc%8e/pwned',
  '%2e%2e/pwned%',
  '%2e%2e/%zz',
  `${'a'.repeat(300)}/x`,
  `${'a/'.repeat(600)}x`,
  '\ud800',
];

// ---------------------------------------------------------------------------
// Over HTTP, on both backends.
// ---------------------------------------------------------------------------

/** A request whose path goes on the wire as given (fetch would normalize "/../"). */
function rawRequest(
  base: string,
  method: string,
  rawPath: string,
  headers: Record<string, string>,
  body?: Buffer,
): Promise<{ status: number; json: Record<string, unknown> | undefined }> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: u.hostname, port: u.port, method, path: rawPath, headers: { ...headers, ...(body ? { 'content-length': String(body.length) } : {}) } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let json: Record<string, unknown> | undefined;
          try {
            json = text ? (JSON.parse(text) as Record<string, unknown>) : undefined;
          } catch {
            json = undefined;
          }
          resolve({ status: res.statusCode ?? 0, json });
        });
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/** Spell a path for a URL: segment-wise (keeps '/'), and fully encoded (%2F). */
function urlSpellings(p: string): string[] {
  const out = new Set<string>();
  if (p.isWellFormed()) {
    out.add(encodeURIComponent(p));
    out.add(p.split('/').map(encodeURIComponent).join('/'));
  }
  // As typed, when the HTTP client accepts it on the wire.
  if (/^[\x21-\x7e]*$/.test(p) && !p.includes('?') && !p.includes('#')) out.add(p);
  return [...out];
}

function decodable(s: string): boolean {
  try {
    decodeURIComponent(s);
    return true;
  } catch {
    return false;
  }
}

/** Every entry below `dir`, relative, folders with a trailing '/'. */
function walk(dir: string, rel = ''): string[] {
  const out: string[] = [];
  for (const name of readdirSync(path.join(dir, rel))) {
    const r = rel ? `${rel}/${name}` : name;
    if (statSync(path.join(dir, r)).isDirectory()) out.push(`${r}/`, ...walk(dir, r));
    else out.push(r);
  }
  return out;
}

for (const backend of BACKENDS) {
  describe(`path security over HTTP (${backend})`, () => {
    let t: TestServer;
    before(async () => {
      t = await startTestServer({ backend });
    });
    after(async () => {
      await t.stop();
    });

    it('PUT /objects, POST /upload, GET /download and /exists refuse every attack with 400 INVALID_PATH and write nothing', async () => {
      const ok = await fetch(`${t.url}/objects/ok/inside.txt`, { method: 'PUT', headers: t.auth('alice'), body: 'inside' });
      assert.equal(ok.status, 200);

      const failures: string[] = [];
      const expect400 = (what: string, r: { status: number; json: Record<string, unknown> | undefined }) => {
        if (r.status !== 400 || r.json?.error_code !== ErrorCode.INVALID_PATH || typeof r.json.request_id !== 'string') {
          failures.push(`${what} -> ${r.status} ${JSON.stringify(r.json)}`);
        }
      };
      const body = Buffer.from('pwned');
      for (const attack of ATTACKS) {
        for (const spelled of urlSpellings(attack)) {
          if (!decodable(spelled)) {
            // Not valid percent-encoding: the router refuses the URL itself, still in the error contract.
            for (const method of ['PUT', 'GET', 'DELETE']) {
              const r = await rawRequest(t.url, method, `/objects/${spelled}`, t.auth('alice'), method === 'PUT' ? body : undefined);
              if (r.status !== 400 || r.json?.error_code !== ErrorCode.INVALID_REQUEST || typeof r.json.request_id !== 'string') {
                failures.push(`${method} /objects/${spelled} -> ${r.status} ${JSON.stringify(r.json)}`);
              }
            }
            continue;
          }
          expect400(`PUT /objects/${spelled}`, await rawRequest(t.url, 'PUT', `/objects/${spelled}`, t.auth('alice'), body));
          expect400(`GET /objects/${spelled}`, await rawRequest(t.url, 'GET', `/objects/${spelled}`, t.auth('alice')));
          expect400(`DELETE /objects/${spelled}`, await rawRequest(t.url, 'DELETE', `/objects/${spelled}`, t.auth('alice')));
        }
        if (attack.isWellFormed()) {
          const q = encodeURIComponent(attack);
          expect400(`GET /download?path=${q}`, await rawRequest(t.url, 'GET', `/download?path=${q}`, t.auth('alice')));
          expect400(`GET /exists?path=${q}`, await rawRequest(t.url, 'GET', `/exists?path=${q}`, t.auth('alice')));
          const form = new FormData();
          form.append('path', attack);
          form.append('file', new Blob([body]), 'pwned.txt');
          const res = await fetch(`${t.url}/upload`, { method: 'POST', headers: t.auth('alice'), body: form });
          expect400(`POST /upload path=${JSON.stringify(attack)}`, { status: res.status, json: (await res.json()) as Record<string, unknown> });
        }
      }
      assert.deepEqual(failures, []);

      // Nothing landed anywhere but the one legitimate object.
      if (backend === 'fs') {
        const uploads = path.join(t.dir, 'uploads');
        // The store holds the one legitimate object; its staging area holds no leftover file.
        const files = walk(uploads).filter((f) => !(f.startsWith(`${FS_TMP_DIR}/`) && f.endsWith('/')));
        assert.deepEqual(files.sort(), ['backups/', 'backups/alice/', 'backups/alice/ok/', 'backups/alice/ok/inside.txt']);
        // Nothing named after an attack anywhere in the test's folder.
        assert.deepEqual(
          walk(t.dir).filter((f) => f.includes('pwned')),
          [],
        );
        for (const attack of ATTACKS.filter((a) => a.includes('pwned'))) {
          // Where a naive join would have put it.
          const naive = path.resolve(uploads, 'backups', 'alice', attack.replaceAll('\\', '/').replace(/\0/g, ''));
          if (!naive.startsWith(t.dir)) {
            try {
              statSync(naive);
              assert.fail(`something exists at ${naive}`);
            } catch (err) {
              assert.equal((err as NodeJS.ErrnoException).code, 'ENOENT');
            }
          }
        }
      } else {
        const s3rver = t.s3rver;
        assert.ok(s3rver);
        const client = new S3Client({
          endpoint: s3rver.endpoint,
          region: 'us-east-1',
          forcePathStyle: true,
          credentials: { accessKeyId: s3rver.accessKeyId, secretAccessKey: s3rver.secretAccessKey },
        });
        try {
          const list = await client.send(new ListObjectsV2Command({ Bucket: s3rver.bucket }));
          assert.deepEqual(
            (list.Contents ?? []).map((o) => o.Key),
            ['backups/alice/ok/inside.txt'],
          );
        } finally {
          client.destroy();
        }
      }
    });
  });
}

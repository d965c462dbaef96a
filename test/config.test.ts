// biome-ignore-all lint/suspicious/noTemplateCurlyInString: the ${VAR} syntax of the YAML config is what these tests exercise
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { HeadObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { ConfigError, loadConfig } from '../src/config/load.js';
import { runBin, spawnBin } from './helpers/bin.js';
import { type S3rverProcess, startS3rver } from './helpers/s3rver.js';

const KEY = `sk_cfg_${'k'.repeat(40)}`;
const CLIENT = `clients:\n  - { name: app, api_key: "${KEY}", max_file_size_mb: 1 }\n`;

function tempDir(): string {
  return mkdtempSync(path.join(os.tmpdir(), 's3up-config-'));
}

function write(dir: string, name: string, text: string): string {
  const file = path.join(dir, name);
  writeFileSync(file, text);
  return file;
}

function sha256(s: string): string {
  return createHash('sha256').update(s).digest('hex');
}

describe('config: ${VAR} interpolation and environment overrides', () => {
  let dir: string;
  before(() => {
    dir = tempDir();
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('replaces ${VAR} and ${VAR:-default} anywhere in the tree, values only once', () => {
    write(
      dir,
      'interp.yaml',
      [
        'server:',
        '  host: ${BIND_HOST:-127.0.0.9}',
        '  port: ${BIND_PORT:-8181}',
        'storage:',
        '  backend: fs',
        '  fs: { root: "${DATA_ROOT}/uploads" }',
        's3:',
        '  region: "${REGION:-eu-west-3}"',
        '  bucket: "b-${BUCKET_A:-x}-${BUCKET_B}"',
        '  access_key_id: "${EMPTY_OK:-}"',
        '  secret_access_key: "${SECRET}"',
        'clients:',
        '  - { name: app, api_key: "${APP_KEY}", max_file_size_mb: "${APP_MB:-3}" }',
        '',
      ].join('\n'),
    );
    const env = { DATA_ROOT: '/srv/data', BUCKET_B: 'y', SECRET: 'has ${NESTED} literally', APP_KEY: KEY, BIND_PORT: '' };
    const c = loadConfig({ configPath: 'interp.yaml', env, cwd: dir });
    assert.equal(c.host, '127.0.0.9');
    assert.equal(c.port, 8181, 'an empty variable takes the default');
    assert.deepEqual(c.storage, { backend: 'fs', root: '/srv/data/uploads', pathPrefix: '' });
    assert.equal(c.raw.s3.region, 'eu-west-3');
    assert.equal(c.raw.s3.bucket, 'b-x-y');
    assert.equal(c.raw.s3.access_key_id, '');
    assert.equal(c.raw.s3.secret_access_key, 'has ${NESTED} literally', 'substituted text is not interpolated again');
    assert.equal(c.clients[0]?.maxFileSize, 3 * 1024 * 1024);
    assert.deepEqual(c.clients[0]?.keyHash, Buffer.from(sha256(KEY), 'hex'));

    const c2 = loadConfig({ configPath: 'interp.yaml', env: { ...env, BIND_HOST: '0.0.0.0', REGION: 'ap-south-1', BUCKET_A: 'z' }, cwd: dir });
    assert.equal(c2.host, '0.0.0.0');
    assert.equal(c2.raw.s3.region, 'ap-south-1');
    assert.equal(c2.raw.s3.bucket, 'b-z-y');
  });

  it('environment overrides win over the file (spec 000 names, DATABASE_URL, PORT)', () => {
    write(
      dir,
      'base.yaml',
      `server: { port: 8080 }\nstorage: { backend: fs }\ns3: { endpoint: "http://file", region: file-region, bucket: file-bucket, force_path_style: false }\ndatabase: { url: "sqlite:./file.db" }\n${CLIENT}`,
    );
    const env = {
      STORAGE_BACKEND: 's3',
      S3_ENDPOINT: 'http://127.0.0.1:9000',
      S3_REGION: 'eu-central-1',
      S3_BUCKET: 'env-bucket',
      S3_ACCESS_KEY: 'AKIAENV',
      S3_SECRET_KEY: 'env-secret',
      S3_FORCE_PATH_STYLE: 'true',
      DATABASE_URL: 'postgres://u:p@db.example:5432/s3up',
      PORT: '9099',
    };
    const c = loadConfig({ configPath: 'base.yaml', env, cwd: dir });
    assert.equal(c.storage.backend, 's3');
    assert.equal(c.port, 9099);
    assert.equal(c.databaseUrl, env.DATABASE_URL);
    assert.equal(c.raw.s3.endpoint, env.S3_ENDPOINT);
    assert.equal(c.raw.s3.region, env.S3_REGION);
    assert.equal(c.raw.s3.bucket, env.S3_BUCKET);
    assert.equal(c.raw.s3.access_key_id, env.S3_ACCESS_KEY);
    assert.equal(c.raw.s3.secret_access_key, env.S3_SECRET_KEY);
    assert.equal(c.raw.s3.force_path_style, true);

    const none = loadConfig({ configPath: 'base.yaml', env: {}, cwd: dir });
    assert.equal(none.storage.backend, 'fs');
    assert.equal(none.port, 8080);
    assert.equal(none.databaseUrl, `sqlite:${path.join(dir, 'file.db')}`, 'sqlite paths resolve against the working directory');
    assert.equal(none.raw.s3.force_path_style, false);

    // Booleans from the environment: the usual spellings, in any case.
    for (const [v, want] of [
      ['1', true],
      ['TRUE', true],
      ['Yes', true],
      ['on', true],
      ['false', false],
      ['0', false],
      ['No', false],
    ] as const) {
      const b = loadConfig({ configPath: 'base.yaml', env: { S3_FORCE_PATH_STYLE: v }, cwd: dir });
      assert.equal(b.raw.s3.force_path_style, want, `S3_FORCE_PATH_STYLE=${v}`);
    }
    // A CLI flag beats the environment.
    assert.equal(loadConfig({ configPath: 'base.yaml', env: { PORT: '9099' }, cwd: dir, port: 0 }).port, 0);
  });

  it('a bad environment override names the variable, the key and the problem', () => {
    write(dir, 'nobucket.yaml', CLIENT);
    for (const [env, name, key, file = 'base.yaml'] of [
      [{ PORT: 'eighty' }, 'PORT', 'server.port'],
      [{ PORT: '70000' }, 'PORT', 'server.port'],
      [{ STORAGE_BACKEND: 'ftp' }, 'STORAGE_BACKEND', 'storage.backend'],
      [{ S3_FORCE_PATH_STYLE: 'maybe' }, 'S3_FORCE_PATH_STYLE', 's3.force_path_style'],
      [{ STORAGE_BACKEND: 's3' }, 'STORAGE_BACKEND', 's3.bucket', 'nobucket.yaml'],
      [{ DATABASE_URL: 'mysql://x' }, 'DATABASE_URL', 'database.url'],
    ] as Array<[NodeJS.ProcessEnv, string, string, string?]>) {
      assert.throws(
        () => loadConfig({ configPath: file, env, cwd: dir }),
        (err: unknown) => {
          assert.ok(err instanceof ConfigError, String(err));
          assert.match(err.message, new RegExp(`environment variable ${name}: ${key.replace('.', '\\.')}: \\S`));
          assert.doesNotMatch(err.message, /\n/);
          assert.doesNotMatch(err.message, /Invalid input$/, 'the problem must say what is expected');
          return true;
        },
        JSON.stringify(env),
      );
    }
  });
});

/** Bad configurations: [name, YAML, key named in the message, problem pattern, env]. */
const BAD: Array<[string, string, string, RegExp, NodeJS.ProcessEnv?]> = [
  ['unknown-key', `server: { host: 127.0.0.1, prot: 8080 }\n${CLIENT}`, 'server', /unknown key\(s\): prot/],
  ['unknown-client-key', `clients:\n  - { name: app, apikey: "${KEY}", max_file_size_mb: 1 }\n`, 'clients[0]', /unknown key\(s\): apikey/],
  ['short-api-key', 'clients:\n  - { name: app, api_key: "sk_short", max_file_size_mb: 1 }\n', 'clients[0].api_key', /at least 32 characters/],
  ['bad-sha256', `clients:\n  - { name: app, api_key_sha256: "${'g'.repeat(64)}", max_file_size_mb: 1 }\n`, 'clients[0].api_key_sha256', /64 hex/],
  ['short-sha256', `clients:\n  - { name: app, api_key_sha256: "${'a'.repeat(63)}", max_file_size_mb: 1 }\n`, 'clients[0].api_key_sha256', /64 hex/],
  ['no-key', 'clients:\n  - { name: app, max_file_size_mb: 1 }\n', 'clients[0]', /exactly one of api_key or api_key_sha256/],
  [
    'duplicate-client',
    `clients:\n  - { name: app, api_key: "${KEY}", max_file_size_mb: 1 }\n  - { name: app, api_key: "${KEY}x", max_file_size_mb: 1 }\n`,
    'clients[1].name',
    /duplicate client name "app"/,
  ],
  ['bad-client-name', `clients:\n  - { name: "../x", api_key: "${KEY}", max_file_size_mb: 1 }\n`, 'clients[0].name', /letters, digits/],
  ['no-clients', 'server: { port: 8080 }\n', 'clients', /at least one client/],
  ['s3-without-bucket', `storage: { backend: s3 }\n${CLIENT}`, 's3.bucket', /bucket is required/],
  ['tls-without-files', `server: { tls: { enabled: true } }\n${CLIENT}`, 'server.tls', /cert_file and key_file are required/],
  [
    'tls-missing-file',
    `server: { tls: { enabled: true, cert_file: nope.pem, key_file: nope.key } }\n${CLIENT}`,
    'server.tls.cert_file',
    /cannot read .*nope\.pem \(ENOENT\)/,
  ],
  ['invalid-yaml', `server: { host: [127.0.0.1\n${CLIENT}`, 'line 2', /not valid YAML: \S/],
  ['duplicate-yaml-key', `server: { port: 1 }\nserver: { port: 2 }\n${CLIENT}`, 'line 2', /not valid YAML: Map keys must be unique/],
  ['not-a-mapping', '- just\n- a list\n', '', /the top level must be a mapping/],
  [
    'missing-env',
    `s3:\n  secret_access_key: "\${S3UP_TEST_UNSET_SECRET}"\n${CLIENT}`,
    's3.secret_access_key',
    /environment variable S3UP_TEST_UNSET_SECRET is not set/,
  ],
  ['bad-port', `server: { port: 99999 }\n${CLIENT}`, 'server.port', /65535/],
  ['bad-prefix', `s3: { path_prefix: "a/../b" }\n${CLIENT}`, 's3.path_prefix', /invalid segment/],
  ['bad-database', `database: { url: "mysql://db/x" }\n${CLIENT}`, 'database.url', /sqlite: or postgres:/],
  ['no-max-size', `clients:\n  - { name: app, api_key: "${KEY}" }\n`, 'clients[0].max_file_size_mb', /is required: the client's upload limit in MiB/],
  [
    's3-half-credentials',
    `storage: { backend: s3 }\ns3: { bucket: b-1, access_key_id: AKIA0123 }\n${CLIENT}`,
    's3.secret_access_key',
    /is required with s3\.access_key_id \(set both, or neither/,
  ],
];

describe('config: where a bad value came from', () => {
  it('a bad --port or --host is blamed on the option, not on the file or the embedded defaults', () => {
    const dir = tempDir();
    try {
      for (const configPath of [undefined, write(dir, 'ok.yaml', CLIENT)]) {
        assert.throws(
          () => loadConfig({ configPath, env: {}, cwd: dir, dataDir: dir, port: 99999 }),
          (err: unknown) => err instanceof ConfigError && /^config error in the --port option: server\.port: .*65535/.test(err.message),
        );
        assert.throws(
          () => loadConfig({ configPath, env: {}, cwd: dir, dataDir: dir, host: '' }),
          (err: unknown) => err instanceof ConfigError && err.message.startsWith('config error in the --host option: server.host: '),
        );
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('the real bin: --port 99999 exits 2 with one line naming the option', async () => {
    const dir = tempDir();
    try {
      const r = await runBin(['--port', '99999'], { cwd: dir });
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /^s3up-server: config error in the --port option: server\.port: .*65535\)\n$/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('S3 without keys works through the SDK default chain but warns; with keys (or on fs) no warning', () => {
    const s3NoKeys = loadConfig({ configPath: undefined, env: { STORAGE_BACKEND: 's3', S3_BUCKET: 'b-1' }, cwd: os.tmpdir(), dataDir: tempDir() });
    assert.equal(s3NoKeys.warnings.length, 1);
    assert.match(s3NoKeys.warnings[0] ?? '', /^s3: no access_key_id \/ secret_access_key configured .*default chain/);
    const withKeys = loadConfig({
      env: { STORAGE_BACKEND: 's3', S3_BUCKET: 'b-1', S3_ACCESS_KEY: 'id', S3_SECRET_KEY: 'secret' },
      cwd: os.tmpdir(),
      dataDir: tempDir(),
    });
    assert.deepEqual(withKeys.warnings, []);
    assert.deepEqual(loadConfig({ env: {}, cwd: os.tmpdir(), dataDir: tempDir() }).warnings, []);
  });
});

/** The ones also run through the real bin (each costs a process start). */
const BIN_CASES = new Set([
  'unknown-key',
  'short-api-key',
  'bad-sha256',
  'duplicate-client',
  's3-without-bucket',
  'tls-without-files',
  'invalid-yaml',
  'missing-env',
  'not-a-mapping',
]);

describe('config: a bad configuration fails with one line naming the file, the key and the problem', () => {
  let dir: string;
  before(() => {
    dir = tempDir();
    for (const [name, yaml] of BAD) write(dir, `${name}.yaml`, yaml);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  function expectedLine(name: string, key: string, problem: RegExp): RegExp {
    const file = path.join(dir, `${name}.yaml`).replace(/[.[\]()]/g, '\\$&');
    const k = key ? `: ${key.replace(/[.[\]()]/g, '\\$&')}` : '';
    return new RegExp(`^config error in ${file}${k}: .*${problem.source}`);
  }

  for (const [name, , key, problem, env] of BAD) {
    it(`loadConfig: ${name}`, () => {
      assert.throws(
        () => loadConfig({ configPath: `${name}.yaml`, env: env ?? {}, cwd: dir }),
        (err: unknown) => {
          assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`);
          assert.doesNotMatch(err.message, /\n/);
          assert.match(err.message, expectedLine(name, key, problem));
          assert.ok(!err.message.includes(KEY), 'the message must not echo a key');
          assert.doesNotMatch(err.message, /:$/, 'the problem is complete');
          return true;
        },
      );
    });
  }

  it('a missing file, and a config named by S3UP_CONFIG', () => {
    assert.throws(
      () => loadConfig({ configPath: 'nope.yaml', env: {}, cwd: dir }),
      (err: unknown) =>
        err instanceof ConfigError && err.message === `config error in ${path.join(dir, 'nope.yaml')}: cannot read ${path.join(dir, 'nope.yaml')} (ENOENT)`,
    );
    assert.throws(
      () => loadConfig({ env: { S3UP_CONFIG: 'short-api-key.yaml' }, cwd: dir }),
      (err: unknown) => err instanceof ConfigError && err.message.startsWith(`config error in ${path.join(dir, 'short-api-key.yaml')}: clients[0].api_key:`),
    );
  });

  it('the real bin exits 2 with exactly one stderr line and no stack trace', async () => {
    const cases: typeof BAD = [...BAD.filter(([name]) => BIN_CASES.has(name)), ['missing-file', '', '', /cannot read .*missing-file\.yaml \(ENOENT\)/]];
    rmSync(path.join(dir, 'missing-file.yaml'), { force: true });
    assert.equal(cases.length, BIN_CASES.size + 1);
    const results: Array<Awaited<ReturnType<typeof runBin>>> = [];
    // A few at a time: each is a Node process compiling TypeScript.
    for (let i = 0; i < cases.length; i += 3) {
      results.push(
        ...(await Promise.all(cases.slice(i, i + 3).map(([name, , , , env]) => runBin(['--config', `${name}.yaml`], { cwd: dir, env: env ?? {} })))),
      );
    }
    for (const [i, [name, , key, problem]] of cases.entries()) {
      const r = results[i];
      assert.ok(r);
      assert.equal(r.code, 2, `${name}: exit code (stderr: ${r.stderr})`);
      const lines = r.stderr.split('\n').filter((l) => l !== '');
      assert.equal(lines.length, 1, `${name}: one stderr line, got:\n${r.stderr}`);
      const line = lines[0] ?? '';
      assert.ok(line.startsWith('s3up-server: '), line);
      assert.match(line.slice('s3up-server: '.length), expectedLine(name, key, problem));
      assert.doesNotMatch(r.stderr, /^\s+at /m, `${name}: stack trace`);
      assert.equal(r.stdout, '', `${name}: nothing on stdout`);
    }
  });
});

async function busyPort(): Promise<{ port: number; close(): Promise<void> }> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as net.AddressInfo).port;
  return { port, close: () => new Promise((r) => srv.close(() => r())) };
}

describe('config: environment overrides in a real gateway process', () => {
  let dir: string;
  let s3: S3rverProcess;
  before(async () => {
    dir = tempDir();
    s3 = await startS3rver('env-bucket');
  });
  after(async () => {
    await s3.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('STORAGE_BACKEND, S3_*, DATABASE_URL and PORT take effect; keygen hashes authenticate', async () => {
    const keygen = await runBin(['keygen'], { cwd: dir });
    assert.equal(keygen.code, 0, keygen.stderr);
    const m = /^api_key: (\S+)\napi_key_sha256: ([0-9a-f]{64})\n$/.exec(keygen.stdout);
    assert.ok(m, `keygen output: ${keygen.stdout}`);
    const [, key = '', hash = ''] = m;
    assert.ok(key.length >= 32, `key length ${key.length}`);
    assert.equal(hash, sha256(key), 'the printed hash is the SHA-256 of the key');
    const again = await runBin(['keygen'], { cwd: dir });
    assert.ok(!again.stdout.includes(key), 'each run prints a new key');

    // The file asks for a port someone else holds and for the filesystem; the environment must win.
    const busy = await busyPort();
    try {
      write(
        dir,
        'server.yaml',
        [
          `server: { host: 127.0.0.1, port: ${busy.port}, log_level: info }`,
          `storage: { backend: fs, fs: { root: ./fs-root } }`,
          `s3: { bucket: wrong-bucket, path_prefix: "team/" }`,
          `database: { url: "sqlite:./file.db" }`,
          'clients:',
          `  - { name: ops, api_key_sha256: "${hash.toUpperCase()}", max_file_size_mb: 1 }`,
          '',
        ].join('\n'),
      );
      const gw = spawnBin(['--config', 'server.yaml'], {
        cwd: dir,
        env: {
          STORAGE_BACKEND: 's3',
          S3_ENDPOINT: s3.endpoint,
          S3_REGION: 'us-east-1',
          S3_BUCKET: s3.bucket,
          S3_ACCESS_KEY: s3.accessKeyId,
          S3_SECRET_KEY: s3.secretAccessKey,
          S3_FORCE_PATH_STYLE: 'true',
          DATABASE_URL: 'sqlite:./env-db/s3up.db',
          PORT: '0',
        },
      });
      try {
        const url = await gw.listening;
        assert.notEqual(new URL(url).port, String(busy.port));
        const body = 'stored through environment overrides';
        const put = await fetch(`${url}/objects/env/ok.txt`, { method: 'PUT', headers: { authorization: `Bearer ${key}` }, body });
        assert.equal(put.status, 200, await put.clone().text());
        const res = (await put.json()) as { s3_key: string; sha256: string };
        assert.equal(res.s3_key, 'team/ops/env/ok.txt');
        assert.equal(res.sha256, sha256(body));

        const client = new S3Client({
          endpoint: s3.endpoint,
          region: 'us-east-1',
          forcePathStyle: true,
          credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
        });
        try {
          const head = await client.send(new HeadObjectCommand({ Bucket: s3.bucket, Key: 'team/ops/env/ok.txt' }));
          assert.equal(head.ContentLength, Buffer.byteLength(body));
        } finally {
          client.destroy();
        }
        assert.ok(existsSync(path.join(dir, 'env-db', 's3up.db')), 'DATABASE_URL chose the database');
        assert.ok(!existsSync(path.join(dir, 'file.db')), 'the file database was not used');
        assert.ok(!existsSync(path.join(dir, 'fs-root')), 'the filesystem backend was not used');
        assert.ok(!gw.stdout().includes(key) && !gw.stderr().includes(key), 'the key is never logged');
        assert.doesNotMatch(gw.stdout(), /no access_key_id/, 'keys configured: no warning');
      } finally {
        const { code } = await gw.stop();
        assert.equal(code, 0, gw.stderr());
      }
      // No S3 keys in the config or its overrides: the SDK's default chain (here its
      // AWS_* variables) supplies them, and the gateway says so at start.
      const chain = spawnBin(['--config', 'server.yaml'], {
        cwd: dir,
        env: {
          STORAGE_BACKEND: 's3',
          S3_ENDPOINT: s3.endpoint,
          S3_BUCKET: s3.bucket,
          S3_FORCE_PATH_STYLE: 'true',
          S3_PATH_PREFIX: 'chain/',
          DATABASE_URL: 'sqlite:./env-db/s3up.db',
          PORT: '0',
          AWS_ACCESS_KEY_ID: s3.accessKeyId,
          AWS_SECRET_ACCESS_KEY: s3.secretAccessKey,
          AWS_PROFILE: '',
        },
      });
      try {
        const url = await chain.listening;
        const warn = chain
          .stdout()
          .split('\n')
          .filter((l) => l.startsWith('{'))
          .map((l) => JSON.parse(l) as { level: number; msg: string })
          .find((r) => r.msg.startsWith('s3: no access_key_id'));
        assert.ok(warn, `a start-up warning about S3 credentials:\n${chain.stdout()}`);
        assert.equal(warn.level, 40, 'logged at warn level');
        const put = await fetch(`${url}/objects/env/chain.txt`, { method: 'PUT', headers: { authorization: `Bearer ${key}` }, body: 'via the default chain' });
        assert.equal(put.status, 200, await put.clone().text());
      } finally {
        const { code } = await chain.stop();
        assert.equal(code, 0, chain.stderr());
      }
      // Without the PORT override the file's port is taken: one line, exit 1, no stack.
      const taken = await runBin(['--config', 'server.yaml'], { cwd: dir, env: { STORAGE_BACKEND: 'fs', DATABASE_URL: 'sqlite:./env-db/s3up.db' } });
      assert.equal(taken.code, 1, taken.stderr);
      assert.match(taken.stderr, new RegExp(`^s3up-server: cannot listen: .*EADDRINUSE.*:${busy.port}\n$`));
    } finally {
      await busy.close();
    }
  });
});

describe('config: embedded defaults (no config file)', () => {
  let dir: string;
  before(() => {
    dir = tempDir();
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  function bannerKey(stdout: string): { state: string; file: string; key: string } {
    const m = /dev client "dev" API key \((new|kept) in ([^)]+)\):\n\s+(\S+)\n/.exec(stdout);
    assert.ok(m, `no dev key in the banner:\n${stdout}`);
    return { state: m[1] ?? '', file: m[2] ?? '', key: m[3] ?? '' };
  }

  it('prints a working dev key, keeps it in data/dev-api-key (0600) and reuses it after a restart', async () => {
    const first = spawnBin(['--port', '0'], { cwd: dir });
    let key: string;
    try {
      const url = await first.listening;
      // The banner follows the log line: wait for it.
      for (let i = 0; i < 100 && !/API key[^\n]*\n\s+\S+\n/.test(first.stdout()); i++) await new Promise((r) => setTimeout(r, 20));
      const b = bannerKey(first.stdout());
      key = b.key;
      assert.equal(b.state, 'new');
      assert.equal(b.file, path.join('data', 'dev-api-key'));
      assert.ok(key.length >= 32);
      const keyFile = path.join(dir, 'data', 'dev-api-key');
      assert.equal(readFileSync(keyFile, 'utf8').trim(), key);
      assert.equal(statSync(keyFile).mode & 0o777, 0o600, 'the key file is private');
      for (const line of first.stdout().split('\n')) if (line.startsWith('{')) assert.ok(!line.includes(key), `key in a log line: ${line}`);

      const put = await fetch(`${url}/objects/hello/a.txt`, { method: 'PUT', headers: { authorization: `Bearer ${key}` }, body: 'dev data' });
      assert.equal(put.status, 200, await put.clone().text());
      assert.equal(((await put.json()) as { s3_key: string }).s3_key, 'dev/hello/a.txt');
      assert.equal(readFileSync(path.join(dir, 'data', 'uploads', 'dev', 'hello', 'a.txt'), 'utf8'), 'dev data');
      assert.ok(existsSync(path.join(dir, 'data', 's3up.db')), 'SQLite under ./data');
      const wrong = await fetch(`${url}/objects/hello/a.txt`, { headers: { authorization: `Bearer ${key}x` } });
      assert.equal(wrong.status, 401);
    } finally {
      const { code } = await first.stop();
      assert.equal(code, 0, first.stderr());
    }

    const second = spawnBin(['--port', '0'], { cwd: dir });
    try {
      const url = await second.listening;
      for (let i = 0; i < 100 && !/API key[^\n]*\n\s+\S+\n/.test(second.stdout()); i++) await new Promise((r) => setTimeout(r, 20));
      const b = bannerKey(second.stdout());
      assert.equal(b.state, 'kept');
      assert.equal(b.key, key, 'the same key after a restart');
      const get = await fetch(`${url}/download?path=hello/a.txt`, { headers: { 'x-api-key': key } });
      assert.equal(get.status, 200);
      assert.equal(await get.text(), 'dev data');
    } finally {
      const { code } = await second.stop();
      assert.equal(code, 0, second.stderr());
    }
  });
});

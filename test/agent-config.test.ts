import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import picomatch from 'picomatch';
import { DEFAULT_IGNORE, loadAgentConfig } from '../src/agent/config.js';
import { ignoreGlobs } from '../src/agent/daemon.js';

describe('client.yaml', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 's3up-agent-config-'));
  const watched = path.join(dir, 'w');
  mkdirSync(watched);
  after(() => rmSync(dir, { recursive: true, force: true }));
  const write = (yaml: string) => {
    const file = path.join(dir, 'client.yaml');
    writeFileSync(file, yaml);
    return file;
  };

  it("has spec 002's keys with its defaults, the agent's own documented defaults, and ENV interpolation from the gateway's reader", () => {
    const file = write(
      `server: { url: "https://gw.example:8080/", api_key: "\${KEY}" }\nwatches: [{ local_path: ${JSON.stringify(watched)}, remote_prefix: "/uploads" }]\n`,
    );
    const c = loadAgentConfig(file, { env: { KEY: 'sk_from_env' }, cwd: dir });
    assert.equal(c.serverUrl, 'https://gw.example:8080');
    assert.equal(c.apiKey, 'sk_from_env');
    assert.deepEqual(c.watches, [{ localPath: watched, remotePrefix: 'uploads/', recursive: true }]);
    assert.equal(c.databasePath, path.join(dir, 'data', 'agent.db'));
    assert.equal(c.uploadExisting, false);
    assert.equal(c.debounceMs, 3000);
    assert.equal(c.maxStabilityAttempts, 100);
    assert.equal(c.retryAttempts, 3);
    assert.equal(c.retryDelayMs, 5000);
    assert.equal(c.concurrency, undefined, 'unset: the gateway advises, else 4');
    assert.equal(c.resumableThreshold, 64 * 1024 * 1024);
    assert.equal(c.rescanIntervalMs, 60 * 60_000);
    assert.deepEqual(c.ignore, [...DEFAULT_IGNORE]);
    assert.equal(c.afterUpload, 'keep');
  });

  it('refuses overlapping watches and a remote prefix with ".."', () => {
    mkdirSync(path.join(watched, 'inner'), { recursive: true });
    assert.throws(
      () =>
        loadAgentConfig(
          write(
            `server: { url: "http://x", api_key: k }\nwatches: [{ local_path: ${JSON.stringify(watched)} }, { local_path: ${JSON.stringify(path.join(watched, 'inner'))} }]\n`,
          ),
        ),
      /watches\[1\]\.local_path: overlaps watches\[0\]/,
    );
    assert.throws(
      () => loadAgentConfig(write(`server: { url: "http://x", api_key: k }\nwatches: [{ local_path: ${JSON.stringify(watched)}, remote_prefix: "a/../b" }]\n`)),
      /watches\[0\]\.remote_prefix: must not contain/,
    );
  });

  it('ignore globs without "/" match a name at any depth', () => {
    const m = picomatch(ignoreGlobs([...DEFAULT_IGNORE, 'cache/**']), { dot: true });
    for (const p of ['a.tmp', 'x/y/b.part', '.x.swp', 'd/.~lock.doc#', '~$report.docx', 'deep/.#file', 'cache/z', 'dir.tmp/inside.txt'])
      assert.equal(m(p), true, p);
    for (const p of ['a.txt', 'x/tmp', 'x/cache/z', 'part', 'lock']) assert.equal(m(p), false, p);
  });
});

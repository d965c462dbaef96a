// The README's configuration reference is checked against the code, so it
// cannot drift: the embedded-defaults block is the schema's defaults, and the
// environment overrides it lists are the ones the loader reads.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { parse } from 'yaml';
import { CONFIG_ENV_VARS } from '../src/config/load.js';
import { configSchema } from '../src/config/schema.js';
import { REPO_ROOT } from './helpers/bin.js';

const readme = readFileSync(path.join(REPO_ROOT, 'README.md'), 'utf8');
const configSection = readme.slice(readme.indexOf('## Configuration'), readme.indexOf('## Architecture'));

function yamlBlocks(text: string): string[] {
  return [...text.matchAll(/```yaml\n([\s\S]*?)```/g)].map((m) => m[1] ?? '');
}

describe('README: configuration', () => {
  it('the embedded-defaults block is exactly what the schema fills in for an empty config', () => {
    const [defaults] = yamlBlocks(configSection);
    assert.ok(defaults, 'a yaml block in ## Configuration');
    const documented = parse(defaults) as unknown;
    assert.deepEqual(documented, configSchema.parse({}));
    // And it is a valid config as written (no unknown keys, every value accepted).
    assert.deepEqual(configSchema.parse(documented), configSchema.parse({}));
  });

  it('lists every environment override the loader reads, and no other', () => {
    const bullet = configSection.slice(configSection.indexOf('- Environment overrides'));
    const listed = new Set([...bullet.slice(0, bullet.indexOf('\n- ')).matchAll(/`([A-Z][A-Z0-9_]+)`/g)].map((m) => m[1]));
    const read = new Set(CONFIG_ENV_VARS.filter((v) => v !== 'S3UP_CONFIG'));
    assert.deepEqual([...listed].sort(), [...read].sort());
  });

  it('the S3 sample interpolates the variables the overrides use (S3_ACCESS_KEY, S3_SECRET_KEY)', () => {
    const names = [
      ...yamlBlocks(configSection)
        .join('\n')
        .matchAll(/\$\{([A-Z0-9_]+)(?::-[^}]*)?\}/g),
    ].map((m) => m[1] ?? '');
    assert.ok(names.length > 0);
    for (const n of names) assert.ok(CONFIG_ENV_VARS.includes(n), `\${${n}} in the README is not a variable the gateway reads`);
  });
});

// The rule for outside tools (helpers/tools.ts): a missing tool skips its tests
// with an install hint on a developer machine and fails them under CI.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { tool } from './helpers/tools.js';

describe('outside tools in the tests', () => {
  it('a missing tool is skipped with the reason and the Debian package outside CI', () => {
    const t = tool('rclone', 'rclone', [], { PATH: '/nonexistent' });
    assert.equal(t.path, null);
    assert.equal(t.skip, 'rclone not installed: apt-get install rclone (runs under CI)');
    assert.throws(() => t.require(), /rclone not installed: apt-get install rclone/);
  });

  it('under CI a missing tool is never skipped: requiring it fails loudly', () => {
    const t = tool('rclone', 'rclone', [], { PATH: '/nonexistent', CI: 'true' });
    assert.equal(t.skip, false);
    assert.throws(() => t.require(), /^Error: CI is set but rclone not installed: apt-get install rclone: \.ci\/run installs it$/);
  });

  it('a tool found on PATH (or at a preferred absolute path) runs', () => {
    const t = tool('node', 'nodejs', [], { PATH: `/nonexistent:${process.env.PATH ?? ''}` });
    assert.equal(t.skip, false);
    assert.match(t.require(), /\/node$/);
    const preferred = tool('no-such-program', 'x', [process.execPath], { PATH: '' });
    assert.equal(preferred.require(), process.execPath);
  });
});

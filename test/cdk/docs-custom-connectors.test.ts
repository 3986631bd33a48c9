// docs/custom-connectors.md shows the example connector and pipeline in full: every code block
// marked `<!-- file: path -->` must be exactly that file of the repository, which the tests run
// (examples/rest-source/blog.test.ts, test/cdk/child-stream-resume.test.ts).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO } from '../helpers/cli.ts';

const doc = readFileSync(join(REPO, 'docs/custom-connectors.md'), 'utf8');
const blocks = [...doc.matchAll(/<!-- file: (\S+) -->\n```\w*\n([\s\S]*?)```\n/g)].map((m) => ({ file: m[1], code: m[2] }));

describe('docs/custom-connectors.md', () => {
  it('shows the tested example files', () => {
    expect(blocks.map((b) => b.file)).toEqual(['examples/rest-source/connectors/blog.ts', 'examples/rest-source/blog.pipeline.yaml']);
  });
  for (const { file, code } of blocks) {
    it(`its ${file} block is the file itself`, () => {
      expect(code).toBe(readFileSync(join(REPO, file), 'utf8'));
    });
  }
  it('the connector is about 30 lines', () => {
    expect(blocks[0].code.trim().split('\n').length).toBeLessThanOrEqual(40);
  });
});

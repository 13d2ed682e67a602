#!/usr/bin/env python3
"""For h200-s21.sh's A/B of session 21's decode host-path changes, from dist/bench-gpt.mjs:
- dist/bench-gpt-lifo.mjs: BufferPool hands out the last released buffer again (before 4fd48b7);
- dist/bench-gpt-s20.mjs: that, and nn's kernel options fuseLinear and sharePasses off by
  default (three matmuls for q, k, v, gelu its own pass, a compute pass per dispatch: the
  decode path of session 20)."""
from pathlib import Path

dist = Path(__file__).resolve().parent / 'dist'
s = (dist / 'bench-gpt.mjs').read_text()


def undo(text, old, new):
    assert text.count(old) == 1, f'{old!r} was not found once in the bundle'
    return text.replace(old, new)


# The sorted insert always at the end of the free list, where acquire pops: last released first.
lifo = undo(s, 'if (lo === ranks.length) {', 'if (true) {')
(dist / 'bench-gpt-lifo.mjs').write_text(lifo)
s20 = undo(undo(lifo, 'sharePasses: true,', 'sharePasses: false,'), 'fuseLinear: true', 'fuseLinear: false')
(dist / 'bench-gpt-s20.mjs').write_text(s20)
print('wrote', dist / 'bench-gpt-lifo.mjs', dist / 'bench-gpt-s20.mjs')

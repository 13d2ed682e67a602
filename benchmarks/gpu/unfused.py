#!/usr/bin/env python3
"""For h200-s20f.sh's A/B: writes dist/bench-gpt-unfused.mjs, dist/bench-gpt.mjs with nn's
addLayerNorm never taking the fused kernel (add then layerNorm, as before 8a5dbff)."""
from pathlib import Path

dist = Path(__file__).resolve().parent / 'dist'
s = (dist / 'bench-gpt.mjs').read_text()
old = 'if (!("addLayerNorm" in k)) return void 0;'
assert s.count(old) == 1, 'the fused check was not found once in the bundle'
(dist / 'bench-gpt-unfused.mjs').write_text(s.replace(old, 'return void 0;'))
print('wrote', dist / 'bench-gpt-unfused.mjs')

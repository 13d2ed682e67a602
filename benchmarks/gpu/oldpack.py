#!/usr/bin/env python3
"""For h200-s20e.sh's A/B: writes dist/bench-gpt-oldpack.mjs, dist/bench-gpt.mjs with the
skeleton's packParams as it was before 2ebdf37 (PARAM_FIELDS and the hooks' fields spread into one
object, then packed by a copy of @attnkit/webgpu's packUniform, which the bundle no longer has)."""
from pathlib import Path

dist = Path(__file__).resolve().parent / 'dist'
s = (dist / 'bench-gpt.mjs').read_text()
start = s.index('function packParams(p, extra = [], extraValues = {}) {')
end = s.index('// packages/skeleton/src/webgpu/hooks.ts', start)
old = '''function packUniformOld(fields, values) {
  const buf = new ArrayBuffer(Math.ceil(fields.length / 4) * 16);
  const u = new Uint32Array(buf);
  const i = new Int32Array(buf);
  const f = new Float32Array(buf);
  fields.forEach(([name, type], k) => {
    const v = values[name];
    if (typeof v !== "number") throw new ValueError(`values.${name}: expected a number`, `values.${name}`);
    if (type === "f32") f[k] = v;
    else if (type === "i32") i[k] = v;
    else u[k] = v >>> 0;
  });
  return buf;
}
function packParams(p, extra = [], extraValues = {}) {
  return packUniformOld([...PARAM_FIELDS, ...extra], { ...extraValues, ...p });
}

'''
(dist / 'bench-gpt-oldpack.mjs').write_text(s[:start] + old + s[end:])
print('wrote', dist / 'bench-gpt-oldpack.mjs')

import { ValueError } from '@attnkit/tensor';
import { describe, expect, test } from 'vitest';
import { loopVarsWithoutInitializer } from './wgsl.js';

describe('loopVarsWithoutInitializer', () => {
  test('code that is not a string is a ValueError naming code', () => {
    expect(() => loopVarsWithoutInitializer(undefined as unknown as string)).toThrow(ValueError);
    expect(() => loopVarsWithoutInitializer(42 as unknown as string)).toThrow(
      /^code: expected WGSL source text, got /,
    );
  });

  test('reports a bare var in a for, loop or while body, with its line', () => {
    const code = [
      'fn main() {',
      '  var top: array<f32, 4>;',
      '  for (var i = 0u; i < 4u; i++) {',
      '    var acc: array<f32, 4>;',
      '    if (i > 0u) { var inner: f32; }',
      '  }',
      '  loop { var l: u32; break; }',
      '  while (true) { var w: vec2<f32>; break; }',
      '}',
    ].join('\n');
    expect(loopVarsWithoutInitializer(code)).toEqual([
      'acc (line 4)',
      'inner (line 5)',
      'l (line 7)',
      'w (line 8)',
    ]);
  });

  test('accepts initialized vars, vars outside loops, workgroup vars and comments', () => {
    const code = [
      'var<workgroup> sm: array<f32, 64>;',
      'fn main() {',
      '  var s: array<f32, 4>;',
      '  { const i = 0u; var once: f32; }',
      '  for (var i = 0u; i < 4u; i++) {',
      '    var acc = array<f32, 4>();',
      '    var a: f32 = 0.0;',
      '    // var commented: f32;',
      '    /* var block: f32; */',
      '  }',
      '}',
    ].join('\n');
    expect(loopVarsWithoutInitializer(code)).toEqual([]);
  });
});

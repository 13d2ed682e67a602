import { ValueError } from '@attnkit/tensor';
import { describe, expect, test } from 'vitest';
import { loopVarsWithoutInitializer, packUniform, packUniformParts } from './wgsl.js';

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

describe('packUniform / packUniformParts', () => {
  test('fields in order across parts, each read from its own record; 16-byte padding; a missing value is a ValueError naming it', () => {
    const a = [
      ['n', 'u32'],
      ['shift', 'i32'],
      ['scale', 'f32'],
    ] as const;
    const b = [
      ['n', 'u32'],
      ['bias', 'f32'],
    ] as const;
    const buf = packUniformParts([
      [a, { n: 7, shift: -3, scale: 0.5 }],
      [b, { n: 2 ** 32 - 1, bias: -1.25 }],
    ]);
    expect(buf.byteLength).toBe(32);
    expect(Array.from(new Uint32Array(buf, 0, 1))).toEqual([7]);
    expect(new Int32Array(buf)[1]).toBe(-3);
    expect(new Float32Array(buf)[2]).toBe(0.5);
    // The second part's `n` is its own record's, not the first's.
    expect(new Uint32Array(buf)[3]).toBe(2 ** 32 - 1);
    expect(new Float32Array(buf)[4]).toBe(-1.25);
    // One part alone: the same first three words, then zero padding.
    const alone = new Uint32Array(packUniform(a, { n: 7, shift: -3, scale: 0.5 }));
    expect(Array.from(alone)).toEqual([...Array.from(new Uint32Array(buf, 0, 3)), 0]);
    expect(() => packUniformParts([[a, { n: 1, shift: 0 }]])).toThrow(
      expect.objectContaining({ name: 'ValueError', argument: 'values.scale' }),
    );
    for (const bad of [undefined, [a], [[a]], [[a, null]], [['n', { n: 1 }]]])
      expect(() => packUniformParts(bad as never)).toThrow(
        expect.objectContaining({ name: 'ValueError', argument: 'parts' }),
      );
  });
});

import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { accuracy, hstuAttentionReference, loadGolden, selectKernel } from '@attnkit/attention';
import { nativeAvailable } from '@attnkit/flash-attention';
import { Rng, readSafetensors, Tensor, writeSafetensors } from '@attnkit/tensor';
import { goldenFiles, goldenLabel } from '@attnkit/vitest-config';
import { describe, expect, test } from 'vitest';
import { prepareBackends } from './backends.js';
import { hstuBenchOptions } from './bench.js';
import { type CliIo, runCli, USAGE } from './cli.js';
import { verifyFile, verifyGolden } from './verify.js';

// Every golden set: the project's goldens/ and, when present, ../shared/goldens.
const files = goldenFiles();
const nativeLoads = await nativeAvailable();

function captureIo(): CliIo & { stdout: string[]; stderr: string[] } {
  const stdout: string[] = [];
  const stderr: string[] = [];
  return { stdout, stderr, out: (t) => stdout.push(t), err: (t) => stderr.push(t) };
}

test('the goldens are present (every kind)', () => {
  expect(files.length).toBeGreaterThanOrEqual(15);
});

describe('every golden verifies through the attnkit verify code path', () => {
  for (const file of files) {
    test(`${goldenLabel(file)} on the default backend`, async () => {
      const report = await verifyFile(file);
      expect(Object.keys(report.tensors).length).toBeGreaterThan(0);
      expect(report.tensors, JSON.stringify(report)).toSatisfy(() => report.ok);
      // Every kind, GLA's chunk form included (issue 13), runs on native when its addon loads.
      expect(report.backend).toBe((await nativeAvailable()) ? 'native' : 'ts');
    });
    if (/^(softmax|sigmoid|hstu|gla)/.test(basename(file))) {
      test(`${goldenLabel(file)} on the pure-TS backend`, async () => {
        const report = await verifyFile(file, { backend: 'ts' });
        expect(report.backend).toBe('ts');
        expect(report.ok, JSON.stringify(report)).toBe(true);
      });
    }
    if (basename(file).startsWith('softmax')) {
      test(`${goldenLabel(file)} with FA1`, async () => {
        const report = await verifyFile(file, { algorithm: 'fa1' });
        expect(report.ok, JSON.stringify(report)).toBe(true);
      });
    }
    test(`${goldenLabel(file)} on the float64 reference`, async () => {
      const report = await verifyFile(file, { backend: 'reference' });
      expect(report.backend).toBe('reference');
      expect(report.ok, JSON.stringify(report)).toBe(true);
    });
  }
});

describe('attnkit verify output', () => {
  const full = files.find((f) => basename(f) === 'softmax_full.safetensors')!;

  test('one line per reference tensor, exit 0', async () => {
    const io = captureIo();
    expect(await runCli(['verify', full], io)).toBe(0);
    const lines = io.stdout.join('\n').split('\n');
    expect(lines.map((l) => l.split(' ')[0]).sort()).toEqual(['dk', 'dq', 'dv', 'lse', 'o']);
    for (const line of lines) {
      expect(line).toMatch(/^\w+ rel_l2=\S+ max_abs=\S+ ok$/);
    }
  });

  test('--json gives {kind, backend, ok, tensors}', async () => {
    const io = captureIo();
    expect(await runCli(['verify', full, '--json', '--backend', 'ts'], io)).toBe(0);
    const report = JSON.parse(io.stdout.join(''));
    expect(Object.keys(report)).toEqual(['kind', 'backend', 'ok', 'tensors']);
    expect(report).toMatchObject({ kind: 'softmax', backend: 'ts', ok: true });
    expect(report.tensors.o.relL2).toBeLessThan(1e-5);
    expect(Object.keys(report.tensors.o)).toEqual(['relL2', 'maxAbs', 'ok']);
  });

  test('a perturbed reference fails with exit 1 and a FAIL line', async () => {
    const golden = readSafetensors(new Uint8Array(readFileSync(full)));
    const o = golden.tensors.o!.toFloat64Array();
    o[17] = o[17]! + 0.05; // one element off: far past 1e-5 relative L2
    const tensors = { ...golden.tensors, o: Tensor.from(o, golden.tensors.o!.shape) };
    const dir = mkdtempSync(join(tmpdir(), 'attnkit-'));
    const path = join(dir, 'perturbed.safetensors');
    writeFileSync(path, writeSafetensors(tensors, { metadata: golden.metadata }));
    const io = captureIo();
    expect(await runCli(['verify', path], io)).toBe(1);
    const lines = io.stdout.join('\n').split('\n');
    expect(lines.find((l) => l.startsWith('o '))).toMatch(/ FAIL$/);
    expect(lines.find((l) => l.startsWith('dq '))).toMatch(/ ok$/);
  });

  test('a reference of another shape with the same element count is FAIL', async () => {
    const golden = readSafetensors(new Uint8Array(readFileSync(full)));
    const o = golden.tensors.o!;
    // Same elements in the same order, so only the shape check can tell them apart.
    const [B, H, N, D] = o.shape as [number, number, number, number];
    const reshaped = Tensor.from(o.toFloat64Array(), [B * H, N, D]);
    const dir = mkdtempSync(join(tmpdir(), 'attnkit-'));
    const path = join(dir, 'reshaped.safetensors');
    writeFileSync(
      path,
      writeSafetensors({ ...golden.tensors, o: reshaped }, { metadata: golden.metadata }),
    );
    const io = captureIo();
    expect(await runCli(['verify', path, '--backend', 'ts', '--json'], io)).toBe(1);
    const report = JSON.parse(io.stdout.join('\n'));
    expect(report.ok).toBe(false);
    expect(Object.keys(report.tensors.o).sort()).toEqual(['maxAbs', 'ok', 'relL2']);
    expect(report.tensors.o.ok).toBe(false);
    expect(report.tensors.lse.ok).toBe(true);
  });

  test('an unknown backend is a usage error naming --backend', async () => {
    const io = captureIo();
    expect(await runCli(['verify', full, '--backend', 'cuda'], io)).toBe(2);
    expect(io.stderr.join('\n')).toMatch(
      /--backend: expected one of webgpu, native, ts, reference, got "cuda"/,
    );
  });

  test.skipIf(!nativeLoads)(
    'gla on the native backend: the golden verifies, by file and with --family gla',
    async () => {
      // GLA's native chunk kernels (issue 13): chunkGla forward and backward on the C++ engine.
      const gla = files.find((f) => basename(f) === 'gla.safetensors')!;
      for (const args of [
        ['verify', gla, '--backend', 'native'],
        ['verify', gla, '--family', 'gla', '--backend', 'native'],
      ]) {
        const io = captureIo();
        expect(await runCli(args, io), io.stderr.join('\n')).toBe(0);
        expect(io.stdout.join('\n')).toMatch(/dgk rel_l2=\S+ max_abs=\S+ ok/);
      }
      expect((await verifyFile(gla, { backend: 'native' })).backend).toBe('native');
    },
  );

  test('a reference tensor the backend does not produce is a FAIL, not a skip', async () => {
    // hstu_rab holds drab: the reference backend must produce it (it does), and a golden kind
    // whose references include a name no backend output has fails with rel_l2 Infinity.
    const rab = files.find((f) => basename(f) === 'hstu_rab.safetensors')!;
    const report = await verifyFile(rab, { backend: 'reference' });
    expect(Object.keys(report.tensors)).toContain('drab');
    expect(report.ok).toBe(true);
    const golden = await loadGolden(full);
    golden.references.push('dsinks');
    golden.tensors.dsinks = golden.tensors.lse!;
    const strict = await verifyGolden(golden, { backend: 'ts' });
    expect(strict.tensors.dsinks).toEqual({
      relL2: Number.POSITIVE_INFINITY,
      maxAbs: Number.POSITIVE_INFINITY,
      ok: false,
    });
    expect(strict.ok).toBe(false);
  });

  test('hstu goldens verify on the ts kernels, drab included, and a perturbed drab fails', async () => {
    const rab = files.find((f) => basename(f) === 'hstu_rab.safetensors')!;
    const io = captureIo();
    expect(await runCli(['verify', rab, '--backend', 'ts', '--json'], io)).toBe(0);
    const report = JSON.parse(io.stdout.join(''));
    expect(report).toMatchObject({ kind: 'hstu', backend: 'ts', ok: true });
    expect(Object.keys(report.tensors)).toEqual(['o', 'dq', 'dk', 'dv', 'drab']);
    expect(report.tensors.drab.relL2).toBeLessThan(1e-5);
    // The kernels' drab is compared, not skipped: one element of the golden's drab off fails it
    // (a random allowed pair: j <= i < 9, within the first sequence of length 9).
    const golden = await loadGolden(rab);
    const drab = golden.tensors.drab!.toFloat64Array();
    const i = 1 + Math.floor(Math.random() * 8);
    const j = Math.floor(Math.random() * (i + 1));
    drab[i * 18 + j] = drab[i * 18 + j]! + 0.5;
    golden.tensors.drab = Tensor.from(drab, golden.tensors.drab!.shape);
    const bad = await verifyGolden(golden, { backend: 'ts' });
    expect(bad.ok).toBe(false);
    expect(bad.tensors.drab!.ok).toBe(false);
    expect(bad.tensors.o!.ok).toBe(true);
    // FA1's loop order is softmax's only: a usage error naming the option, not a FAIL.
    const fa1 = captureIo();
    expect(await runCli(['verify', rab, '--backend', 'ts', '--algorithm', 'fa1'], fa1)).toBe(2);
    expect(fa1.stderr.join('\n')).toMatch(/^attnkit: algorithm: expected "fa2" for "silu"/);
  });

  test('a missing or malformed file is a clear error', async () => {
    const io = captureIo();
    expect(await runCli(['verify', '/nonexistent/x.safetensors'], io)).toBe(2);
    expect(io.stderr.join('\n')).toMatch(/ENOENT|no such file/);
    const dir = mkdtempSync(join(tmpdir(), 'attnkit-'));
    const path = join(dir, 'bad.safetensors');
    writeFileSync(path, new Uint8Array([1, 2, 3]));
    const io2 = captureIo();
    expect(await runCli(['verify', path], io2)).toBe(2);
    expect(io2.stderr.join('\n')).toMatch(
      /attnkit: file: too short for a safetensors file.*got 3 bytes/,
    );
  });
});

describe('attnkit bench', () => {
  test('prints a table and writes JSON with GFLOP/s and the reference time', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'attnkit-'));
    const out = join(dir, 'bench.json');
    const io = captureIo();
    const code = await runCli(
      [
        'bench',
        '--shape',
        '1,2,64,16',
        '--repeats',
        '1',
        '--warmup',
        '0',
        '--causal',
        '--out',
        out,
      ],
      io,
    );
    expect(code).toBe(0);
    const table = io.stdout.join('\n');
    expect(table).toMatch(/GFLOP\/s/);
    expect(table).toMatch(/forward/);
    expect(table).toMatch(/backward/);
    const json = JSON.parse(readFileSync(out, 'utf8'));
    expect(json.rows).toHaveLength(2);
    const [fwd, bwd] = json.rows;
    // causal halves the count: 4*B*H*N^2*D / 2 forward, 2.5x that backward.
    expect(fwd.flops).toBe((4 * 2 * 64 * 64 * 16) / 2);
    expect(bwd.flops).toBe(2.5 * fwd.flops);
    expect(fwd.gflops).toBeGreaterThan(0);
    expect(fwd.referenceMs).toBeGreaterThan(0);
  });

  test('--family sigmoid and --score-mod run through the registry', async () => {
    const io = captureIo();
    const args = ['--shape', '1,2,32,16', '--repeats', '1', '--warmup', '0', '--json'];
    expect(await runCli(['bench', '--family', 'sigmoid', '--backend', 'ts', ...args], io)).toBe(0);
    const rows = JSON.parse(io.stdout.join('\n')).rows;
    expect(rows.map((r: { family: string }) => r.family)).toEqual(['sigmoid', 'sigmoid']);
    const io2 = captureIo();
    expect(
      await runCli(['bench', '--score-mod', 'softcap:30', '--forward-only', ...args], io2),
    ).toBe(0);
    expect(JSON.parse(io2.stdout.join('\n')).rows[0].family).toBe('softmax+softcap:30');
    const io3 = captureIo();
    expect(await runCli(['bench', '--score-mod', 'tanh', ...args], io3)).toBe(2);
    expect(io3.stderr.join('\n')).toMatch(
      /--score-mod: expected none, alibi or softcap:<cap>, got "tanh"/,
    );
    const io4 = captureIo();
    expect(await runCli(['bench', '--family', 'hyperr', ...args], io4)).toBe(2);
    expect(io4.stderr.join('\n')).toMatch(
      /--family: expected flash, softmax, sigmoid, hstu, sage, gla, hyper, got "hyperr"/,
    );
  });

  test('--family hstu times the registered HSTU kernels on jagged sequences of length N', async () => {
    // Odd sizes: 3 sequences of 37 tokens, D 12.
    const [B, H, N, D] = [3, 2, 37, 12];
    const args = ['--shape', `${B},${H},${N},${D}`, '--repeats', '1', '--warmup', '0'];
    const io = captureIo();
    expect(
      await runCli(['bench', '--family', 'hstu', '--backend', 'ts', '--causal', ...args], io),
    ).toBe(0);
    const table = io.stdout.join('\n').split('\n');
    expect(table[0]).toMatch(/^family +backend +algo +B,H,N,D +causal +pass /);
    expect(table.slice(2).map((l) => l.split(/ +/).slice(0, 6))).toEqual([
      ['hstu', 'ts', 'fa2', '3,2,37,12', 'yes', 'forward'],
      ['hstu', 'ts', 'fa2', '3,2,37,12', 'yes', 'backward'],
    ]);
    // --json: FlashAttention's count (4 B H N^2 D forward, 2.5x backward, halved when causal).
    const json = captureIo();
    expect(
      await runCli(['bench', '--family', 'hstu', '--backend', 'ts', '--json', ...args], json),
    ).toBe(0);
    const rows = JSON.parse(json.stdout.join('\n')).rows;
    expect(rows.map((r: { family: string; pass: string }) => `${r.family} ${r.pass}`)).toEqual([
      'hstu forward',
      'hstu backward',
    ]);
    const forward = 4 * B * H * N * N * D;
    expect(rows[0]).toMatchObject({ backend: 'ts', causal: false, flops: forward });
    expect(rows[1].flops).toBe(2.5 * forward);
    for (const r of rows) {
      expect(r.shape).toEqual([B, H, N, D]);
      expect(r.gflops).toBeCloseTo(r.flops / (r.medianMs * 1e6), 6);
      // Sane: positive, and nowhere near what a CPU cannot do (a wrong count by N would show).
      expect(r.gflops).toBeGreaterThan(1e-4);
      expect(r.gflops).toBeLessThan(1e4);
      expect(r.referenceMs).toBeGreaterThan(0);
    }
  });

  test('--family hstu runs the options the HSTU registration takes, and its peer', async () => {
    const shape = [2, 3, 29, 8] as [number, number, number, number];
    const hstu = hstuBenchOptions(shape, true);
    expect([...hstu.seqOffsets]).toEqual([0, 29, 58]);
    expect(hstu).toMatchObject({ maxSeqLen: 29, alpha: 1 / Math.sqrt(8), causal: true });
    // What the bench times is HSTU itself: the registered kernel on these options matches the
    // float64 reference (KERNELS.md f32 tolerance) on fresh inputs, and differs from the
    // non-causal result.
    await prepareBackends();
    const rng = new Rng(Date.now() % 2 ** 31);
    const [q, k, v] = [0, 1, 2].map(() => rng.randn([2 * 29, 3, 8]));
    const kernel = selectKernel(
      { family: 'hstu', pass: 'forward', device: 'cpu', dtype: 'f32', options: hstu },
      'ts',
    );
    const got = (await kernel.run({ q: q!, k: k!, v: v! }, { ...hstu, algorithm: 'fa2' })).o!;
    const want = hstuAttentionReference(q!, k!, v!, hstu).o;
    expect(accuracy(got, want).relL2).toBeLessThan(1e-5);
    const full = hstuAttentionReference(q!, k!, v!, { ...hstu, causal: false }).o;
    expect(accuracy(got, full).relL2).toBeGreaterThan(1e-2);
    // Its float64 peer has no score mods: asking for one needs --no-reference.
    const io = captureIo();
    const args = ['bench', '--family', 'hstu', '--shape', '1,1,8,4', '--score-mod', 'softcap:5'];
    expect(await runCli(args, io)).toBe(2);
    expect(io.stderr.join('\n')).toMatch(
      /^attnkit: --score-mod: expected none with --family hstu .*add --no-reference/,
    );
    const io2 = captureIo();
    const more = ['--no-reference', '--repeats', '1', '--warmup', '0', '--json', '--backend', 'ts'];
    expect(await runCli([...args, ...more], io2)).toBe(0);
    expect(JSON.parse(io2.stdout.join('\n')).rows[0].family).toBe('hstu+softcap:5');
  });

  test('--repeats 0 and malformed counts are usage errors naming the flag', async () => {
    for (const [flag, value] of [
      ['--repeats', '0'],
      ['--repeats', '1e1'],
      ['--repeats', ''],
      ['--warmup', '-1'],
      ['--warmup', '0x2'],
    ] as const) {
      const io = captureIo();
      const args = ['bench', '--shape', '1,1,8,4', `${flag}=${value}`];
      expect(await runCli(args, io), args.join(' ')).toBe(2);
      expect(io.stdout).toEqual([]);
      expect(io.stderr.join('\n')).toBe(
        `attnkit: ${flag}: expected an integer >= ${flag === '--repeats' ? 1 : 0}, got "${value}"`,
      );
    }
  });

  test('--out to a missing directory is a usage error naming --out, before the run', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'attnkit-'));
    for (const out of [
      join(dir, 'missing', 'bench.json'),
      join(dir, 'missing'),
      `${join(dir, 'missing')}/`,
    ]) {
      const io = captureIo();
      // A shape this large would take minutes: exit 2 at once proves the check runs first.
      const args = ['bench', '--shape', '64,64,4096,128', '--out', out];
      expect(await runCli(args, io), out).toBe(2);
      expect(io.stdout).toEqual([]);
      expect(io.stderr.join('\n')).toMatch(
        /^attnkit: --out: directory ".*missing.*" .*does not exist/,
      );
    }
    expect(readdirSync(dir)).toEqual([]);
  });

  test('--out to an existing directory writes bench-<date>.json inside it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'attnkit-'));
    const io = captureIo();
    const args = ['--shape', '1,1,16,8', '--repeats', '1', '--warmup', '0', '--forward-only'];
    expect(await runCli(['bench', ...args, '--backend', 'ts', '--out', dir], io)).toBe(0);
    const written = readdirSync(dir);
    expect(written).toHaveLength(1);
    expect(written[0]).toMatch(/^bench-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z\.json$/);
    const json = JSON.parse(readFileSync(join(dir, written[0]!), 'utf8'));
    expect(written[0]).toBe(`bench-${json.date.replace(/[:.]/g, '-')}.json`);
    expect(json.rows).toHaveLength(1);
  });

  test('without --out bench writes no file', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'attnkit-'));
    const cwd = process.cwd();
    process.chdir(dir);
    try {
      const io = captureIo();
      const args = ['bench', '--shape', '1,1,16,8', '--repeats', '1', '--warmup', '0'];
      expect(await runCli([...args, '--forward-only', '--backend', 'ts'], io)).toBe(0);
    } finally {
      process.chdir(cwd);
    }
    expect(readdirSync(dir)).toEqual([]);
  });

  test('a bad shape is a usage error naming --shape', async () => {
    const io = captureIo();
    expect(await runCli(['bench', '--shape', '1,2,64'], io)).toBe(2);
    expect(io.stderr.join('\n')).toMatch(/--shape: expected B,H,N,D/);
  });
});

describe('--help on each command', () => {
  for (const [command, first] of [
    ['verify', '  attnkit verify <file.safetensors>'],
    ['bench', '  attnkit bench [--family flash|softmax|sigmoid|hstu|sage|gla|hyper]'],
    ['io', '  attnkit io --algo '],
  ] as const) {
    for (const flag of ['--help', '-h']) {
      test(`attnkit ${command} ${flag} prints its usage and exits 0`, async () => {
        const io = captureIo();
        expect(await runCli([command, flag], io)).toBe(0);
        expect(io.stderr).toEqual([]);
        const text = io.stdout.join('\n');
        expect(text.split('\n')[0]).toBe('Usage:');
        expect(text.split('\n')[1]!.startsWith(first)).toBe(true);
        // Only this command's usage, each line of it taken from the full usage text.
        for (const other of ['verify', 'bench', 'io'].filter((c) => c !== command)) {
          expect(text).not.toContain(`attnkit ${other} `);
        }
        for (const line of text.split('\n').slice(1)) expect(USAGE).toContain(line);
      });
    }
  }
});

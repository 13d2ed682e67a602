#!/usr/bin/env node
/**
 * Summarises a V8 .cpuprofile (node --cpu-prof): the share of (idle), (garbage collector) and
 * (program), then the functions with the most self time, optionally inside a time window.
 * Used on the device machine to see whether a step waits on the GPU (idle) or runs JS.
 *
 *   node cpuprof-top.mjs FILE.cpuprofile [--top 30] [--from-ms 0] [--to-ms Infinity]
 *                        [--from-us T0 --to-us T1]
 *
 * --from-ms / --to-ms count from the profile's start; --from-us / --to-us are monotonic clock
 * microseconds (process.hrtime.bigint() / 1000n, V8's profile clock), as a program prints them.
 */
import { readFileSync } from 'node:fs';

const args = process.argv.slice(2);
const file = args.find((a) => a.endsWith('.cpuprofile'));
if (!file) {
  console.error('usage: node cpuprof-top.mjs FILE.cpuprofile [--top N] [--from-ms A] [--to-ms B]');
  process.exit(2);
}
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const top = opt('top', 30);
const profile = JSON.parse(readFileSync(file, 'utf8'));
const fromUs = opt('from-us', undefined);
const toUs = opt('to-us', undefined);
const fromMs = fromUs === undefined ? opt('from-ms', 0) : (fromUs - profile.startTime) / 1e3;
const toMs =
  toUs === undefined ? opt('to-ms', Number.POSITIVE_INFINITY) : (toUs - profile.startTime) / 1e3;
const nodes = new Map(profile.nodes.map((n) => [n.id, n]));
const self = new Map();
let t = 0;
let total = 0;
for (let i = 0; i < profile.samples.length; i++) {
  t += profile.timeDeltas[i];
  const ms = t / 1e3;
  if (ms < fromMs || ms > toMs) continue;
  const d = profile.timeDeltas[i] ?? 0;
  const cf = nodes.get(profile.samples[i]).callFrame;
  const key = `${cf.functionName || '(anonymous)'} ${cf.url.split('/').pop()}:${cf.lineNumber + 1}`;
  self.set(key, (self.get(key) ?? 0) + d);
  total += d;
}
console.log(`profile ${file}: ${(total / 1e3).toFixed(1)} ms sampled in the window`);
for (const [key, us] of [...self].sort((a, b) => b[1] - a[1]).slice(0, top))
  console.log(
    `${(us / 1e3).toFixed(1).padStart(9)} ms ${((100 * us) / total).toFixed(1).padStart(5)}%  ${key}`,
  );

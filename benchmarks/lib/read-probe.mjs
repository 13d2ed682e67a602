// A read-only memory-bandwidth probe for the CPU benchmarks: a WebAssembly SIMD sum (four
// 16-byte loads and f32x4 adds per 64 bytes, four independent accumulators) over a shared
// WebAssembly memory, on the calling thread or split over worker threads. The JS sum of the
// older probes ran at 2-5 GB/s, bound by the scalar loop, not by memory; this loop issues
// vector loads as fast as a native read kernel does, so its GB/s is what a read-only kernel
// (decode attention reads K and V, writes almost nothing) should be held to. A copy counts its
// reads and writes (and the write's read-for-ownership is not counted), so it is not that.
//
// The module is 179 bytes, written out below (no wat2wasm at run time):
//   (func (export "sum") (param $p i32) (param $n i32) (result f32)
//     (local $end i32) (local $a v128) (local $b v128) (local $c v128) (local $d v128)
//     end = p + n; while p < end: a += load(p); b += load(p+16); c += load(p+32);
//     d += load(p+48); p += 64;   return the sum of the lanes of a + b + c + d)
import { Worker } from 'node:worker_threads';

const loadAt = (local, offset) => [
  0x20,
  local,
  0x20,
  0x00,
  0xfd,
  0x00,
  0x04,
  offset,
  0xfd,
  0xe4,
  0x01,
  0x21,
  local,
];
const body = [
  0x02,
  0x01,
  0x7f,
  0x04,
  0x7b, // locals: 1 i32 (end), 4 v128
  0x20,
  0x00,
  0x20,
  0x01,
  0x6a,
  0x21,
  0x02, // end = p + n
  0x02,
  0x40,
  0x03,
  0x40, // block, loop
  0x20,
  0x00,
  0x20,
  0x02,
  0x4f,
  0x0d,
  0x01, // if p >= end (unsigned) break
  ...loadAt(3, 0),
  ...loadAt(4, 16),
  ...loadAt(5, 32),
  ...loadAt(6, 48),
  0x20,
  0x00,
  0x41,
  0xc0,
  0x00,
  0x6a,
  0x21,
  0x00, // p += 64
  0x0c,
  0x00,
  0x0b,
  0x0b, // br loop; end loop; end block
  0x20,
  0x03,
  0x20,
  0x04,
  0xfd,
  0xe4,
  0x01,
  0x20,
  0x05,
  0xfd,
  0xe4,
  0x01,
  0x20,
  0x06,
  0xfd,
  0xe4,
  0x01,
  0x21,
  0x03, // a = a + b + c + d
  0x20,
  0x03,
  0xfd,
  0x1f,
  0x00,
  0x20,
  0x03,
  0xfd,
  0x1f,
  0x01,
  0x92,
  0x20,
  0x03,
  0xfd,
  0x1f,
  0x02,
  0x92,
  0x20,
  0x03,
  0xfd,
  0x1f,
  0x03,
  0x92, // lane 0 + 1 + 2 + 3
  0x0b,
];
// Unsigned LEB128, as the binary format writes sizes.
const leb = (n) => (n < 0x80 ? [n] : [(n & 0x7f) | 0x80, ...leb(n >>> 7)]);
const section = (id, bytes) => [id, ...leb(bytes.length), ...bytes];
export const READ_PROBE_WASM = new Uint8Array([
  0x00,
  0x61,
  0x73,
  0x6d,
  0x01,
  0x00,
  0x00,
  0x00,
  ...section(1, [0x01, 0x60, 0x02, 0x7f, 0x7f, 0x01, 0x7d]), // (i32, i32) -> f32
  // import e.m: a shared memory, min 0, max 65536 pages
  ...section(2, [0x01, 0x01, 0x65, 0x01, 0x6d, 0x02, 0x03, 0x00, 0x80, 0x80, 0x04]),
  ...section(3, [0x01, 0x00]),
  ...section(7, [0x01, 0x03, 0x73, 0x75, 0x6d, 0x00, 0x00]), // export "sum"
  ...section(10, [0x01, ...leb(body.length), ...body]),
]);

/** A shared WebAssembly memory of at least `bytes` bytes (a multiple of 64 KiB) for the probe. */
export function probeMemory(bytes) {
  const pages = Math.ceil(bytes / 65536);
  return new WebAssembly.Memory({ initial: pages, maximum: pages, shared: true });
}

/** The probe's sum over [byteOffset, byteOffset + bytes) of `memory`, on this thread. */
export function readProbe(memory) {
  const { sum } = new WebAssembly.Instance(new WebAssembly.Module(READ_PROBE_WASM), {
    e: { m: memory },
  }).exports;
  return (byteOffset, bytes) => sum(byteOffset, bytes - (bytes % 64));
}

const workerSrc = `
const { parentPort, workerData: w } = require('node:worker_threads');
const { sum } = new WebAssembly.Instance(new WebAssembly.Module(w.wasm), { e: { m: w.memory } }).exports;
parentPort.on('message', () => parentPort.postMessage(sum(w.off, w.len)));`;

/**
 * `threads` workers, each summing its 64-byte-aligned share of [0, bytes) of `memory` when
 * `run()` is called; run() resolves when all have finished. close() ends the workers.
 */
export function readProbeWorkers(memory, bytes, threads) {
  const per = Math.floor(bytes / threads / 64) * 64;
  const workers = Array.from(
    { length: threads },
    (_, t) =>
      new Worker(workerSrc, {
        eval: true,
        workerData: { wasm: READ_PROBE_WASM, memory, off: t * per, len: per },
      }),
  );
  return {
    bytes: per * threads,
    run: () => roundTrip(workers),
    close: () => Promise.all(workers.map((w) => w.terminate())),
  };
}

/** Posts 0 to every worker and resolves with their replies (one message each). */
export function roundTrip(workers) {
  return Promise.all(
    workers.map(
      (w) =>
        new Promise((res) => {
          w.once('message', res);
          w.postMessage(0);
        }),
    ),
  );
}

// The FA2 softmax forward and backward of an addon build, whichever entry points it has: the
// generic run(op, problem, inputs, outputs) of the op registry, or the per-kernel
// flashForward / flashBackward(isa, ..., async) of builds before it. Both return promises.
export function attentionCalls(addon) {
  if (typeof addon.run === 'function') {
    return {
      api: 'run',
      forward: (p, q, k, v, o, lse) => addon.run('attention.forward', p, { q, k, v }, { o, lse }),
      backward: (p, q, k, v, o, lse, dO, dq, dk, dv) =>
        addon.run('attention.backward', p, { q, k, v, o, lse, dO }, { dq, dk, dv }),
    };
  }
  const isa = addon.info().isas[0];
  return {
    api: 'flashForward / flashBackward',
    forward: (p, q, k, v, o, lse) => addon.flashForward(isa, p, q, k, v, o, lse, true),
    backward: (p, q, k, v, o, lse, dO, dq, dk, dv) =>
      addon.flashBackward(isa, p, q, k, v, o, lse, dO, dq, dk, dv, true),
  };
}

// The native problem of a dense, single-sequence BHND attention (no GQA, D = Dv), plain or
// causal: what every A/B script here runs.
export function denseProblem(B, H, N, D, causal) {
  return {
    layout: 'BHND',
    batch: B,
    hq: H,
    hkv: H,
    d: D,
    dv: D,
    scale: 1 / Math.sqrt(D),
    left: -1,
    right: causal ? 0 : -1,
    seqQ: Int32Array.of(N),
    seqK: Int32Array.of(N),
    startQ: Int32Array.of(0),
    startK: Int32Array.of(0),
    maxSeqQ: N,
    maxSeqK: N,
    totalQ: N,
    totalK: N,
  };
}

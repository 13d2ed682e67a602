// A one-node ONNX model for decode: y = MultiHeadAttention(query, key, value) (com.microsoft)
// with query and y [B, 1, H * D] (one new token, packed heads) and key, value 4-D BNSH
// [B, H, Nk, D] (the KV cache in attnkit's BHND layout, read in place by both engines).
// benchmarks/native/onnx.mjs writes the self-attention variant (q, k, v all [B, N, H * D]) and
// the protobuf writers used here.

import { bytes, int, intAttr, str, valueInfo } from '../native/onnx.mjs';

/** ModelProto bytes of the decode MHA described above (no mask: with Nq = 1 causal sees every key). */
export function decodeMhaModel({ batch, kvSeq, heads, headDim }) {
  const hidden = heads * headDim;
  const node = [
    ...str(1, 'query'),
    ...str(1, 'key'),
    ...str(1, 'value'),
    ...str(2, 'y'),
    ...str(3, 'mha'),
    ...str(4, 'MultiHeadAttention'),
    ...bytes(5, intAttr('num_heads', heads)),
    ...str(7, 'com.microsoft'),
  ];
  const graph = [
    ...bytes(1, node),
    ...str(2, 'attnkit_decode_mha'),
    ...bytes(11, valueInfo('query', [batch, 1, hidden])),
    ...bytes(11, valueInfo('key', [batch, heads, kvSeq, headDim])),
    ...bytes(11, valueInfo('value', [batch, heads, kvSeq, headDim])),
    ...bytes(12, valueInfo('y', [batch, 1, hidden])),
  ];
  const model = [
    ...int(1, 8),
    ...str(2, 'attnkit-bench'),
    ...bytes(7, graph),
    ...bytes(8, [...str(1, ''), ...int(2, 17)]),
    ...bytes(8, [...str(1, 'com.microsoft'), ...int(2, 1)]),
  ];
  return Uint8Array.from(model);
}

// A one-node ONNX model for decode: y = MultiHeadAttention(query, key, value) (com.microsoft)
// with query and y [B, 1, H * D] (one new token, packed heads) and key, value 4-D BNSH
// [B, H, Nk, D] (the KV cache in attnkit's BHND layout, read in place by both engines).
// benchmarks/native/onnx.mjs writes the self-attention variant (q, k, v all [B, N, H * D]); the
// protobuf helpers are the same few onnx.proto messages (field numbers from onnx/onnx.proto).

const utf8 = new TextEncoder();
function varint(n) {
  const out = [];
  let x = BigInt(n);
  do {
    let byte = Number(x & 0x7fn);
    x >>= 7n;
    if (x > 0n) byte |= 0x80;
    out.push(byte);
  } while (x > 0n);
  return out;
}
const tag = (field, wire) => varint((field << 3) | wire);
const int = (field, value) => [...tag(field, 0), ...varint(value)];
const bytes = (field, b) => [...tag(field, 2), ...varint(b.length), ...b];
const str = (field, s) => bytes(field, [...utf8.encode(s)]);

// ValueInfoProto { name = 1, type = 2 { tensor_type = 1 { elem_type = 1 (FLOAT), shape = 2 { dim = 1 } } } }
function valueInfo(name, dims) {
  const shape = dims.flatMap((d) => bytes(1, int(1, d)));
  return [...str(1, name), ...bytes(2, bytes(1, [...int(1, 1), ...bytes(2, shape)]))];
}

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
    // AttributeProto { name = 1, i = 3, type = 20 (INT = 2) }
    ...bytes(5, [...str(1, 'num_heads'), ...int(3, heads), ...int(20, 2)]),
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

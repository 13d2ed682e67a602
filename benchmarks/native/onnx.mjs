// A one-node ONNX model written by hand: the few protobuf messages of onnx.proto that a
// com.microsoft MultiHeadAttention graph needs (field numbers from onnx/onnx.proto).

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

const VARINT = 0;
const LEN = 2;
const tag = (field, wire) => varint((field << 3) | wire);
// The protobuf field writers (also used by benchmarks/lean/onnx-decode.mjs).
export const int = (field, value) => [...tag(field, VARINT), ...varint(value)];
export const bytes = (field, b) => [...tag(field, LEN), ...varint(b.length), ...b];
export const str = (field, s) => bytes(field, [...utf8.encode(s)]);

const FLOAT = 1; // TensorProto.DataType.FLOAT
const ATTR_INT = 2; // AttributeProto.AttributeType.INT

// ValueInfoProto { name = 1, type = 2 { tensor_type = 1 { elem_type = 1, shape = 2 { dim = 1 } } } }
export function valueInfo(name, dims) {
  const shape = dims.flatMap((d) => bytes(1, typeof d === 'number' ? int(1, d) : str(2, d)));
  const tensorType = [...int(1, FLOAT), ...bytes(2, shape)];
  return [...str(1, name), ...bytes(2, bytes(1, tensorType))];
}

// AttributeProto { name = 1, i = 3, type = 20 }
export const intAttr = (name, value) => [...str(1, name), ...int(3, value), ...int(20, ATTR_INT)];

/**
 * ModelProto bytes of y = MultiHeadAttention(query, key, value) with query, key, value and y
 * of shape [B, N, H * D] (ORT's packed-heads layout); `unidirectional` = 1 is the causal mask.
 */
export function multiHeadAttentionModel({ batch, seq, heads, headDim, causal }) {
  const hidden = heads * headDim;
  const node = [
    ...str(1, 'query'),
    ...str(1, 'key'),
    ...str(1, 'value'),
    ...str(2, 'y'),
    ...str(3, 'mha'),
    ...str(4, 'MultiHeadAttention'),
    ...bytes(5, intAttr('num_heads', heads)),
    ...(causal ? bytes(5, intAttr('unidirectional', 1)) : []),
    ...str(7, 'com.microsoft'),
  ];
  const dims = [batch, seq, hidden];
  // GraphProto { node = 1, name = 2, input = 11, output = 12 }
  const graph = [
    ...bytes(1, node),
    ...str(2, 'attnkit_mha'),
    ...bytes(11, valueInfo('query', dims)),
    ...bytes(11, valueInfo('key', dims)),
    ...bytes(11, valueInfo('value', dims)),
    ...bytes(12, valueInfo('y', dims)),
  ];
  // ModelProto { ir_version = 1, producer_name = 2, graph = 7, opset_import = 8 { domain = 1, version = 2 } }
  const model = [
    ...int(1, 8),
    ...str(2, 'attnkit-bench'),
    ...bytes(7, graph),
    ...bytes(8, [...str(1, ''), ...int(2, 17)]),
    ...bytes(8, [...str(1, 'com.microsoft'), ...int(2, 1)]),
  ];
  return Uint8Array.from(model);
}

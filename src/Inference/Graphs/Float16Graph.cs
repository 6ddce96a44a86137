using System.Runtime.InteropServices;
using Google.Protobuf;
using Onnx;
using DT = Onnx.TensorProto.Types.DataType;

namespace Serving.Inference.Graphs;

/// <summary>
/// The 16-bit form of a generated graph, for the CUDA provider (issue #17 part 4: ONNX Runtime's CUDA
/// <c>GroupQueryAttention</c> takes fp16/bf16 only, and fp16 halves the bytes a step reads): every fp32 initializer,
/// graph input and output becomes fp16 — activations, the K/V cache, adapter factors and masks alike — and integer
/// tensors (positions, sequence lengths, plans, quantised weights) are left as they are. The node list, its operator
/// types, attributes and shapes are unchanged: every operator the builder emits for the CUDA variants (MatMul,
/// FusedMatMul, the (Skip)(Simplified)LayerNormalization family, FastGelu, GroupQueryAttention, RotaryEmbedding,
/// MatMulNBits, Split, Reshape, GatherND, Add, Mul, Sigmoid) is defined for fp16; the norms compute their statistics
/// in fp32 inside the kernel. Graphs with the CPU custom operators (segmented adapters, packed attention) are refused:
/// those kernels are fp32.
/// </summary>
internal static class Float16Graph
{
    /// <summary>Custom-operator domains whose kernels take fp32 only.</summary>
    private static readonly HashSet<string> Fp32OnlyDomains = [Adapters.SegmentedLoraOp.Domain, Attention.SlotAttentionOp.Domain];

    /// <summary>Converts a serialised graph (see the type's summary).</summary>
    public static byte[] Convert(byte[] model)
    {
        var proto = ModelProto.Parser.ParseFrom(model);
        Convert(proto.Graph);
        return proto.ToByteArray();
    }

    /// <summary>
    /// Converts a graph built with <see cref="GraphBuilder.ShareWeights"/>: the graph as <see cref="Convert(byte[])"/>,
    /// and every fp32 shared weight to a <see cref="Half"/> array of the same shape (the values the session's
    /// <c>AddInitializer</c> supplies must match the placeholder's type).
    /// </summary>
    public static (byte[] Model, List<(string Name, Array Values, long[] Dims)> Shared) Convert(
        (byte[] Model, List<(string Name, Array Values, long[] Dims)> Shared) built) =>
        (Convert(built.Model), built.Shared.Select(s => (s.Name, s.Values is float[] f ? (Array)ToHalf(f) : s.Values, s.Dims)).ToList());

    private static void Convert(GraphProto graph)
    {
        foreach (var node in graph.Node)
        {
            if (Fp32OnlyDomains.Contains(node.Domain))
            {
                throw new NotSupportedException($"node '{node.Name}' ({node.Domain}.{node.OpType}) runs in fp32 only; build the CUDA variant (no custom operators) for fp16");
            }
            foreach (var attribute in node.Attribute)
            {
                if (attribute.Type is AttributeProto.Types.AttributeType.Tensor or AttributeProto.Types.AttributeType.Graph)
                {
                    throw new NotSupportedException($"node '{node.Name}': attribute '{attribute.Name}' holds a {attribute.Type}, which this conversion does not rewrite");
                }
            }
            if (node.OpType == "Cast" && node.Domain == "" && node.Attribute.FirstOrDefault(a => a.Name == "to") is { } to && to.I == (long)DT.Float)
            {
                to.I = (long)DT.Float16;
            }
        }
        foreach (var tensor in graph.Initializer)
        {
            if (tensor.DataType != (int)DT.Float) continue;
            if (tensor.FloatData.Count > 0) throw new NotSupportedException($"initializer '{tensor.Name}' keeps its values in float_data; the builder writes raw_data");
            var halves = ToHalf(MemoryMarshal.Cast<byte, float>(tensor.RawData.Span));
            tensor.DataType = (int)DT.Float16;
            tensor.RawData = UnsafeByteOperations.UnsafeWrap(MemoryMarshal.AsBytes(halves.AsSpan()).ToArray());
        }
        foreach (var value in graph.Input.Concat(graph.Output).Concat(graph.ValueInfo))
        {
            if (value.Type?.TensorType is { } t && t.ElemType == (int)DT.Float) t.ElemType = (int)DT.Float16;
        }
    }

    /// <summary>Rounds each value to the nearest fp16 (ties to even; out-of-range values become ±∞).</summary>
    public static Half[] ToHalf(ReadOnlySpan<float> values)
    {
        var halves = new Half[values.Length];
        for (var i = 0; i < values.Length; i++) halves[i] = (Half)values[i];
        return halves;
    }
}

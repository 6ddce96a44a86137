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
/// those kernels are fp32. Named inputs and outputs may keep fp32 at the boundary (a Cast inside the graph): the engine
/// keeps its hidden-state buffers, embedding, logits and adapter slot tables in fp32 and the K/V cache, the blocks' and the
/// head's weights and arithmetic in fp16.
/// </summary>
internal static class Float16Graph
{
    /// <summary>Custom-operator domains whose kernels take fp32 only.</summary>
    private static readonly HashSet<string> Fp32OnlyDomains = [Adapters.SegmentedLoraOp.Domain, Attention.SlotAttentionOp.Domain, Numerics.SkipLayerNormOp.Domain];

    /// <summary>Converts a serialised graph (see the type's summary); inputs and outputs for which <paramref name="keepFp32"/> holds stay fp32.</summary>
    public static byte[] Convert(byte[] model, Func<string, bool>? keepFp32 = null) => Parse(model, keepFp32).ToByteArray();

    private static ModelProto Parse(byte[] model, Func<string, bool>? keepFp32)
    {
        var proto = ModelProto.Parser.ParseFrom(model);
        Convert(proto.Graph);
        if (keepFp32 is not null) KeepFp32Boundaries(proto.Graph, keepFp32);
        return proto;
    }

    /// <summary>The block boundaries the engine keeps in fp32: hidden state in and out, and the adapter inputs.</summary>
    public static bool EngineBoundary(string name) =>
        name is BlockGraph.Hidden or BlockGraph.HiddenOut || name.StartsWith("lora_", StringComparison.Ordinal); // float ones only: integer inputs are never converted

    /// <summary>The head's boundaries kept in fp32: the hidden rows in and the logits out (the engine's buffers).</summary>
    public static bool HeadBoundary(string name) => name is HeadGraph.Hidden or HeadGraph.Logits;

    /// <summary>
    /// Converts a graph built with <see cref="GraphBuilder.ShareWeights"/>: the graph as <see cref="Convert(byte[])"/>,
    /// and every fp32 shared weight to a <see cref="Half"/> array of the same shape (the values the session's
    /// <c>AddInitializer</c> supplies must match the placeholder's type).
    /// </summary>
    /// <remarks>
    /// With <paramref name="inlineShared"/> the weights are written into the graph instead and the list comes back
    /// empty: ONNX Runtime's CPU provider casts fp16 MatMul weights to fp32 and constant-folds that cast from the
    /// graph's placeholder, before <c>AddInitializer</c>'s values apply (measured: the outputs were those of zero
    /// weights), so on the CPU each session holds its own fp16 copy.
    /// </remarks>
    public static (byte[] Model, List<(string Name, Array Values, long[] Dims)> Shared) Convert(
        (byte[] Model, List<(string Name, Array Values, long[] Dims)> Shared) built, Func<string, bool>? keepFp32 = null, bool inlineShared = false)
    {
        var shared = built.Shared.Select(s => (s.Name, s.Values is float[] f ? (Array)ToHalf(f) : s.Values, s.Dims)).ToList();
        var proto = Parse(built.Model, keepFp32);
        if (!inlineShared) return (proto.ToByteArray(), shared);
        var byName = proto.Graph.Initializer.ToDictionary(t => t.Name);
        foreach (var (name, values, _) in shared)
        {
            byName[name].RawData = values switch
            {
                Half[] halves => UnsafeByteOperations.UnsafeWrap(MemoryMarshal.AsBytes(halves.AsSpan()).ToArray()),
                byte[] bytes => UnsafeByteOperations.UnsafeWrap(bytes),
                _ => throw new InvalidOperationException($"shared weight '{name}' of type {values.GetType()}"),
            };
        }
        return (proto.ToByteArray(), []);
    }

    /// <summary>
    /// Inputs named by <paramref name="keep"/> go back to fp32 with a Cast to fp16 before their first use; outputs named
    /// by it are produced in fp16 under another name and cast to fp32 last.
    /// </summary>
    private static void KeepFp32Boundaries(GraphProto graph, Func<string, bool> keep)
    {
        var first = new List<NodeProto>();
        foreach (var input in graph.Input.Where(i => i.Type.TensorType.ElemType == (int)DT.Float16 && keep(i.Name)))
        {
            input.Type.TensorType.ElemType = (int)DT.Float;
            var inner = input.Name + "_fp16";
            foreach (var node in graph.Node) Rename(node.Input, input.Name, inner);
            first.Add(Cast(input.Name, inner, DT.Float16));
        }
        var last = new List<NodeProto>();
        foreach (var output in graph.Output.Where(o => o.Type.TensorType.ElemType == (int)DT.Float16 && keep(o.Name)))
        {
            output.Type.TensorType.ElemType = (int)DT.Float;
            var inner = output.Name + "_fp16";
            foreach (var node in graph.Node)
            {
                Rename(node.Input, output.Name, inner);
                Rename(node.Output, output.Name, inner);
            }
            last.Add(Cast(inner, output.Name, DT.Float));
        }
        for (var i = first.Count - 1; i >= 0; i--) graph.Node.Insert(0, first[i]);
        graph.Node.Add(last);
    }

    private static void Rename(Google.Protobuf.Collections.RepeatedField<string> names, string from, string to)
    {
        for (var i = 0; i < names.Count; i++)
        {
            if (names[i] == from) names[i] = to;
        }
    }

    private static NodeProto Cast(string input, string output, DT to)
    {
        var node = new NodeProto { OpType = "Cast", Name = output + "_cast" };
        node.Input.Add(input);
        node.Output.Add(output);
        node.Attribute.Add(new AttributeProto { Name = "to", Type = AttributeProto.Types.AttributeType.Int, I = (long)to });
        return node;
    }

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

    /// <summary>The same values as ONNX Runtime's fp16 element type (for tensors and <c>AddInitializer</c>).</summary>
    public static Microsoft.ML.OnnxRuntime.Float16[] ToOrt(Half[] values)
    {
        var ort = new Microsoft.ML.OnnxRuntime.Float16[values.Length];
        MemoryMarshal.Cast<Half, ushort>(values).CopyTo(MemoryMarshal.Cast<Microsoft.ML.OnnxRuntime.Float16, ushort>(ort.AsSpan()));
        return ort;
    }
}

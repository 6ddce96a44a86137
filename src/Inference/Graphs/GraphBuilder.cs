using System.Runtime.InteropServices;
using Google.Protobuf;
using Onnx;

namespace Serving.Inference.Graphs;

/// <summary>
/// A thin, typed layer over the ONNX protobuf classes: adds nodes, initializers and graph inputs/outputs and
/// serialises the model for <c>new InferenceSession(byte[])</c>. Dimension names (e.g. "batch") make inputs dynamic.
/// </summary>
internal sealed class GraphBuilder(string name)
{
    public const string MicrosoftDomain = "com.microsoft";
    private const int OnnxOpset = 21;
    private readonly GraphProto _graph = new() { Name = name };
    private int _counter;

    /// <summary>
    /// When set, weights added with <see cref="ShareableWeight"/> are written as zero placeholders of full size and
    /// listed in <see cref="SharedWeights"/>: the session supplies the real values with
    /// <c>SessionOptions.AddInitializer</c>, so several sessions (graph variants) read one copy of the weights, and a
    /// shared <c>PrePackedWeightsContainer</c> keeps one packed copy. (A shape-only placeholder fails ORT's validation
    /// once a LayerNormalization is in the graph; a full-size zero one passes, and is dropped once the session is built.)
    /// </summary>
    public bool ShareWeights { get; init; }

    /// <summary>The weights written as placeholders, by name (with <see cref="ShareWeights"/>).</summary>
    public List<(string Name, Array Values, long[] Dims)> SharedWeights { get; } = [];

    /// <summary>Adds an fp32 weight, copied into the model at <see cref="ToBytes"/>.</summary>
    public string Weight(string weightName, float[] values, params long[] dims) => AddWeight(weightName, values, dims, shareable: false);

    /// <summary>Adds a large fp32 weight that sessions may share (see <see cref="ShareWeights"/>); inline otherwise.</summary>
    public string ShareableWeight(string weightName, float[] values, params long[] dims) => AddWeight(weightName, values, dims, shareable: true);

    private string AddWeight(string weightName, float[] values, long[] dims, bool shareable)
    {
        long n = 1;
        foreach (var d in dims) n *= d;
        if (n != values.Length)
        {
            throw new ArgumentException($"weight '{weightName}': {values.Length} values for shape [{string.Join(", ", dims)}]");
        }
        var shared = ShareWeights && shareable;
        if (shared) SharedWeights.Add((weightName, values, dims));
        var tensor = new TensorProto
        {
            Name = weightName,
            DataType = (int)TensorProto.Types.DataType.Float,
            RawData = shared
                ? UnsafeByteOperations.UnsafeWrap(new byte[values.Length * sizeof(float)])
                : UnsafeByteOperations.UnsafeWrap(MemoryMarshal.AsBytes(values.AsSpan()).ToArray()),
        };
        tensor.Dims.AddRange(dims);
        _graph.Initializer.Add(tensor);
        return weightName;
    }

    /// <summary>Adds a large uint8 weight (packed quantised values) that sessions may share, as <see cref="ShareableWeight"/>.</summary>
    public string ShareableBytes(string weightName, byte[] values, params long[] dims)
    {
        long n = 1;
        foreach (var d in dims) n *= d;
        if (n != values.Length)
        {
            throw new ArgumentException($"weight '{weightName}': {values.Length} bytes for shape [{string.Join(", ", dims)}]");
        }
        if (ShareWeights) SharedWeights.Add((weightName, values, dims));
        var tensor = new TensorProto
        {
            Name = weightName,
            DataType = (int)TensorProto.Types.DataType.Uint8,
            RawData = ShareWeights
                ? UnsafeByteOperations.UnsafeWrap(new byte[values.Length])
                : UnsafeByteOperations.UnsafeWrap(values),
        };
        tensor.Dims.AddRange(dims);
        _graph.Initializer.Add(tensor);
        return weightName;
    }

    /// <summary>Adds an int64 constant (shapes, split sizes).</summary>
    public string Int64s(string constName, params long[] values)
    {
        var tensor = new TensorProto
        {
            Name = constName,
            DataType = (int)TensorProto.Types.DataType.Int64,
            RawData = ByteString.CopyFrom(MemoryMarshal.AsBytes(values.AsSpan())),
        };
        tensor.Dims.Add(values.Length);
        _graph.Initializer.Add(tensor);
        return constName;
    }

    public void Input(string inputName, TensorProto.Types.DataType type, params object[] dims) =>
        _graph.Input.Add(ValueInfo(inputName, type, dims));

    public void Output(string outputName, TensorProto.Types.DataType type, params object[] dims) =>
        _graph.Output.Add(ValueInfo(outputName, type, dims));

    /// <summary>Adds a node with one output and returns the output name.</summary>
    public string Node(string opType, string[] inputs, string? output = null, string domain = "", params (string Name, object Value)[] attributes) =>
        NodeMulti(opType, inputs, [output ?? Fresh(opType)], domain, attributes)[0];

    /// <summary>Adds a node with several outputs ("" for an unused optional output).</summary>
    public string[] NodeMulti(string opType, string[] inputs, string[] outputs, string domain = "", params (string Name, object Value)[] attributes)
    {
        var node = new NodeProto { OpType = opType, Domain = domain, Name = Fresh(opType + "_node") };
        node.Input.AddRange(inputs);
        node.Output.AddRange(outputs);
        foreach (var (attrName, value) in attributes)
        {
            node.Attribute.Add(Attribute(attrName, value));
        }
        _graph.Node.Add(node);
        return outputs;
    }

    public string Fresh(string prefix) => $"{prefix}_{_counter++}";

    public byte[] ToBytes()
    {
        var model = new ModelProto
        {
            IrVersion = 10,
            ProducerName = "Serving.Inference",
            Graph = _graph,
        };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = OnnxOpset });
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = MicrosoftDomain, Version = 1 });
        foreach (var domain in _graph.Node.Select(n => n.Domain).Where(d => d is not ("" or MicrosoftDomain)).Distinct())
        {
            model.OpsetImport.Add(new OperatorSetIdProto { Domain = domain, Version = 1 }); // custom operators
        }
        return model.ToByteArray();
    }

    private static AttributeProto Attribute(string name, object value) => value switch
    {
        int i => new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = i },
        long l => new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = l },
        float f => new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Float, F = f },
        string s => new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.String, S = ByteString.CopyFromUtf8(s) },
        long[] ls => WithInts(new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Ints }, ls),
        _ => throw new ArgumentException($"unsupported attribute type {value.GetType()} for '{name}'"),
    };

    private static AttributeProto WithInts(AttributeProto a, long[] values)
    {
        a.Ints.AddRange(values);
        return a;
    }

    private static ValueInfoProto ValueInfo(string name, TensorProto.Types.DataType type, object[] dims)
    {
        var shape = new TensorShapeProto();
        foreach (var d in dims)
        {
            shape.Dim.Add(d switch
            {
                string p => new TensorShapeProto.Types.Dimension { DimParam = p },
                int v => new TensorShapeProto.Types.Dimension { DimValue = v },
                long v => new TensorShapeProto.Types.Dimension { DimValue = v },
                _ => throw new ArgumentException($"bad dimension {d}"),
            });
        }
        return new ValueInfoProto
        {
            Name = name,
            Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)type, Shape = shape } },
        };
    }
}

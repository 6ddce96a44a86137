namespace Serving.Checkpoints;

/// <summary>One header entry: where a tensor lies in the data buffer (offsets relative to the buffer start).</summary>
public sealed record TensorInfo(string Name, SafetensorsDType DType, long[] Shape, long Begin, long End)
{
    /// <summary>Number of elements (product of the shape; 1 for a scalar).</summary>
    public long ElementCount
    {
        get
        {
            long n = 1;
            foreach (var d in Shape) n *= d;
            return n;
        }
    }

    /// <summary>Byte length of the data.</summary>
    public long ByteLength => End - Begin;

    /// <summary>Shape as "[a, b]" for messages.</summary>
    public string ShapeText => "[" + string.Join(", ", Shape) + "]";
}

namespace Serving.AdapterStore.Tests.Compression;

/// <summary>
/// Independent re-statement of the ComPEFT reference (flatten, torch-style kthvalue threshold with ties kept,
/// unbiased std, sign·α), written with a full sort instead of selection so it shares no code with the codec.
/// </summary>
internal static class ComPeftReference
{
    public static float[] Apply(float[] flat, double density, double factor, out float alpha)
    {
        int n = flat.Length;
        var output = new float[n];
        double mean = 0;
        foreach (float v in flat) mean += v;
        double std = 0;
        if (n >= 2)
        {
            mean /= n;
            double ss = 0;
            foreach (float v in flat) ss += (v - mean) * (v - mean);
            std = Math.Sqrt(ss / (n - 1));
        }
        alpha = (float)(factor * std);
        if (n == 0) return output;
        int k = density >= 1 ? n : (int)Math.Floor(n * density);
        float threshold;
        if (k >= n)
        {
            threshold = float.NegativeInfinity;
        }
        else
        {
            var sorted = flat.Select(MathF.Abs).OrderBy(x => x).ToArray();
            threshold = sorted[n - k - 1]; // kthvalue(n - k), 1-based
        }
        for (int i = 0; i < n; i++)
        {
            bool keep = MathF.Abs(flat[i]) >= threshold;
            output[i] = keep ? MathF.Sign(flat[i]) * alpha : 0f;
        }
        return output;
    }
}

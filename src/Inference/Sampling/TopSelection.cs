using System.Numerics;

namespace Serving.Inference.Sampling;

/// <summary>
/// Partial selection over a vocabulary-sized span without sorting it. Order is "value descending, then id
/// ascending", so ties always resolve the same way. NaN values are never selected by the heap.
/// </summary>
internal static class TopSelection
{
    /// <summary>At or below this k a bounded heap beats quickselect (one pass, most elements rejected by a vector compare).</summary>
    public const int HeapLimit = 1024;

    /// <summary>Puts the ids of the <paramref name="k"/> best values into <c>heap[..k]</c> as a heap whose root is the worst of them.</summary>
    public static void SelectTopK(ReadOnlySpan<float> values, int k, Span<int> heap)
    {
        for (int i = 0; i < k; i++)
        {
            heap[i] = i;
        }
        for (int i = k / 2 - 1; i >= 0; i--)
        {
            SiftDown(values, heap, i, k);
        }

        float min = values[heap[0]];
        int j = k;
        int width = Vector<float>.Count;
        for (; j <= values.Length - width; j += width)
        {
            // Most of a vocabulary loses to the current k-th best; reject it a vector at a time.
            if (!Vector.GreaterThanAny(new Vector<float>(values.Slice(j, width)), new Vector<float>(min)))
            {
                continue;
            }
            for (int t = j; t < j + width; t++)
            {
                // Strict: a later id with an equal value ranks below the current root.
                if (values[t] > min)
                {
                    heap[0] = t;
                    SiftDown(values, heap, 0, k);
                    min = values[heap[0]];
                }
            }
        }
        for (; j < values.Length; j++)
        {
            if (values[j] > min)
            {
                heap[0] = j;
                SiftDown(values, heap, 0, k);
                min = values[heap[0]];
            }
        }
    }

    /// <summary>Sorts a small set of ids best first (insertion sort; used for at most 20 top logprobs).</summary>
    public static void SortBestFirst(ReadOnlySpan<float> values, Span<int> ids)
    {
        for (int i = 1; i < ids.Length; i++)
        {
            int id = ids[i];
            int j = i - 1;
            while (j >= 0 && Worse(values, ids[j], id))
            {
                ids[j + 1] = ids[j];
                j--;
            }
            ids[j + 1] = id;
        }
    }

    /// <summary>The k-th largest value (1-based); <paramref name="scratch"/> must hold values.Length floats and is overwritten.</summary>
    public static float KthLargest(ReadOnlySpan<float> values, int k, Span<int> heap, Span<float> scratch)
    {
        if (k <= HeapLimit)
        {
            SelectTopK(values, k, heap);
            return values[heap[0]];
        }
        Span<float> copy = scratch[..values.Length];
        values.CopyTo(copy);
        return NthSmallest(copy, values.Length - k);
    }

    /// <summary>Hoare quickselect with a median-of-three pivot; reorders <paramref name="a"/>.</summary>
    internal static float NthSmallest(Span<float> a, int n)
    {
        int lo = 0, hi = a.Length - 1;
        while (hi > lo)
        {
            int mid = lo + (hi - lo) / 2;
            float x = a[lo], y = a[mid], z = a[hi];
            float pivot = x < y ? (y < z ? y : (x < z ? z : x)) : (x < z ? x : (y < z ? z : y));
            int i = lo, j = hi;
            while (i <= j)
            {
                while (a[i] < pivot) i++;
                while (a[j] > pivot) j--;
                if (i <= j)
                {
                    (a[i], a[j]) = (a[j], a[i]);
                    i++;
                    j--;
                }
            }
            // Now a[lo..j] <= pivot <= a[i..hi] and everything strictly between equals the pivot.
            if (n <= j) hi = j;
            else if (n >= i) lo = i;
            else return a[n];
        }
        return a[lo];
    }

    private static bool Worse(ReadOnlySpan<float> v, int a, int b) => v[a] < v[b] || (v[a] == v[b] && a > b);

    private static void SiftDown(ReadOnlySpan<float> v, Span<int> heap, int i, int count)
    {
        while (true)
        {
            int left = 2 * i + 1;
            if (left >= count)
            {
                return;
            }
            int worst = left;
            int right = left + 1;
            if (right < count && Worse(v, heap[right], heap[left]))
            {
                worst = right;
            }
            if (!Worse(v, heap[worst], heap[i]))
            {
                return;
            }
            (heap[i], heap[worst]) = (heap[worst], heap[i]);
            i = worst;
        }
    }
}

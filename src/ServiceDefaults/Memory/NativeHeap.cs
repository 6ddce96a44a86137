using System.Runtime.InteropServices;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Options;

namespace Serving.ServiceDefaults.Memory;

/// <summary>
/// The <c>NativeHeap</c> section: glibc's allocator settings for a long-running server. Native allocations (ONNX Runtime's
/// buffers and arenas, Garnet's I/O buffers, TLS, compression) come from glibc's malloc; with its defaults a process that
/// serves for hours keeps growing (docs/overload.md, "Soak"): every thread that allocates may get an arena of its own (up
/// to 8 per core), and after a large block is freed glibc raises its mmap threshold (up to 32 MiB), so later large
/// blocks come from the arenas, where freed space is reused only by allocations that fit it and rarely returns to the OS.
/// </summary>
public sealed class NativeHeapOptions
{
    /// <summary>Configuration section.</summary>
    public const string SectionName = "NativeHeap";

    /// <summary>Most malloc arenas (glibc's <c>M_ARENA_MAX</c>); 0 leaves glibc's default (8 per core); 0–64, default 2.</summary>
    public int ArenaMax { get; set; } = 2;

    /// <summary>
    /// Blocks of at least this many bytes are mapped on their own and unmapped when freed (glibc's <c>M_MMAP_THRESHOLD</c>;
    /// setting it also fixes the threshold, which glibc otherwise raises as large blocks are freed); 0 (the default)
    /// leaves glibc's dynamic threshold; 0 or 4 KiB–32 MiB. Not set by default: in a 14-minute comparison a fixed 128 KiB
    /// started lowest but grew outside the GC heap faster than the default (docs/overload.md, "Soak").
    /// </summary>
    public int MmapThresholdBytes { get; set; }
}

/// <summary>Checks <see cref="NativeHeapOptions"/>.</summary>
public sealed class NativeHeapOptionsValidator : IValidateOptions<NativeHeapOptions>
{
    /// <inheritdoc />
    public ValidateOptionsResult Validate(string? name, NativeHeapOptions options)
    {
        var errors = new List<string>();
        if (options.ArenaMax is < 0 or > 64) errors.Add($"{NativeHeapOptions.SectionName}:ArenaMax must be between 0 (glibc's default) and 64.");
        if (options.MmapThresholdBytes != 0 && options.MmapThresholdBytes is < 4096 or > 32 << 20)
            errors.Add($"{NativeHeapOptions.SectionName}:MmapThresholdBytes must be 0 (glibc's default) or between 4096 and 33554432.");
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}

/// <summary>Applies <see cref="NativeHeapOptions"/> to glibc's malloc (<c>mallopt</c>); elsewhere (not Linux, musl) it does nothing.</summary>
public static class NativeHeap
{
    private const int MmapThreshold = -3; // M_MMAP_THRESHOLD
    private const int ArenaMax = -8;      // M_ARENA_MAX

    /// <summary>
    /// Reads and checks the <c>NativeHeap</c> section (<see cref="OptionsValidationException"/> when invalid) and applies
    /// it. Call it before the host starts its work threads: arenas that exist already stay.
    /// </summary>
    public static NativeHeapOptions Configure(IConfiguration configuration)
    {
        var options = configuration.GetSection(NativeHeapOptions.SectionName).Get<NativeHeapOptions>() ?? new NativeHeapOptions();
        var result = new NativeHeapOptionsValidator().Validate(null, options);
        if (result.Failed) throw new OptionsValidationException(Options.DefaultName, typeof(NativeHeapOptions), result.Failures);
        Apply(options);
        return options;
    }

    /// <summary>Sets what <paramref name="options"/> asks for; false when this is not glibc (nothing set).</summary>
    public static bool Apply(NativeHeapOptions options)
    {
        if (!OperatingSystem.IsLinux()) return false;
        try
        {
            if (options.ArenaMax > 0) _ = MallOpt(ArenaMax, options.ArenaMax);
            if (options.MmapThresholdBytes > 0) _ = MallOpt(MmapThreshold, options.MmapThresholdBytes);
            return true;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return false; // not glibc (e.g. musl)
        }
    }

    [DllImport("libc", EntryPoint = "mallopt")]
    private static extern int MallOpt(int param, int value);
}

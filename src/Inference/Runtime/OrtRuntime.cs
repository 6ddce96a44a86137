using Microsoft.ML.OnnxRuntime;

namespace Serving.Inference.Runtime;

/// <summary>
/// The process-wide ONNX Runtime environment with one global intra-op thread pool. Per-unit sessions share it
/// (<see cref="SessionOptions.DisablePerSessionThreads"/>): with a pool per session, idle pools spin against each
/// other and chained per-layer sessions ran 5–9× slower on 2 cores (TOOLCHAIN.md).
/// </summary>
public static class OrtRuntime
{
    private static readonly Lock Gate = new();
    private static int _threads;
    private static int _profiles;

    /// <summary>
    /// Environment variable naming a path prefix: when set, every session ONNX Runtime creates writes a profile
    /// (Chrome trace JSON, one file per session, <c>PREFIX_NNN_time.json</c>) when it is disposed. For finding where a
    /// step's time goes (<c>bench/DecodeBench --profile</c>); profiling slows every run, so never in production.
    /// </summary>
    public const string ProfileVariable = "SERVING_ORT_PROFILE";

    /// <summary>Whether <see cref="ProfileVariable"/> is set (each session then needs options of its own).</summary>
    public static bool Profiling => !string.IsNullOrEmpty(Environment.GetEnvironmentVariable(ProfileVariable));

    /// <summary>Threads of the global pool, once initialised.</summary>
    public static int Threads => _threads;

    /// <summary>
    /// Creates the environment on first call (later calls change nothing). <paramref name="spin"/>: idle pool threads
    /// spin before sleeping — fastest for a process that only decodes, but in a server it takes CPU from the HTTP
    /// threads on small machines (the node turns it off).
    /// </summary>
    public static void EnsureInitialized(int threads = 0, bool spin = true)
    {
        lock (Gate)
        {
            if (_threads != 0) return;
            var n = threads > 0 ? threads : Environment.ProcessorCount;
            using var threading = new OrtThreadingOptions
            {
                GlobalIntraOpNumThreads = n,
                GlobalInterOpNumThreads = 1,
                GlobalSpinControl = spin,
            };
            var options = new EnvironmentCreationOptions
            {
                threadOptions = threading,
                logLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR,
                logId = "serving",
            };
            OrtEnv.CreateInstanceWithOptions(ref options);
            _threads = n;
        }
    }

    /// <summary>Session options for one execution unit on the configured provider.</summary>
    public static SessionOptions CreateSessionOptions(RuntimeOptions options)
    {
        EnsureInitialized(options.Threads, options.SpinThreads);
        var so = new SessionOptions
        {
            GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL,
            ExecutionMode = ExecutionMode.ORT_SEQUENTIAL,
            LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR,
        };
        so.DisablePerSessionThreads();
        if (Environment.GetEnvironmentVariable(ProfileVariable) is { Length: > 0 } prefix)
        {
            // A number per options object keeps sessions' files apart.
            // The prefix first: setting EnableProfiling passes the prefix held at that moment.
            so.ProfileOutputPathPrefix = $"{prefix}_{Interlocked.Increment(ref _profiles):D3}";
            so.EnableProfiling = true;
        }
        // The C# residual + LayerNorm operator, which the CPU graphs use in place of the contrib op (BlockGraph.SkipNorm).
        if (options.ExecutionProvider == ExecutionProviderKind.Cpu) Numerics.SkipLayerNormOp.Register(so);
        if (options.ExecutionProvider == ExecutionProviderKind.Cuda)
        {
#if USE_CUDA
            so.AppendExecutionProvider_CUDA(options.DeviceId);
#else
            so.Dispose();
            throw new NotSupportedException("this build has the CPU ONNX Runtime; rebuild with -p:UseCuda=true for the CUDA provider");
#endif
        }
        return so;
    }
}

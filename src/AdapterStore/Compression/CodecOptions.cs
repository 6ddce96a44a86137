using System.Globalization;
using System.Text.Json.Serialization;

namespace Serving.AdapterStore.Compression;

/// <summary>Which codec stores the tensors (the byte in a container's prefix; <see cref="Auto"/> is only ever requested).</summary>
[JsonConverter(typeof(JsonStringEnumConverter<AdapterCodec>))]
public enum AdapterCodec
{
    /// <summary>Lossy ComPEFT (sparse ternary, or sparse with a few magnitude bits) for LoRA A/B.</summary>
    ComPeft = 0,
    /// <summary>Lossless: tensors in their uploaded dtype, byte-shuffled, zstd.</summary>
    Lossless = 1,
    /// <summary>Lossy: per-component uniform quantisation of (re-factored) LoRA factors, zstd-coded symbols.</summary>
    Quant = 2,
    /// <summary>Request only: the smallest setting whose predicted quality is within the budget (<see cref="AutoCodec"/>).</summary>
    Auto = 100,
}

/// <summary>In which basis a module's update ΔW = s·B·A is stored.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<FactorBasis>))]
public enum FactorBasis
{
    /// <summary>The uploaded A and B as they are.</summary>
    Factors,
    /// <summary>Balanced SVD factors <c>B' = U·√Σ</c>, <c>A' = √Σ·Vᵀ</c> (scale 1), optionally truncated by energy.</summary>
    Svd,
}

/// <summary>How the quantisation noise is spread over modules.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<BudgetScope>))]
public enum BudgetScope
{
    /// <summary>Every module gets its own step scale so that each module's relative ΔW error is the target.</summary>
    PerModule,
    /// <summary>One step scale for the whole adapter (equal noise per weighted entry): the overall relative error is the target.</summary>
    Global,
}

/// <summary>Parameters of <see cref="AdapterCodec.Quant"/>.</summary>
public sealed record QuantOptions
{
    /// <summary>Default target relative ΔW error when <see cref="Bits"/> is 0.</summary>
    public const double DefaultTargetError = 0.3;

    /// <summary>Basis the factors are quantised in.</summary>
    public FactorBasis Basis { get; init; } = FactorBasis.Svd;

    /// <summary>SVD basis only: keep the leading components holding this fraction of ‖ΔW‖² (1 keeps every non-zero one).</summary>
    public double Energy { get; init; } = 1.0;

    /// <summary>0: steps set by <see cref="TargetError"/>; 2–8: plain k-bit symbols with a step per component from its largest magnitude.</summary>
    public int Bits { get; init; }

    /// <summary>
    /// Weighted relative ΔW error the steps aim at (per module or overall, see <see cref="Budget"/>), in (0, 1):
    /// √(W·lost signal + noise) / ‖ΔW‖ with the error split and W of <see cref="QualityProxy"/>; for an update that
    /// only gets noise this is the plain ‖ΔW − ΔŴ‖_F / ‖ΔW‖_F.
    /// </summary>
    public double TargetError { get; init; } = DefaultTargetError;

    /// <summary>How the error budget is spread over modules.</summary>
    public BudgetScope Budget { get; init; } = BudgetScope.PerModule;

    /// <summary>Weight of a dropped component's error against quantisation noise when deciding what to drop.</summary>
    internal double DropWeight { get; init; } = QualityProxy.SignalWeight;

    /// <summary>Throws when a parameter is out of range.</summary>
    public void Validate()
    {
        if (!(Energy > 0 && Energy <= 1)) throw new ArgumentOutOfRangeException(nameof(Energy), Energy, "energy must be in (0, 1]");
        if (Bits != 0 && (Bits < 2 || Bits > 8)) throw new ArgumentOutOfRangeException(nameof(Bits), Bits, "bits must be 0 (error-targeted) or 2–8");
        if (Bits == 0 && !(TargetError > 0 && TargetError < 1)) throw new ArgumentOutOfRangeException(nameof(TargetError), TargetError, "target error must be in (0, 1)");
        if (Energy < 1 && Basis != FactorBasis.Svd) throw new ArgumentOutOfRangeException(nameof(Energy), Energy, "energy truncation needs the SVD basis");
    }
}

/// <summary>What <see cref="AdapterCodec.Auto"/> optimises for.</summary>
public sealed record AutoOptions
{
    /// <summary>Default quality budget: keep at least 95% of the adapter's improvement.</summary>
    public const double DefaultMinKept = 0.95;

    /// <summary>Smallest predicted fraction of the adapter's loss improvement kept, in (0, 1].</summary>
    public double MinKept { get; init; } = DefaultMinKept;

    /// <summary>Throws when a parameter is out of range.</summary>
    public void Validate()
    {
        if (!(MinKept > 0 && MinKept <= 1)) throw new ArgumentOutOfRangeException(nameof(MinKept), MinKept, "min kept must be in (0, 1]");
    }
}

/// <summary>Codec choice and parameters for one upload.</summary>
public sealed record CodecOptions
{
    /// <summary>Codec; VeRA and VB-LoRA are always stored losslessly (already tiny; quantising a shared random basis would destroy it).</summary>
    public AdapterCodec Codec { get; init; } = AdapterCodec.Auto;
    /// <summary>ComPEFT parameters.</summary>
    public ComPeftOptions ComPeft { get; init; } = new();
    /// <summary>Quantiser parameters.</summary>
    public QuantOptions Quant { get; init; } = new();
    /// <summary>Quality budget of <see cref="AdapterCodec.Auto"/>.</summary>
    public AutoOptions Auto { get; init; } = new();
    /// <summary>zstd level for the lossless codec.</summary>
    public int ZstdLevel { get; init; } = 9;

    /// <summary>Throws <see cref="ArgumentException"/> naming the parameter out of range.</summary>
    public void Validate()
    {
        switch (Codec)
        {
            case AdapterCodec.ComPeft: ComPeft.Validate(); break;
            case AdapterCodec.Quant: Quant.Validate(); break;
            case AdapterCodec.Auto: Auto.Validate(); break;
        }
        if (ZstdLevel < 1 || ZstdLevel > 22) throw new ArgumentOutOfRangeException(nameof(ZstdLevel), ZstdLevel, "zstd level must be 1–22");
    }

    /// <summary>A short, stable description of the setting, e.g. <c>quant svd err=0.3</c> or <c>compeft d=0.1 α=σ</c>.</summary>
    public string Describe() => Codec switch
    {
        AdapterCodec.Lossless => "lossless",
        AdapterCodec.Auto => F($"auto kept>={Auto.MinKept:0.###}"),
        AdapterCodec.Quant => "quant " + Basis(Quant.Basis, Quant.Energy)
            + (Quant.Bits > 0 ? F($" int{Quant.Bits}") : F($" err={Quant.TargetError:0.###}") + (Quant.Budget == BudgetScope.Global ? " global" : "") + (Quant.DropWeight != QualityProxy.SignalWeight ? F($" w={Quant.DropWeight:0.##}") : "")),
        _ => "compeft " + Basis(ComPeft.Basis, ComPeft.Energy) + F($" d={ComPeft.Density:0.###}")
            + (ComPeft.Scope == ThresholdScope.PerTensor ? " per-tensor" : "")
            + ComPeft.Alpha switch { AlphaMode.Sigma => F($" α={ComPeft.Factor:0.###}σ"), AlphaMode.Tensor => " α=mse/tensor", _ => " α=mse/component" }
            + (ComPeft.MagnitudeBits > 0 ? F($" mag={ComPeft.MagnitudeBits}b") : ""),
    };

    private static string Basis(FactorBasis basis, double energy) =>
        basis == FactorBasis.Factors ? "factors" : energy < 1 ? F($"svd e={energy:0.###}") : "svd";

    private static string F(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);
}

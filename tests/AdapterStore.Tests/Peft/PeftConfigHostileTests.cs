using System.Text;
using Serving.AdapterStore.Peft;

namespace Serving.AdapterStore.Tests.Peft;

/// <summary>
/// adapter_config.json inputs that tools/fuzz (target adapter-config) found escaping <see cref="PeftConfig.Parse"/> as
/// InvalidOperationException or FormatException (a 500 on upload) instead of the 4xx with a code.
/// </summary>
public sealed class PeftConfigHostileTests
{
    private const string Good = """{"peft_type":"LORA","r":2,"lora_alpha":4,"target_modules":["q_proj"]}""";

    private static AdapterValidationException Refused(byte[] json) => Assert.Throws<AdapterValidationException>(() => PeftConfig.Parse(json));

    [Theory]
    [InlineData(new byte[] { 0xff })]             // not UTF-8 at all
    [InlineData(new byte[] { 0xe2, 0x82 })]       // cut short
    [InlineData(new byte[] { 0xc0, 0xaf })]       // overlong
    [InlineData(new byte[] { 0xed, 0xa0, 0x80 })] // a surrogate in UTF-8
    public void Parse_InvalidUtf8InAString_400ConfigInvalidJson(byte[] bad)
    {
        Assert.NotNull(PeftConfig.Parse(Encoding.UTF8.GetBytes(Good)));
        var json = Encoding.UTF8.GetBytes(Good.Replace("q_proj", "q_pXoj", StringComparison.Ordinal));
        int at = Array.IndexOf(json, (byte)'X');
        var e = Refused([.. json[..at], .. bad, .. json[(at + 1)..]]);
        Assert.Equal(AdapterErrors.ConfigInvalidJson, e.Code);
        Assert.Equal(400, e.Status);
        Assert.Contains("target_modules[0]", e.Message);
    }

    [Fact]
    public void Parse_LoneSurrogateEscape_400ConfigInvalidJson()
    {
        var e = Refused(Encoding.UTF8.GetBytes(Good.Replace("q_proj", "q_\\ud800", StringComparison.Ordinal)));
        Assert.Equal(AdapterErrors.ConfigInvalidJson, e.Code);
    }

    [Theory]
    [InlineData("""{"rank_pattern":{"q_proj":"8"}}""", "rank_pattern")]
    [InlineData("""{"alpha_pattern":{"q_proj":1e999}}""", "alpha_pattern")]
    [InlineData("""{"lora_alpha":1e999}""", "lora_alpha")]
    public void Parse_PatternOrNumberOfTheWrongKind_ConfigInvalid(string fields, string named)
    {
        var json = Good.TrimEnd('}') + "," + fields.TrimStart('{');
        var e = Refused(Encoding.UTF8.GetBytes(json));
        Assert.Equal(AdapterErrors.ConfigInvalid, e.Code);
        Assert.Contains(named, e.Message);
    }
}

using System.Globalization;
using System.Text;

namespace Serving.Inference.Chat;

/// <summary>Python's <c>strftime</c> in the C locale, for the codes chat templates use (<c>strftime_now("%d %b %Y")</c>).</summary>
internal static class Strftime
{
    public static string Format(DateTimeOffset t, string format, int line = 0)
    {
        var inv = CultureInfo.InvariantCulture;
        var sb = new StringBuilder();
        for (var i = 0; i < format.Length; i++)
        {
            if (format[i] != '%' || i + 1 == format.Length)
            {
                sb.Append(format[i]);
                continue;
            }
            var code = format[++i];
            sb.Append(code switch
            {
                'd' => t.Day.ToString("00", inv),
                'm' => t.Month.ToString("00", inv),
                'Y' => t.Year.ToString("0000", inv),
                'y' => (t.Year % 100).ToString("00", inv),
                'b' => inv.DateTimeFormat.GetAbbreviatedMonthName(t.Month),
                'B' => inv.DateTimeFormat.GetMonthName(t.Month),
                'a' => inv.DateTimeFormat.GetAbbreviatedDayName(t.DayOfWeek),
                'A' => inv.DateTimeFormat.GetDayName(t.DayOfWeek),
                'H' => t.Hour.ToString("00", inv),
                'I' => ((t.Hour + 11) % 12 + 1).ToString("00", inv),
                'p' => t.Hour < 12 ? "AM" : "PM",
                'M' => t.Minute.ToString("00", inv),
                'S' => t.Second.ToString("00", inv),
                'j' => t.DayOfYear.ToString("000", inv),
                '%' => "%",
                _ => throw new Serving.Inference.Chat.Jinja.ChatTemplateUnsupportedException($"strftime code '%{code}'", line),
            });
        }
        return sb.ToString();
    }
}

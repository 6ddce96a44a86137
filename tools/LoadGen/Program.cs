using Serving.LoadGen.Cli;
using Spectre.Console;

namespace Serving.LoadGen;

internal static class Program
{
    public static async Task<int> Main(string[] args)
    {
        using var cts = new CancellationTokenSource();
        // First Ctrl+C stops the run and still reports; a second one kills the process.
        Console.CancelKeyPress += (_, e) =>
        {
            if (!cts.IsCancellationRequested)
            {
                e.Cancel = true;
                cts.Cancel();
            }
        };

        if (Console.IsOutputRedirected)
        {
            // Spectre assumes 80 columns without a terminal, which wraps the tables in logs.
            AnsiConsole.Profile.Width = 160;
        }

        return await LoadGenApp.RunAsync(args, AnsiConsole.Console, cts.Token).ConfigureAwait(false);
    }
}

using System.Text;
using Serving.Gateway.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Serving.Gateway.Tests.RateLimiting;

/// <summary>
/// Random sequences of requests (completed, refused by the node, malformed at the gateway, too large, streamed and
/// cancelled at a random token) and clock moves against one tenant, checked after every step against an independent
/// model of the accounting: the admission decision (200 / 429 / 400), the amount settled, and the bucket's level.
/// </summary>
[Collection(RedisCollection.Name)]
public sealed class AccountingPropertyTests(RedisFixture redis, ITestOutputHelper output)
{
    private const int Limit = 1500; // 25 tokens a second: requests wait, and n × the context (up to 2048) can exceed it
    private const int Context = 512;

    /// <summary>
    /// The model: the level in 1/60 000 token (so that a whole millisecond refills exactly <see cref="Limit"/> units),
    /// capped at the limit, debt allowed. Written from the README's rules, not from the gateway's code.
    /// </summary>
    private sealed class Model
    {
        private const long Unit = 60_000;
        private long _level = Limit * Unit;

        public long Available => _level >= 0 ? _level / Unit : -((-_level + Unit - 1) / Unit);

        public void Elapse(long ms) => _level = Math.Min(Limit * Unit, _level + ms * Limit);

        public bool TryReserve(long tokens)
        {
            if (_level < tokens * Unit) return false;
            _level -= tokens * Unit;
            return true;
        }

        public void Settle(long reserved, long charged) => _level = Math.Min(Limit * Unit, _level + (reserved - charged) * Unit);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public async Task RandomRequestSequences_BucketMatchesTheModelAfterEveryStep(int seed)
    {
        var random = new Random(seed);
        await using var h = await AccountingHarness.StartAsync(redis.ConnectionString, Limit, Context);
        var model = new Model();
        for (int step = 0; step < 60; step++)
        {
            bool chat = random.Next(2) == 0;
            string prompt = new('x', random.Next(1, 400));
            int maxTokens = random.Next(5) == 0 ? random.Next(600, 100_000) : random.Next(1, 300);
            int n = random.Next(1, 5);
            int promptTokens = random.Next(1, 100);
            int tokens = random.Next(1, Math.Min(maxTokens, 40) + 1);
            int kind = random.Next(7);
            string what;
            switch (kind)
            {
                case 0: // time passes
                {
                    long ms = random.Next(0, 10_000);
                    h.Clock.Advance(TimeSpan.FromMilliseconds(ms));
                    model.Elapse(ms);
                    what = $"+{ms} ms";
                    break;
                }
                case 1: // malformed at the gateway: refused before any reservation
                {
                    byte[] body = random.Next(2) == 0
                        ? Encoding.UTF8.GetBytes("""{"model":"fake","prompt":"a","n":"four"}""")
                        : [.. "{\"model\":\"fake\",\"prompt\":\""u8, 0xff, 0xfe, .. "\"}"u8];
                    var (status, _, _) = await h.SendAsync(chat: false, body);
                    Assert.Equal(400, status);
                    what = "malformed";
                    break;
                }
                default:
                {
                    bool refuse = kind == 2, stream = kind >= 4, cancel = kind >= 5;
                    int cancelAt = cancel ? random.Next(0, tokens) : -1;
                    int? generated = kind == 3 && random.Next(2) == 0 ? tokens * n + random.Next(0, 2500) : null; // alignment candidates: may overdraw
                    var body = AccountingHarness.Body(chat, prompt, new
                    {
                        max_tokens = maxTokens, n, stream, x_fake_tokens = tokens, x_fake_prompt_tokens = promptTokens,
                        x_fake_status = refuse ? (int?)400 : null, x_fake_generated = generated, x_fake_hang_after = cancel ? (int?)cancelAt : null,
                    });
                    long reservation = TokenAccountingTests.Reservation(body.Length, maxTokens, n, Context);
                    bool neverFits = reservation > Limit;
                    bool admitted = !neverFits && model.TryReserve(reservation);
                    if (cancel && admitted)
                    {
                        await h.SendAndCancelAsync(chat, body, cancelAt);
                    }
                    else
                    {
                        var (status, text, _) = await h.SendAsync(chat, body);
                        int expected = neverFits ? 400 : !admitted ? 429 : refuse ? 400 : 200;
                        Assert.True(expected == status, $"step {step}: expected {expected}, got {status}: {text}");
                    }
                    if (admitted)
                    {
                        long charged = refuse ? 0
                            : cancel ? (cancelAt == 0 ? 0 : promptTokens + (long)cancelAt * n)
                            : promptTokens + Math.Max(generated ?? 0, (long)tokens * n);
                        var settled = await h.SettledAsync();
                        Assert.Equal((reservation, charged), settled);
                        model.Settle(reservation, charged);
                    }
                    what = $"{(refuse ? "refused" : cancel ? $"cancelled@{cancelAt}" : stream ? "stream" : "json")} R={reservation} {(neverFits ? "never fits" : admitted ? "admitted" : "waits")}";
                    break;
                }
            }
            Assert.False(h.HasUnreadSettlement, $"step {step} ({what}): a settlement the model did not expect");
            Assert.True(model.Available == h.Available, $"step {step} ({what}): model {model.Available}, gateway {h.Available}");
            output.WriteLine($"{step}: {what} → {model.Available}");
        }
    }
}

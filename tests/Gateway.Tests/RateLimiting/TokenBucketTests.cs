using Microsoft.Extensions.Time.Testing;
using Serving.Gateway.RateLimiting;

namespace Serving.Gateway.Tests.RateLimiting;

/// <summary>The bucket under a controlled clock: continuous refill, exact arithmetic, debt, and the wait it predicts.</summary>
public sealed class TokenBucketTests
{
    [Fact]
    public void TryTake_RefillsContinuouslyAtTheLimitPerMinute()
    {
        var clock = new FakeTimeProvider();
        var bucket = new TokenBucket(clock, 600); // 10 tokens a second
        Assert.True(bucket.TryTake(600, 600, out _));
        Assert.Equal((0, 600), bucket.Read(600));
        clock.Advance(TimeSpan.FromMilliseconds(250));
        Assert.Equal(2, bucket.Read(600).Available); // 2.5 tokens: whole tokens only
        clock.Advance(TimeSpan.FromMilliseconds(50));
        Assert.Equal(3, bucket.Read(600).Available);
        // A thousand reads of 1 ms each lose nothing to rounding: 0.01 token each.
        for (int i = 0; i < 1000; i++)
        {
            clock.Advance(TimeSpan.FromMilliseconds(1));
            bucket.Read(600);
        }
        Assert.Equal(13, bucket.Read(600).Available);
        clock.Advance(TimeSpan.FromHours(1));
        Assert.Equal(600, bucket.Read(600).Available); // never past the limit
    }

    [Fact]
    public void TryTake_TooFew_TakesNothingAndPredictsTheWait()
    {
        var clock = new FakeTimeProvider();
        var bucket = new TokenBucket(clock, 60); // 1 token a second
        Assert.True(bucket.TryTake(50, 60, out _));
        Assert.False(bucket.TryTake(20, 60, out var wait));
        Assert.Equal(TimeSpan.FromSeconds(10), wait);
        Assert.Equal(10, bucket.Read(60).Available);
        clock.Advance(wait - TimeSpan.FromTicks(1));
        Assert.False(bucket.TryTake(20, 60, out _));
        clock.Advance(TimeSpan.FromTicks(1));
        Assert.True(bucket.TryTake(20, 60, out _));
    }

    [Fact]
    public void Settle_RefundsTheRest_ChargesAnExcessIntoDebt()
    {
        var clock = new FakeTimeProvider();
        var bucket = new TokenBucket(clock, 100);
        Assert.True(bucket.TryTake(40, 100, out _));
        bucket.Settle(40, 15, 100); // used 15 of 40
        Assert.Equal((85, 0), bucket.Read(100));
        Assert.True(bucket.TryTake(30, 100, out _));
        bucket.Settle(30, 0, 100); // refused: all back, never above the limit
        Assert.Equal(85, bucket.Read(100).Available);
        Assert.True(bucket.TryTake(10, 100, out _));
        bucket.Settle(10, 250, 100); // alignment candidates: 240 beyond the reservation
        Assert.Equal(-165, bucket.Read(100).Available);
        Assert.False(bucket.TryTake(1, 100, out var wait));
        Assert.Equal(TimeSpan.FromSeconds(60 * 166 / 100.0), wait);
        clock.Advance(TimeSpan.FromSeconds(0.3)); // 0.5 token: -164.5 floors to -165
        Assert.Equal(-165, bucket.Read(100).Available);
    }

    [Fact]
    public void Read_LimitLowered_LevelClampedToIt()
    {
        var clock = new FakeTimeProvider();
        var bucket = new TokenBucket(clock, 1000);
        Assert.Equal(100, bucket.Read(100).Available);
        clock.Advance(TimeSpan.FromMinutes(5));
        Assert.Equal(1000, bucket.Read(1000).Available); // raised again: refills to it
    }
}

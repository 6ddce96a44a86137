using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using Serving.Inference.Node.Hosting;
using Xunit;

namespace Serving.Inference.Node.Tests.Http;

/// <summary>
/// Issue 20 on the demo model (node with the demo adapters, no gateway): vLLM's <c>/tokenize</c> and <c>/detokenize</c>
/// (every id of the vocabulary whose text is valid UTF-8 round-trips; prompts and messages tokenize to exactly what the
/// completions routes run), <c>return_tokens_as_token_ids</c> in completions and chat logprobs (checked against the
/// engine's own teacher-forced logits), and prompts given as token ids, one or several per request.
/// </summary>
public sealed class TokenIdsTests(EchoFixture fx) : IClassFixture<EchoFixture>
{
    private const string Prompt = "<|endoftext|>Der Hund und die Katze";

    private HttpClient Http => fx.Server.Http;

    private int Vocab => fx.Model.Config.VocabSize;

    private async Task<JsonObject> OkAsync(string path, object body)
    {
        using var response = await Http.SendAsync(Sse.Post(path, body));
        var json = await Sse.JsonAsync(response);
        Assert.True(response.StatusCode == HttpStatusCode.OK, $"{path}: {(int)response.StatusCode} {json.ToJsonString()}");
        return json;
    }

    private async Task<int[]> TokenizeAsync(object body) =>
        (await OkAsync("tokenize", body))["tokens"]!.AsArray().Select(t => (int)t!).ToArray();

    private async Task<string> DetokenizeAsync(IEnumerable<int> ids) =>
        (string)(await OkAsync("detokenize", new { model = "demo", tokens = ids.ToArray() }))["prompt"]!;

    private static int IdOf(JsonNode? token)
    {
        var text = (string)token!;
        Assert.StartsWith("token_id:", text, StringComparison.Ordinal);
        return int.Parse(text["token_id:".Length..], System.Globalization.CultureInfo.InvariantCulture);
    }

    [Fact]
    public async Task TokenizeDetokenize_EveryDemoIdWithValidUtf8_RoundTrips()
    {
        var checkedIds = 0;
        var failures = new System.Collections.Concurrent.ConcurrentBag<string>();
        // Four requests in flight: the round trip of the whole vocabulary stays a few seconds on a loaded machine.
        await Parallel.ForEachAsync(Enumerable.Range(0, Vocab), new ParallelOptions { MaxDegreeOfParallelism = 4 }, async (id, _) =>
        {
            var text = await DetokenizeAsync([id]);
            Assert.Equal(fx.Tokenizer.Decode([id]), text);
            if (text.Length == 0 || text.Contains('\uFFFD')) return; // part of a multi-byte character: no text of its own
            var back = await TokenizeAsync(new { model = "demo", prompt = text, add_special_tokens = false });
            if (back.Length != 1 || back[0] != id) failures.Add($"{id} '{text}' → [{string.Join(", ", back)}]");
            Interlocked.Increment(ref checkedIds);
        });
        Assert.True(failures.IsEmpty, $"{failures.Count} ids do not round-trip: {string.Join("; ", failures.Take(10))}");
        // Every id but the byte tokens that are not a whole character (128 continuation and lead bytes at most) has text.
        Assert.InRange(checkedIds, Vocab - 256, Vocab);
    }

    [Fact]
    public async Task Tokenize_PromptAndMessages_AreWhatTheCompletionRoutesRun()
    {
        var tokenized = await OkAsync("tokenize", new { model = "demo", prompt = Prompt });
        var ids = tokenized["tokens"]!.AsArray().Select(t => (int)t!).ToArray();
        Assert.Equal(ids.Length, (int)tokenized["count"]!);
        Assert.Equal(EchoFixture.Context, (int)tokenized["max_model_len"]!);
        Assert.Equal(0, ids[0]); // <|endoftext|> written in the text is the special token

        // The ids the completions route scores, named by id.
        var echo = await OkAsync("v1/completions", new { model = "demo", prompt = Prompt, max_tokens = 0, echo = true, logprobs = 0, return_tokens_as_token_ids = true });
        Assert.Equal(ids, echo["choices"]![0]!["logprobs"]!["tokens"]!.AsArray().Select(IdOf).ToArray());
        Assert.Equal(Prompt, await DetokenizeAsync(ids));

        // Messages: the chat template's text (written out here from the demo's tokenizer_config.json), and the chat route's prompt length.
        var messages = new[] { new { role = "user", content = "Tell me a fortune" } };
        var chatIds = await TokenizeAsync(new { model = "demo", messages });
        Assert.Equal("<|endoftext|><|user|>Tell me a fortune<|end|><|assistant|>", await DetokenizeAsync(chatIds));
        var chat = await OkAsync("v1/chat/completions", new { model = "demo", messages, max_tokens = 1 });
        Assert.Equal(chatIds.Length, (int)chat["usage"]!["prompt_tokens"]!);
        var noTurn = await TokenizeAsync(new { model = "demo", messages, add_generation_prompt = false });
        Assert.Equal("<|endoftext|><|user|>Tell me a fortune<|end|>", await DetokenizeAsync(noTurn));

        // An adapter's tokenizer is the base's; model may be left out, as vLLM allows.
        Assert.Equal(ids, await TokenizeAsync(new { model = "demo:public/german", prompt = Prompt }));
        Assert.Equal(ids, await TokenizeAsync(new { prompt = Prompt }));
    }

    public static TheoryData<string, string, string, HttpStatusCode> Refused => new()
    {
        { "tokenize", """{"model":"demo"}""", "prompt", HttpStatusCode.BadRequest },
        { "tokenize", """{"model":"demo","prompt":"a","messages":[{"role":"user","content":"b"}]}""", "messages", HttpStatusCode.BadRequest },
        { "tokenize", """{"model":"demo","prompt":[1,2]}""", "prompt", HttpStatusCode.BadRequest },
        { "tokenize", """{"model":"demo","messages":[]}""", "messages", HttpStatusCode.BadRequest },
        { "tokenize", """{"model":"demo","messages":[{"content":"x"}]}""", "messages[0].role", HttpStatusCode.BadRequest },
        { "tokenize", """{"model":"nope","prompt":"a"}""", "model", HttpStatusCode.NotFound },
        { "tokenize", """{"model":"demo:public/nope","prompt":"a"}""", "model", HttpStatusCode.NotFound },
        { "tokenize", """{"model":"demo","prompt":"a","add_special_tokens":"yes"}""", "add_special_tokens", HttpStatusCode.BadRequest },
        { "detokenize", """{"model":"demo"}""", "tokens", HttpStatusCode.BadRequest },
        { "detokenize", """{"model":"demo","tokens":"12"}""", "tokens", HttpStatusCode.BadRequest },
        { "detokenize", """{"model":"demo","tokens":[0,4096]}""", "tokens", HttpStatusCode.BadRequest },
        { "detokenize", """{"model":"demo","tokens":[-1]}""", "tokens", HttpStatusCode.BadRequest },
        { "detokenize", """{"model":"demo","tokens":[1.5]}""", "tokens", HttpStatusCode.BadRequest },
        { "detokenize", """{"model":"demo","tokens":["a"]}""", "tokens", HttpStatusCode.BadRequest },
        { "detokenize", """{"model":"other:public/german","tokens":[1]}""", "model", HttpStatusCode.NotFound },
    };

    [Theory]
    [MemberData(nameof(Refused))]
    public async Task TokenizeDetokenize_BadInput_OpenAIErrorNamingTheField(string path, string body, string param, HttpStatusCode status)
    {
        using var response = await Http.PostAsync(path, new StringContent(body, Encoding.UTF8, "application/json"));
        var json = await Sse.JsonAsync(response);
        Assert.Equal(status, response.StatusCode);
        var error = json["error"]!;
        Assert.Equal(param, (string?)error["param"]);
        Assert.False(string.IsNullOrEmpty((string?)error["message"]));
        Assert.NotNull(error["type"]);
        if (body.Contains("4096", StringComparison.Ordinal)) Assert.Contains("[0, 4096)", (string)error["message"]!, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Detokenize_EmptyList_IsEmptyText() => Assert.Equal("", await DetokenizeAsync([]));

    /// <summary>log-softmax of the engine's teacher-forced logits in double: row j predicts token j + 1.</summary>
    private double[][] ReferenceLogprobs(int[] ids, string? adapter)
    {
        var logits = fx.Prefill(ids, adapter);
        var rows = new double[ids.Length][];
        for (var j = 0; j < ids.Length; j++)
        {
            var row = logits.AsSpan(j * Vocab, Vocab).ToArray().Select(x => (double)x).ToArray();
            var max = row.Max();
            var logZ = max + Math.Log(row.Sum(x => Math.Exp(x - max)));
            rows[j] = row.Select(x => x - logZ).ToArray();
        }
        return rows;
    }

    [Theory]
    [InlineData("demo", null)]
    [InlineData("demo:public/german", "german")]
    public async Task ReturnTokensAsTokenIds_CompletionLogprobs_NameEveryTokenAndAlternativeById(string model, string? adapter)
    {
        const int top = 5;
        var ids = fx.Tokenizer.Encode(Prompt);
        var json = await OkAsync("v1/completions", new
        {
            model, prompt = ids, max_tokens = 6, temperature = 0, ignore_eos = true, skip_special_tokens = false,
            logprobs = top, echo = true, return_tokens_as_token_ids = true,
        });
        var choice = json["choices"]![0]!;
        var lp = choice["logprobs"]!;
        var all = lp["tokens"]!.AsArray().Select(IdOf).ToArray();
        Assert.Equal(ids.Length + 6, all.Length);
        Assert.Equal(ids, all[..ids.Length]);
        // The text is the ids' text; each generated id is the greedy pick of the engine's logits over the ids before it.
        Assert.Equal(Prompt + await DetokenizeAsync(all[ids.Length..]), (string)choice["text"]!);
        var reference = ReferenceLogprobs(all, adapter);
        var logprobs = lp["token_logprobs"]!.AsArray();
        var tops = lp["top_logprobs"]!.AsArray();
        for (var j = 1; j < all.Length; j++)
        {
            var expected = reference[j - 1];
            Assert.InRange(Math.Abs((double)logprobs[j]! - expected[all[j]]), 0, 1e-4);
            var alternatives = tops[j]!.AsObject();
            var wanted = Enumerable.Range(0, Vocab).OrderByDescending(i => expected[i]).ThenBy(i => i).Take(top).ToArray();
            // By id, no two alternatives share a key: all five are there.
            Assert.Equal(wanted.Order(), alternatives.Select(a => IdOf(a.Key)).Order());
            foreach (var id in wanted) Assert.InRange(Math.Abs((double)alternatives[$"token_id:{id}"]! - expected[id]), 0, 1e-4);
            if (j >= ids.Length) Assert.Equal(wanted[0], all[j]);
        }

        // Without the flag the same positions carry the tokens' texts.
        var plain = await OkAsync("v1/completions", new { model, prompt = ids, max_tokens = 6, temperature = 0, ignore_eos = true, logprobs = 1 });
        var texts = plain["choices"]![0]!["logprobs"]!["tokens"]!.AsArray().Select(t => (string)t!).ToArray();
        Assert.Equal(all[ids.Length..].Select(id => fx.Tokenizer.Decode([id])), texts);
    }

    [Fact]
    public async Task ReturnTokensAsTokenIds_Streamed_SameIdsAsNotStreamed()
    {
        var body = new { model = "demo", prompt = Prompt, max_tokens = 8, temperature = 0, ignore_eos = true, logprobs = 2, return_tokens_as_token_ids = true };
        var whole = await OkAsync("v1/completions", body);
        var expected = whole["choices"]![0]!["logprobs"]!["tokens"]!.AsArray().Select(IdOf).ToArray();
        using var response = await Http.SendAsync(Sse.Post("v1/completions", new
        {
            body.model, body.prompt, body.max_tokens, body.temperature, body.ignore_eos, body.logprobs, body.return_tokens_as_token_ids, stream = true,
        }), HttpCompletionOption.ResponseHeadersRead);
        var events = await Sse.ReadAllAsync(response);
        var streamed = new List<int>();
        foreach (var e in events.Where(e => e.Data != "[DONE]"))
        {
            var lp = e.Json["choices"]![0]!["logprobs"];
            if (lp is null) continue;
            streamed.AddRange(lp["tokens"]!.AsArray().Select(IdOf));
            Assert.All(lp["top_logprobs"]![0]!.AsObject(), a => IdOf(a.Key));
        }
        Assert.Equal(expected, streamed);
    }

    [Fact]
    public async Task ReturnTokensAsTokenIds_ChatLogprobs_NameTokensById()
    {
        var messages = new[] { new { role = "user", content = "Tell me a fortune" } };
        var json = await OkAsync("v1/chat/completions", new
        {
            model = "demo", messages, max_tokens = 6, temperature = 0, ignore_eos = true, skip_special_tokens = false,
            logprobs = true, top_logprobs = 3, return_tokens_as_token_ids = true,
        });
        var choice = json["choices"]![0]!;
        var content = choice["logprobs"]!["content"]!.AsArray();
        var ids = content.Select(c => IdOf(c!["token"])).ToArray();
        Assert.Equal(6, ids.Length);
        Assert.Equal((string)choice["message"]!["content"]!, await DetokenizeAsync(ids));
        var prompt = await TokenizeAsync(new { model = "demo", messages });
        var reference = ReferenceLogprobs([.. prompt, .. ids], null);
        for (var k = 0; k < ids.Length; k++)
        {
            var expected = reference[prompt.Length - 1 + k];
            var c = content[k]!;
            Assert.InRange(Math.Abs((double)c["logprob"]! - expected[ids[k]]), 0, 1e-4);
            // vLLM's bytes: those of the token's name.
            Assert.Equal(Encoding.UTF8.GetBytes($"token_id:{ids[k]}").Select(b => (int)b), c["bytes"]!.AsArray().Select(b => (int)b!));
            var alternatives = c["top_logprobs"]!.AsArray();
            Assert.Equal(Enumerable.Range(0, Vocab).OrderByDescending(i => expected[i]).ThenBy(i => i).Take(3), alternatives.Select(a => IdOf(a!["token"])));
        }
    }

    [Fact]
    public async Task Completions_TokenIdPrompts_OneOrSeveral_AsOpenAIAllows()
    {
        var a = fx.Tokenizer.Encode(Prompt);
        var b = fx.Tokenizer.Encode("<|endoftext|>The cat sat on");
        async Task<JsonObject> Complete(object prompt, int n = 1, int? seed = null, float temperature = 0) =>
            await OkAsync("v1/completions", new { model = "demo", prompt, max_tokens = 5, n, seed, temperature, ignore_eos = true });
        static string[] Texts(JsonObject json) => json["choices"]!.AsArray().OrderBy(c => (int)c!["index"]!).Select(c => (string)c!["text"]!).ToArray();

        // One prompt as ids is the same request as its text.
        var textA = Texts(await Complete(Prompt));
        Assert.Equal(textA, Texts(await Complete(a)));
        Assert.Equal(textA, Texts(await Complete(new[] { a })));

        // Several: each prompt's choices in order, indexes running on, usage summed.
        var textB = Texts(await Complete(b));
        var both = await Complete(new[] { a, b });
        Assert.Equal([0, 1], both["choices"]!.AsArray().Select(c => (int)c!["index"]!));
        Assert.Equal(textA.Concat(textB), Texts(both));
        Assert.Equal(a.Length + b.Length, (int)both["usage"]!["prompt_tokens"]!);
        Assert.Equal(10, (int)both["usage"]!["completion_tokens"]!);
        Assert.Equal(Texts(both), Texts(await Complete(new[] { Prompt, "<|endoftext|>The cat sat on" })));

        // With n and a seed, prompt i's choices are i·n … i·n + n − 1, each as its own request would sample them.
        var sampledA = Texts(await Complete(a, n: 2, seed: 7, temperature: 1));
        var sampledB = Texts(await Complete(b, n: 2, seed: 7, temperature: 1));
        var sampledBoth = Texts(await Complete(new[] { a, b }, n: 2, seed: 7, temperature: 1));
        Assert.Equal(sampledA.Concat(sampledB), sampledBoth);
    }

    [Fact]
    public async Task Completions_SeveralPrompts_StreamedAndEchoScored()
    {
        var a = fx.Tokenizer.Encode(Prompt);
        var b = fx.Tokenizer.Encode("<|endoftext|>The cat sat on");
        var whole = await OkAsync("v1/completions", new { model = "demo", prompt = new[] { a, b }, max_tokens = 5, temperature = 0, ignore_eos = true });
        using var response = await Http.SendAsync(Sse.Post("v1/completions", new
        {
            model = "demo", prompt = new[] { a, b }, max_tokens = 5, temperature = 0, ignore_eos = true, stream = true,
            stream_options = new { include_usage = true },
        }), HttpCompletionOption.ResponseHeadersRead);
        var events = await Sse.ReadAllAsync(response);
        Assert.Equal("[DONE]", events[^1].Data);
        Assert.Equal((string)whole["choices"]![0]!["text"]!, Sse.Text(events, 0));
        Assert.Equal((string)whole["choices"]![1]!["text"]!, Sse.Text(events, 1));
        Assert.Equal(2, events.Count(e => e.Data != "[DONE]" && e.Json["choices"]!.AsArray().Any(c => c!["finish_reason"] is JsonValue)));
        var usage = events[^2].Json["usage"]!;
        Assert.Equal(a.Length + b.Length, (int)usage["prompt_tokens"]!);
        Assert.Equal(10, (int)usage["completion_tokens"]!);

        // lm-evaluation-harness's batched loglikelihood: several token lists, echo, nothing generated.
        var scored = await OkAsync("v1/completions", new { model = "demo", prompt = new[] { a, b }, max_tokens = 0, echo = true, logprobs = 0 });
        foreach (var (ids, i) in new[] { (a, 0), (b, 1) })
        {
            var single = await OkAsync("v1/completions", new { model = "demo", prompt = ids, max_tokens = 0, echo = true, logprobs = 0 });
            var choice = scored["choices"]![i]!;
            Assert.Equal(i, (int)choice["index"]!);
            Assert.Equal(await DetokenizeAsync(ids), (string)choice["text"]!);
            Assert.Equal(single["choices"]![0]!["logprobs"]!["token_logprobs"]!.ToJsonString(), choice["logprobs"]!["token_logprobs"]!.ToJsonString());
        }
    }

    public static TheoryData<string, string, string> RefusedPrompts => new()
    {
        { """{"model":"demo","prompt":[]}""", "prompt", "must not be empty" },
        { """{"model":"demo","prompt":[[]]}""", "prompt", "at least one id" },
        { """{"model":"demo","prompt":[[5,6],[]]}""", "prompt[1]", "at least one id" },
        { """{"model":"demo","prompt":[5,4096]}""", "prompt", "Token id 4096 (item 1) is outside the vocabulary [0, 4096)" },
        { """{"model":"demo","prompt":[-3]}""", "prompt", "outside the vocabulary" },
        { """{"model":"demo","prompt":[[5],[6,99999]]}""", "prompt[1]", "Token id 99999" },
        { """{"model":"demo","prompt":[1.5]}""", "prompt", "integers" },
        { """{"model":"demo","prompt":["a",[1]]}""", "prompt[1]", "all be strings or all be lists" },
        { """{"model":"demo","prompt":["a",""]}""", "prompt[1]", "must not be empty" },
        { """{"model":"demo","prompt":[{"a":1}]}""", "prompt", "list of token-id lists" },
        { """{"model":"demo","prompt":[[5],[6]],"alignment":{"method":"best_of_n"}}""", "alignment", "one prompt per request" },
    };

    [Theory]
    [MemberData(nameof(RefusedPrompts))]
    public async Task Completions_BadTokenIdPrompt_Is400NamingThePrompt(string body, string param, string message)
    {
        using var response = await Http.PostAsync("v1/completions", new StringContent(body, Encoding.UTF8, "application/json"));
        var json = await Sse.JsonAsync(response);
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal(param, (string?)json["error"]!["param"]);
        Assert.Contains(message, (string)json["error"]!["message"]!, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Completions_SecondPromptRefusedAtSubmit_FirstIsCancelledNotRun()
    {
        var host = (ModelHost)fx.Server.Services.GetService(typeof(ModelHost))!;
        async Task<long> IdleStepsAsync()
        {
            var deadline = DateTime.UtcNow.AddSeconds(30);
            while (host.Scheduler.Status is { RunningRequests: > 0 } or { Waiting: > 0 })
            {
                Assert.True(DateTime.UtcNow < deadline, "the node did not become idle");
                await Task.Delay(20);
            }
            return host.Scheduler.Status.Steps;
        }

        var before = await IdleStepsAsync();
        // The second prompt cannot fit max_tokens: the scheduler refuses it after the first one was queued.
        var longPrompt = Enumerable.Repeat(5, EchoFixture.Context - 10).ToArray();
        using var response = await Http.SendAsync(Sse.Post("v1/completions", new
        {
            model = "demo", prompt = new[] { new[] { 5, 6 }, longPrompt }, max_tokens = 50, ignore_eos = true,
        }));
        var json = await Sse.JsonAsync(response);
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("max_tokens", (string?)json["error"]!["param"]);
        // Had the first prompt run, it would have taken a prefill and 50 decode steps; cancelled right after the refusal,
        // it ends early. How many steps the scheduler fits in before the cancel reaches it depends on the machine's load
        // (8 were seen on a loaded one), so the bound is the run-to-the-end count, not a guess at the scheduler's speed.
        var steps = await IdleStepsAsync() - before;
        Assert.InRange(steps, 0, 49);
    }
}

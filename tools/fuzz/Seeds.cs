using System.IO.Compression;
using System.Text;
using System.Text.Json;
using Serving.AdapterStore.Compression;
using Serving.AdapterStore.Ingest;
using Serving.AdapterStore.Peft;
using Serving.Checkpoints;

namespace Serving.Fuzz;

/// <summary>
/// Writes each target's seed inputs from the repository's real files (the demo model, its adapters and reward head,
/// the stored-container fixtures, the real chat templates) plus small valid inputs built here, so a fuzzer starts from
/// inputs that pass every check and mutates from there. Small on purpose: afl-fuzz slows with input size.
/// </summary>
public static class Seeds
{
    /// <summary>Writes <c>DIR/&lt;target&gt;/seed-*</c> for every target.</summary>
    public static void Write(string root)
    {
        string repo = FuzzTargets.RepoRoot;
        string demo = Path.Combine(repo, "models", "demo");
        void Put(string target, string name, byte[] data)
        {
            var dir = Path.Combine(root, target);
            Directory.CreateDirectory(dir);
            File.WriteAllBytes(Path.Combine(dir, "seed-" + name), data);
        }

        // safetensors: small tensors of each dtype the reader converts, and the real reward head.
        var rng = new Random(16);
        float[] Values(int n) => Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
        Put("safetensors", "f32", SafetensorsWriter.ToBytes([SafetensorsWriter.Entry.F32("a", [2, 3], Values(6)), SafetensorsWriter.Entry.F32("b", [4], Values(4))]));
        Put("safetensors", "f16-meta", SafetensorsWriter.ToBytes([SafetensorsWriter.Entry.F16("w", [3, 2], Values(6))], new Dictionary<string, string> { ["format"] = "pt" }));
        Put("safetensors", "i64", SafetensorsWriter.ToBytes([SafetensorsWriter.Entry.I64("ids", [3], [1, 2, 3])]));
        Put("safetensors", "reward-head", File.ReadAllBytes(Path.Combine(demo, "reward-head", "head.safetensors")));

        // adapter_config.json: the demo adapters' real configs, and one with rank/alpha patterns.
        foreach (var dir in Directory.GetDirectories(Path.Combine(demo, "adapters")).Order(StringComparer.Ordinal))
        {
            Put("adapter-config", Path.GetFileName(dir), File.ReadAllBytes(Path.Combine(dir, "adapter_config.json")));
        }
        var small = SmallAdapter(rng);
        Put("adapter-config", "patterns", small.ConfigJson);

        // archive: the small adapter as tar and as zip, in a folder and at the root.
        Put("archive", "tar", small.ToTar());
        Put("archive", "zip", Zip(small, "my-adapter/"));
        Put("archive", "zip-root", Zip(small, ""));

        // multipart: the two files and a form field, as the upload routes receive them.
        Put("multipart", "upload", Multipart(small));

        // container: the stored v1 fixtures and this build's v2 containers of the small adapter, one per codec.
        foreach (var file in Directory.GetFiles(Path.Combine(repo, "tests", "AdapterStore.Tests", "Fixtures", "containers-v1"), "*.cpft").Order(StringComparer.Ordinal))
        {
            if (new FileInfo(file).Length <= 4096) Put("container", Path.GetFileNameWithoutExtension(file), File.ReadAllBytes(file));
        }
        var payload = PeftAdapterReader.Read(small.ConfigJson, small.Safetensors, BaseModelShape.FromConfig(ModelConfig.Load(Path.Combine(demo, "config.json")))).Payload;
        foreach (var codec in (AdapterCodec[])[AdapterCodec.ComPeft, AdapterCodec.Lossless, AdapterCodec.Quant])
        {
            Put("container", "v2-" + codec.ToString().ToLowerInvariant(), AdapterContainer.Encode(payload, new CodecOptions { Codec = codec }));
        }

        // tokenizer.json: a small byte-level BPE file in the Hugging Face layout (the demo's is 144 KB).
        Put("tokenizer-json", "bpe", Encoding.UTF8.GetBytes(SmallTokenizerJson));
        Put("sentencepiece", "bpe", SentencePieceModel());

        // chat templates: the demo's and the real families' templates.
        using (var config = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(demo, "tokenizer_config.json"))))
        {
            if (config.RootElement.TryGetProperty("chat_template", out var t) && t.GetString() is { } s) Put("chat-template", "demo", Encoding.UTF8.GetBytes(s));
        }
        foreach (var file in Directory.GetFiles(Path.Combine(repo, "tests", "Inference.Tests", "Chat", "Templates"), "*.jinja").Order(StringComparer.Ordinal))
        {
            Put("chat-template", Path.GetFileNameWithoutExtension(file), File.ReadAllBytes(file));
        }

        // OpenAI bodies: the shapes clients send.
        Put("openai-chat", "basic", """{"model":"demo","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hello"}],"max_tokens":8}"""u8.ToArray());
        Put("openai-chat", "sampling", """{"model":"demo","messages":[{"role":"user","content":[{"type":"text","text":"Hi"}]}],"temperature":0.7,"top_p":0.9,"top_k":40,"stop":["\n","END"],"logit_bias":{"5":-100},"seed":3,"logprobs":true,"top_logprobs":2,"stream":true,"stream_options":{"include_usage":true},"n":1,"presence_penalty":0.5,"frequency_penalty":0.1}"""u8.ToArray());
        Put("openai-completions", "basic", """{"model":"demo","prompt":"Once upon a time","max_tokens":8,"temperature":0}"""u8.ToArray());
        Put("openai-completions", "lists", """{"model":"demo","prompt":[[1,2,3],[4,5]],"max_tokens":4,"logprobs":2,"echo":true,"stop":"."}"""u8.ToArray());
    }

    /// <summary>A rank-2 adapter on layer 0's q_proj and v_proj of the demo model (about 6 KB), with rank/alpha patterns.</summary>
    private static PeftFiles SmallAdapter(Random rng)
    {
        const int hidden = 192, kv = 64, r = 2;
        float[] Values(int n) => Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() - 0.5) * 0.1f).ToArray();
        var weights = SafetensorsWriter.ToBytes(
        [
            SafetensorsWriter.Entry.F32("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", [r, hidden], Values(r * hidden)),
            SafetensorsWriter.Entry.F32("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", [hidden, r], Values(hidden * r)),
            SafetensorsWriter.Entry.F32("base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight", [1, hidden], Values(hidden)),
            SafetensorsWriter.Entry.F32("base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight", [kv, 1], Values(kv)),
        ], new Dictionary<string, string> { ["format"] = "pt" });
        var config = """
            {"peft_type":"LORA","task_type":"CAUSAL_LM","base_model_name_or_path":"demo","r":2,"lora_alpha":4,
             "target_modules":["q_proj","v_proj"],"layers_to_transform":[0],"rank_pattern":{"v_proj":1},"alpha_pattern":{"v_proj":2.0},
             "fan_in_fan_out":false,"use_rslora":false,"use_dora":false,"bias":"none"}
            """u8.ToArray();
        return PeftFiles.From(config, weights, sawPickle: false);
    }

    private static byte[] Zip(PeftFiles files, string folder)
    {
        using var ms = new MemoryStream();
        using (var zip = new ZipArchive(ms, ZipArchiveMode.Create, leaveOpen: true))
        {
            foreach (var (name, data) in new[] { (PeftFiles.ConfigName, files.ConfigJson), (PeftFiles.WeightsName, files.Safetensors) })
            {
                using var s = zip.CreateEntry(folder + name, CompressionLevel.Fastest).Open();
                s.Write(data);
            }
        }
        return ms.ToArray();
    }

    private static byte[] Multipart(PeftFiles files)
    {
        using var ms = new MemoryStream();
        void Text(string s) => ms.Write(Encoding.UTF8.GetBytes(s));
        Text("--B\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nmy-adapter\r\n");
        Text($"--B\r\nContent-Disposition: form-data; name=\"config\"; filename=\"{PeftFiles.ConfigName}\"\r\nContent-Type: application/json\r\n\r\n");
        ms.Write(files.ConfigJson);
        Text($"\r\n--B\r\nContent-Disposition: form-data; name=\"weights\"; filename=\"{PeftFiles.WeightsName}\"\r\nContent-Type: application/octet-stream\r\n\r\n");
        ms.Write(files.Safetensors);
        Text("\r\n--B--\r\n");
        return ms.ToArray();
    }

    private const string SmallTokenizerJson = """
        {"version":"1.0","truncation":null,"padding":null,
         "added_tokens":[{"id":0,"content":"<|endoftext|>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}],
         "normalizer":null,
         "pre_tokenizer":{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":true},
         "post_processor":null,
         "decoder":{"type":"ByteLevel","add_prefix_space":true,"trim_offsets":true,"use_regex":true},
         "model":{"type":"BPE","dropout":null,"unk_token":null,"continuing_subword_prefix":null,"end_of_word_suffix":null,"fuse_unk":false,"byte_fallback":false,
           "vocab":{"<|endoftext|>":0,"H":1,"e":2,"l":3,"o":4,"Ġ":5,"w":6,"r":7,"d":8,"He":9,"ll":10,"Hell":11,"Hello":12,"Ġw":13,"or":14},
           "merges":["H e","l l","He ll","Hell o","Ġ w","o r"]}}
        """;

    /// <summary>A SentencePiece BPE model (Llama layout) as protobuf: pieces &lt;unk&gt;, &lt;s&gt;, &lt;/s&gt;, 256 byte pieces, a few words.</summary>
    private static byte[] SentencePieceModel()
    {
        using var model = new MemoryStream();
        void Piece(string text, float score, int type)
        {
            using var p = new MemoryStream();
            Bytes(p, 1, Encoding.UTF8.GetBytes(text));
            p.WriteByte((2 << 3) | 5);
            p.Write(BitConverter.GetBytes(score));
            p.WriteByte(3 << 3);
            Varint(p, (ulong)type);
            Bytes(model, 1, p.ToArray());
        }
        Piece("<unk>", 0, 2);
        Piece("<s>", 0, 3);
        Piece("</s>", 0, 3);
        for (var b = 0; b < 256; b++) Piece($"<0x{b:X2}>", 0, 6);
        var words = new[] { "▁", "e", "l", "o", "H", "▁H", "ll", "▁Hello", "▁w", "or", "ld" };
        for (var i = 0; i < words.Length; i++) Piece(words[i], -i, 1);
        using var trainer = new MemoryStream();
        trainer.WriteByte(3 << 3); // model_type
        Varint(trainer, 2);        // BPE
        Varint(trainer, 35 << 3);
        Varint(trainer, 1);        // byte_fallback = true
        Bytes(model, 2, trainer.ToArray());
        using var normalizer = new MemoryStream();
        Bytes(normalizer, 1, "identity"u8.ToArray());
        normalizer.WriteByte(3 << 3); // add_dummy_prefix
        Varint(normalizer, 1);
        Bytes(model, 3, normalizer.ToArray());
        return model.ToArray();
    }

    private static void Bytes(Stream s, int field, byte[] data)
    {
        Varint(s, (ulong)(field << 3 | 2));
        Varint(s, (ulong)data.Length);
        s.Write(data);
    }

    private static void Varint(Stream s, ulong v)
    {
        while (v >= 0x80)
        {
            s.WriteByte((byte)(v | 0x80));
            v >>= 7;
        }
        s.WriteByte((byte)v);
    }
}

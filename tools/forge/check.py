#!/usr/bin/python3
"""Checks a forged model folder from its files alone, the way the C# engine will read it:
config/tensor names and shapes, tokenizer.json round trip against the reference token ids, an fp32
forward (base and every adapter) against the float64 reference logits/hidden states, reward head,
adapter configs, and the total size.  Usage: check.py <model dir> [--max-mb 25]"""
import json, math, os, re, sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import forge  # noqa: E402


def main():
    d = sys.argv[1]
    max_mb = float(sys.argv[sys.argv.index("--max-mb") + 1]) if "--max-mb" in sys.argv else None
    torch.set_num_threads(2)
    c = json.load(open(os.path.join(d, "config.json")))
    assert c["architectures"] == ["LlamaForCausalLM"] and c["model_type"] == "llama"
    W = forge.read_safetensors(os.path.join(d, "model.safetensors"))
    L, D, V = c["num_hidden_layers"], c["hidden_size"], c["vocab_size"]
    hd, nh, nkv, Fd = c["head_dim"], c["num_attention_heads"], c["num_key_value_heads"], c["intermediate_size"]
    want = {"model.embed_tokens.weight": [V, D], "model.norm.weight": [D]}
    for i in range(L):
        p = f"model.layers.{i}."
        want.update({p + "self_attn.q_proj.weight": [nh * hd, D], p + "self_attn.k_proj.weight": [nkv * hd, D],
                     p + "self_attn.v_proj.weight": [nkv * hd, D], p + "self_attn.o_proj.weight": [D, nh * hd],
                     p + "mlp.gate_proj.weight": [Fd, D], p + "mlp.up_proj.weight": [Fd, D],
                     p + "mlp.down_proj.weight": [D, Fd], p + "input_layernorm.weight": [D],
                     p + "post_attention_layernorm.weight": [D]})
    assert {k: list(v.shape) for k, v in W.items()} == want, "tensor names/shapes"
    # tokenizer from tokenizer.json only
    tj = json.load(open(os.path.join(d, "tokenizer.json"), encoding="utf-8"))
    assert tj["pre_tokenizer"]["type"] == "ByteLevel" and tj["model"]["type"] == "BPE"
    vocab = tj["model"]["vocab"]
    assert sorted(vocab.values()) == list(range(V)), "vocab ids contiguous 0..V-1"
    tok = forge.Tokenizer(vocab, [tuple(m.split(" ")) for m in tj["model"]["merges"]])
    R = forge.read_safetensors(os.path.join(d, "reference", "reference.safetensors"))
    j = 0
    while f"tok{j}.ids" in R:
        text = R[f"tok{j}.text_utf8"].tobytes().decode("utf-8")
        ids = tok.encode(text)
        assert ids == R[f"tok{j}.ids"].tolist(), f"tok{j}"
        assert tok.decode(ids) == text, f"tok{j} decode"
        j += 1
    # fp32 forward vs float64 reference
    m = forge.Llama(c)
    m.load_state_dict({k: torch.from_numpy(v) for k, v in W.items()}, strict=False)
    m.eval()
    worst = 0.0
    with torch.no_grad():
        k = 0
        while f"p{k}.input_ids" in R:
            ids = torch.from_numpy(R[f"p{k}.input_ids"])[None]
            hs = m.forward(ids, all_hidden=True)
            hid = torch.stack([h[0] for h in hs]).numpy()
            lg = m.head(hs[-1])[0].numpy()
            worst = max(worst, np.abs(hid - R[f"p{k}.hidden"]).max(), np.abs(lg - R[f"p{k}.logits"]).max())
            seq = R[f"p{k}.input_ids"].tolist() + R[f"p{k}.decode_ids"].tolist()
            lg2 = m.logits(torch.tensor([seq]))[0, -8:].numpy()
            worst = max(worst, np.abs(lg2 - R[f"p{k}.decode_logits"]).max())
            assert int(np.argmax(lg[-1])) == R[f"p{k}.decode_ids"][0]
            k += 1
        print(f"fp32 forward vs reference: max abs diff {worst:.2e} over {k} prompts")
        assert worst <= 1e-4, worst
        # adapters
        ad = os.path.join(d, "adapters")
        names = sorted(os.listdir(ad))
        for n in names:
            cfg = json.load(open(os.path.join(ad, n, "adapter_config.json")))
            assert cfg["peft_type"] == "LORA" and cfg["task_type"] == "CAUSAL_LM" and not cfg["use_dora"]
            A = forge.read_safetensors(os.path.join(ad, n, "adapter_model.safetensors"))
            for key, v in A.items():
                mm = re.fullmatch(r"base_model\.model\.(model\.layers\.\d+\.(self_attn|mlp)\.\w+_proj)\.lora_([AB])\.weight", key)
                assert mm, key
            forge.load_adapter(m, os.path.join(ad, n))
            ref = R.get(f"p0.logits.{n}")
            if ref is not None:
                diff = np.abs(m.logits(torch.from_numpy(R["p0.input_ids"])[None])[0].numpy() - ref).max()
                assert diff <= 1e-4, (n, diff)
            forge.detach_adapters(m)
        print(f"{len(names)} adapters OK: {', '.join(names)}")
        # reward head
        hc = json.load(open(os.path.join(d, "reward-head", "config.json")))
        H = forge.read_safetensors(os.path.join(d, "reward-head", "head.safetensors"))
        x = m.model.norm(m.forward(torch.from_numpy(R["p0.input_ids"])[None], all_hidden=True)[hc["layer"]])[0]
        if hc["pooling"] == "mean":
            x = torch.cumsum(x, 0) / torch.arange(1, x.shape[0] + 1)[:, None]
        x = x.numpy()
        for li, ly in enumerate(hc["layers"]):
            x = x @ H[ly["weight"]].T + H[ly["bias"]]
            if li < len(hc["layers"]) - 1:
                x = np.tanh(x) if hc["activation"] == "tanh" else x
        if hc["pooling"] == "sum":
            x = np.cumsum(x, 0)
        diff = np.abs(x[:, 0] - R["p0.reward"]).max()
        assert diff <= 1e-4, diff
        print(f"reward head OK (pooling {hc['pooling']}, diff {diff:.1e})")
    tot = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(d) for f in fs)
    print(f"total size {tot / 1e6:.2f} MB")
    if max_mb is not None:
        assert tot <= max_mb * 1e6, tot
    print("check OK")


if __name__ == "__main__":
    main()

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
        check_exit_probe(d, c, m, R)
        check_otter(d, c, W, m, R)
    check_eval(d, tok)
    tot = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(d) for f in fs)
    print(f"total size {tot / 1e6:.2f} MB")
    if max_mb is not None:
        assert tot <= max_mb * 1e6, tot
    print("check OK")


def mlp_np(x, layers, T, act):
    for i, ly in enumerate(layers):
        x = x @ T[ly["weight"]].T + T[ly["bias"]]
        if i < len(layers) - 1:
            x = np.tanh(x) if act == "tanh" else x
    return x


def check_exit_probe(d, c, m, R):
    """exit-probe/: tensor names/shapes from config.json, fp32 probe logits, cosines, margins vs the references."""
    p = os.path.join(d, "exit-probe", "config.json")
    if not os.path.exists(p):
        return
    e = json.load(open(p))
    T = forge.read_safetensors(os.path.join(d, "exit-probe", "probe.safetensors"))
    L, D = c["num_hidden_layers"], c["hidden_size"]
    assert e["kind"] == "exit-probe" and e["probe_layers"] == list(range(1, L)) and e["input"] in ("final_norm", "raw")
    named = set()
    for pc in e["probes"]:
        fin = D
        for ly in pc["layers"]:
            assert list(T[ly["weight"]].shape) == ly["shape"] and ly["shape"][1] == fin, ly
            assert list(T[ly["bias"]].shape) == [ly["shape"][0]], ly
            fin = ly["shape"][0]
            named |= {ly["weight"], ly["bias"]}
        assert fin == 1
    assert named == set(T), "unlisted tensors in probe.safetensors"
    assert all(np.isfinite(v).all() for v in T.values())
    X = forge.read_safetensors(os.path.join(d, "reference", "exit-probe.safetensors"))
    worst = 0.0
    k = 0
    while f"p{k}.input_ids" in R:
        assert (X[f"p{k}.input_ids"] == R[f"p{k}.input_ids"]).all()
        hs = [h[0] for h in m.forward(torch.from_numpy(R[f"p{k}.input_ids"])[None], all_hidden=True)]
        z, cs, mg, tp = [], [], [], []
        for pc in e["probes"]:
            h = hs[pc["layer"]]
            x = (m.model.norm(h) if e["input"] == "final_norm" else h).numpy()
            z.append(mlp_np(x, pc["layers"], T, e["activation"])[:, 0])
        for l in range(1, L):
            a, b = hs[l].numpy().astype(np.float64), hs[l - 1].numpy().astype(np.float64)
            cs.append((a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1))
            pr = torch.softmax(m.head(hs[l]), -1).numpy()
            ps = np.sort(pr, -1)
            mg.append(ps[:, -1] - ps[:, -2])
        for l in range(1, L + 1):
            tp.append(m.head(hs[l]).argmax(-1).numpy())
        worst = max(worst, np.abs(np.stack(z) - X[f"p{k}.probe_logits"]).max(), np.abs(np.stack(cs) - X[f"p{k}.cosine"]).max(),
                    np.abs(np.stack(mg) - X[f"p{k}.margin"]).max())
        assert (np.stack(tp)[-1] == X[f"p{k}.early_top1"][-1]).all()
        k += 1
    assert worst <= 1e-4, worst
    print(f"exit probe OK ({len(e['probes'])} layers, input {e['input']}, label {e['label']}; max diff {worst:.1e})")


def check_otter(d, c, W, m, R):
    """otter/: rebuilds the side network from config.json alone (NumPy, fp32) and compares with the references."""
    p = os.path.join(d, "otter", "config.json")
    if not os.path.exists(p):
        return
    o = json.load(open(p))
    T = forge.read_safetensors(os.path.join(d, "otter", "otter.safetensors"))
    L, D, hd, H, dp, Fp = (o[k] for k in ("num_hidden_layers", "hidden_size", "head_dim", "num_heads", "side_size", "intermediate_size"))
    assert o["kind"] == "otter-side-network" and L == c["num_hidden_layers"] and D == c["hidden_size"]
    # one side layer per base layer, or a subset: each names the base layer it reads, strictly increasing
    idx = [ly["layer"] for ly in o["layers"]]
    assert 1 <= len(idx) <= L and 0 <= idx[0] and idx[-1] < L and all(a < b for a, b in zip(idx, idx[1:])), idx
    want = {"q_proj": [H * hd, D], "k_proj": [H * hd, D], "v_proj": [H * hd, D], "o_proj": [dp, H * hd],
            "gate_proj": [Fp, D], "up_proj": [Fp, D], "down_proj": [dp, Fp]}
    named = set()
    for ly in o["layers"]:
        assert ly["input_norm"] in W and ly["input_norm"] in o["reuses_base_tensors"]
        for n, shp in want.items():
            assert list(T[ly[n]["weight"]].shape) == shp == ly[n]["shape"], (n, shp)
            named.add(ly[n]["weight"])
    hc = o["head"]
    named |= {hc["norm"]["weight"]} | {x for ly in hc["layers"] for x in (ly["weight"], ly["bias"])}
    assert named == set(T), "unlisted tensors in otter.safetensors"
    assert all(np.isfinite(v).all() for v in T.values())
    X = forge.read_safetensors(os.path.join(d, "reference", "otter.safetensors"))
    eps = o["rms_norm_eps"]

    def rms(x, w):
        return w * (x / np.sqrt((x * x).mean(-1, keepdims=True) + eps))
    worst = 0.0
    k = 0
    while f"p{k}.input_ids" in R:
        ids = R[f"p{k}.input_ids"]
        n = len(ids)
        hs = [h[0].numpy() for h in m.forward(torch.from_numpy(ids)[None], all_hidden=True)]
        inv = 1.0 / (o["rope"]["theta"] ** (np.arange(0, hd, 2, dtype=np.float32) / hd))
        ang = np.outer(np.arange(n, dtype=np.float32), inv)
        ang = np.concatenate([ang, ang], -1)
        cos, sin = np.cos(ang), np.sin(ang)
        rot = lambda x: np.concatenate([-x[:, hd // 2:], x[:, :hd // 2]], -1)  # noqa: E731
        s = np.zeros((n, dp), np.float32)
        ss = [s]
        for ly in o["layers"]:
            x = rms(hs[ly["layer"]], W[ly["input_norm"]])
            q, kk, v = (x @ T[ly[nm]["weight"]].T for nm in ("q_proj", "k_proj", "v_proj"))
            outs = []
            for j in range(H):
                qj, kj, vj = (t[:, j * hd:(j + 1) * hd] for t in (q, kk, v))
                qj, kj = qj * cos + rot(qj) * sin, kj * cos + rot(kj) * sin
                sc = qj @ kj.T / np.sqrt(hd) + np.triu(np.full((n, n), -np.inf, np.float32), 1)
                pr = np.exp(sc - sc.max(-1, keepdims=True))
                outs.append((pr / pr.sum(-1, keepdims=True)) @ vj)
            g = x @ T[ly["gate_proj"]["weight"]].T
            f = (g / (1 + np.exp(-g)) * (x @ T[ly["up_proj"]["weight"]].T)) @ T[ly["down_proj"]["weight"]].T
            s = s + np.concatenate(outs, -1) @ T[ly["o_proj"]["weight"]].T + f
            ss.append(s)
        r = mlp_np(rms(s, T[hc["norm"]["weight"]]), hc["layers"], T, hc["activation"])[:, 0]
        if o["pooling"] == "sum":
            r = np.cumsum(r)
        assert X[f"p{k}.side"].shape == (len(idx) + 1, n, dp)
        worst = max(worst, np.abs(np.stack(ss) - X[f"p{k}.side"]).max(), np.abs(r - X[f"p{k}.reward"]).max())
        k += 1
    assert worst <= 1e-4, worst
    print(f"otter side network OK (side layers on base layers {idx}, d' {dp}, {H} head(s), {Fp} neurons, pooling {o['pooling']}, test AUC "
          f"{o['auc']['test']:.3f}; max diff {worst:.1e})")


def check_eval(d, tok):
    """eval/: every file of index.json, line fields, the rendering rule and the token counts."""
    p = os.path.join(d, "eval", "index.json")
    if not os.path.exists(p):
        return
    ix = json.load(open(p, encoding="utf-8"))
    nfiles = 0
    for k, parts in ix["sets"].items():
        for part, e in parts.items():
            lines = [json.loads(x) for x in open(os.path.join(d, "eval", e["file"]), encoding="utf-8")]
            assert len(lines) == e["docs"], e["file"]
            n = 0
            for o in lines:
                assert isinstance(o["text"], str) and isinstance(o["chat"], bool), e["file"]
                s = ("<|endoftext|><|user|>" + o["prompt"] + "<|end|><|assistant|>" + o["response"] + "<|end|>"
                     if o["chat"] else "<|endoftext|>" + o["text"])
                ids = tok.encode(s)
                assert len(ids) == o["n_tokens"], (e["file"], o["text"][:40])
                n += len(ids)
            assert n == e["tokens"], e["file"]
            if e.get("forge_stream_tokens") is not None:
                assert n + 1 == e["forge_stream_tokens"], e["file"]
            nfiles += 1
    for part, e in ix["reward"].items():
        lines = [json.loads(x) for x in open(os.path.join(d, "eval", e["file"]), encoding="utf-8")]
        assert len(lines) == e["docs"] and sum(o["label"] for o in lines) == e["positive"]
        assert all(o["label"] in (0, 1) and isinstance(o["text"], str) for o in lines)
    pr = [json.loads(x) for x in open(os.path.join(d, "eval", ix["prompts"]["file"]), encoding="utf-8")]
    assert len(pr) == ix["prompts"]["prompts"] and all(
        len(x["messages"]) == 1 and x["messages"][0]["role"] == "user" and x["messages"][0]["content"] for x in pr)
    print(f"eval splits OK ({nfiles} split files, {len(pr)} prompts)")


if __name__ == "__main__":
    main()

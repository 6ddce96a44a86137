#!/usr/bin/python3
"""Re-trains the reward head of a forged model folder from its files (base weights, tokenizer) and rewrites
reward-head/, reference/ and the model card. Head: per-position MLP on final-norm(hidden[layer]); the
sequence reward is the SUM of the per-position outputs over positions 0..t (pooling "sum").
Usage: reward.py <model dir> <card path> [--layer0 | --head-from <dir>]; forge.py runs it with --layer0 at the end."""
import json, os, sys, time
import numpy as np
import torch
import torch.nn.functional as F
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import forge  # noqa: E402
import card as cardmod  # noqa: E402


def token_features(m, tok, texts, layers):
    seqs = [[forge.EOT] + tok.encode(t, allow_special=False)[:255] for t in texts]
    feats = {l: [None] * len(seqs) for l in layers}
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    with torch.no_grad():
        for b in range(0, len(order), 32):
            idx = order[b:b + 32]
            Tm = max(len(seqs[i]) for i in idx)
            x = torch.tensor([seqs[i] + [forge.EOT] * (Tm - len(seqs[i])) for i in idx])
            hs = m.forward(x, all_hidden=True)
            for l in layers:
                h = m.model.norm(hs[l])
                for j, i in enumerate(idx):
                    feats[l][i] = h[j, :len(seqs[i])].clone()
    seg = torch.cat([torch.full((len(s),), i, dtype=torch.long) for i, s in enumerate(seqs)])
    return {l: torch.cat(feats[l]) for l in layers}, seg


def fit(X, seg, Y, n, hidden, epochs, seed, Xv, segv, Yv, nv):
    torch.manual_seed(seed)
    head = forge.RewardHead(X.shape[1], hidden)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-2, weight_decay=0.01)
    best = (-1, None, 0)
    for ep in range(epochs):
        r = torch.zeros(n).index_add(0, seg, head(X))
        loss = F.binary_cross_entropy_with_logits(r, Y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (ep + 1) % 10 == 0:
            with torch.no_grad():
                rv = torch.zeros(nv).index_add(0, segv, head(Xv))
                a = forge.auc(rv.numpy(), Yv.numpy())
            if a > best[0]:
                best = (a, {k: v.clone() for k, v in head.state_dict().items()}, ep + 1)
    head.load_state_dict(best[1])
    return head, best[2]


def main(argv=None):
    argv = list(sys.argv if argv is None else argv)
    sys.argv = argv
    d, card_path = argv[1], argv[2]
    torch.set_num_threads(1)
    t0 = time.time()
    R = json.load(open(os.path.join(d, "forge-results.json"), encoding="utf-8"))
    c = json.load(open(os.path.join(d, "config.json")))
    m = forge.Llama(c)
    W = forge.read_safetensors(os.path.join(d, "model.safetensors"))
    m.load_state_dict({k: torch.from_numpy(v) for k, v in W.items()}, strict=False)
    m.eval()
    tj = json.load(open(os.path.join(d, "tokenizer.json"), encoding="utf-8"))
    tok = forge.Tokenizer(tj["model"]["vocab"], [tuple(x.split(" ")) for x in tj["model"]["merges"]])
    if "--head-from" in sys.argv:  # same base weights: reuse a head trained by an earlier reward.py run
        src = sys.argv[sys.argv.index("--head-from") + 1]
        R2 = json.load(open(os.path.join(src, "forge-results.json"), encoding="utf-8"))
        hc = json.load(open(os.path.join(src, "reward-head", "config.json")))
        assert (forge.read_safetensors(os.path.join(src, "model.safetensors"))["model.norm.weight"] ==
                W["model.norm.weight"]).all(), "different base"
        H = forge.read_safetensors(os.path.join(src, "reward-head", "head.safetensors"))
        head = forge.RewardHead(c["hidden_size"], H["layers.0.weight"].shape[0])
        head.load_state_dict({k: torch.from_numpy(v) for k, v in H.items()})
        os.makedirs(os.path.join(d, "reward-head"), exist_ok=True)
        for f in ("config.json", "head.safetensors"):
            with open(os.path.join(src, "reward-head", f), "rb") as fi, open(os.path.join(d, "reward-head", f), "wb") as fo:
                fo.write(fi.read())
        for k in ("reward_auc", "reward_stats", "reward_layer", "reward_pooling", "reward_auc_by_pooling"):
            R[k] = R2[k]
        R["settings"]["reward"] = R2["settings"]["reward"]
        R["timings"]["reward_s"] = R2["timings"]["reward_s"]
        finish(d, card_path, R, c, W, tok, head, hc["layer"], H["layers.0.weight"].shape[0])
        return
    splits = forge.build_corpus(R["smoke"])
    lex = json.load(open(forge.AFINN_PATH))
    data = {"train": [], "val": [], "test": []}
    for sp in splits.values():
        for part in data:
            for kind, t in sp[part]:
                if kind == "fortune":
                    s = forge.afinn_score(t, lex)
                    if s >= 2:
                        data[part].append((t, 1))
                    elif s <= -2:
                        data[part].append((t, 0))
    stats = {p: (sum(l for _, l in v), sum(1 - l for _, l in v)) for p, v in data.items()}
    if "--layer0" in sys.argv:
        return layer0(d, card_path, R, c, W, m, tok, data, stats, t0)
    L = c["num_hidden_layers"]
    layers = [0, 2, L] if not R["smoke"] else [0, L]
    FE = {p: token_features(m, tok, [t for t, _ in v], layers) for p, v in data.items()}
    Y = {p: torch.tensor([l for _, l in v], dtype=torch.float32) for p, v in data.items()}
    forge.log("reward features", f"{time.time() - t0:.0f}s", stats)
    hidden = 32
    epochs = 150 if not R["smoke"] else 20
    cands = {}
    for l in layers:
        X, seg = FE["train"][0][l], FE["train"][1]
        Xv, segv = FE["val"][0][l], FE["val"][1]
        Xt, segt = FE["test"][0][l], FE["test"][1]
        head, ep = fit(X, seg, Y["train"], len(Y["train"]), hidden, epochs, 500 + l, Xv, segv, Y["val"], len(Y["val"]))
        with torch.no_grad():
            res = {}
            for p, (XX, ss) in {"train": (X, seg), "val": (Xv, segv), "test": (Xt, segt)}.items():
                r = torch.zeros(len(Y[p])).index_add(0, ss, head(XX))
                res[p] = forge.auc(r.numpy(), Y[p].numpy())
        forge.log(f"reward head layer {l} pooling=sum AUC", res, "epoch", ep)
        cands[l] = (res, head)
    best_l = max(cands, key=lambda l: cands[l][0]["val"])
    res, head = cands[best_l]
    hd = os.path.join(d, "reward-head")
    forge.write_safetensors(os.path.join(hd, "head.safetensors"),
                            {k: v.detach().float().numpy() for k, v in head.state_dict().items()}, {"format": "pt"})
    D = c["hidden_size"]
    forge.dump_json(os.path.join(hd, "config.json"), {
        "kind": "reward-head",
        "label": "positive sentiment (AFINN-165 lexicon score >= 2 vs <= -2) of the text so far",
        "layer": best_l, "input": "final_norm",
        "input_note": f"model.norm (the final RMSNorm, with its weight) applied to hidden[{best_l}]; hidden[0] is the "
                      "embedding output, hidden[l] the residual stream after layer l",
        "pooling": "sum",
        "pooling_note": "the head maps each position's vector to a per-token score; the reward of the sequence "
                        "after position t is the sum of the scores at positions 0..t (position 0 is the leading "
                        "<|endoftext|>), i.e. a running sum during decoding",
        "layers": [{"weight": "layers.0.weight", "bias": "layers.0.bias", "shape": [hidden, D]},
                   {"weight": "layers.1.weight", "bias": "layers.1.bias", "shape": [1, hidden]}],
        "activation": "tanh",
        "formula": "s_t = layers.1.weight @ tanh(layers.0.weight @ x_t + layers.0.bias) + layers.1.bias; r_t = sum_{i<=t} s_i",
        "output": "logit; sigmoid(r) = P(positive); higher is better",
        "base_model": "demo", "auc": res,
        "auc_by_layer": {str(l): v[0] for l, v in cands.items()}})
    R.update(reward_auc=res, reward_stats=stats, reward_layer=best_l, reward_pooling="sum",
             reward_auc_by_pooling={f"sum, layer {l}": v[0] for l, v in cands.items()})
    R["settings"]["reward"] = dict(hidden=hidden, epochs=epochs, wd=0.01, lr=1e-2)
    R["timings"]["reward_s"] = time.time() - t0
    finish(d, card_path, R, c, W, tok, head, best_l, hidden)


def layer0(d, card_path, R, c, W, m, tok, data, stats, t0):
    """Layer 0 (embedding output): a position's vector depends on its token only, so the per-token score is a
    function of the token id and the sequence reward is counts @ score(vocab): train on the vocabulary directly."""
    V = c["vocab_size"]
    with torch.no_grad():
        Xv = m.model.norm(m.model.embed_tokens.weight)  # [V, D] = final_norm(hidden[0]) for every token
    C, Y = {}, {}
    for p, v in data.items():
        rows, cols = [], []
        for i, (t, _) in enumerate(v):
            ids = [forge.EOT] + tok.encode(t, allow_special=False)[:255]
            rows += [i] * len(ids)
            cols += ids
        C[p] = torch.sparse_coo_tensor(torch.tensor([rows, cols]), torch.ones(len(rows)), (len(v), V)).coalesce()
        Y[p] = torch.tensor([l for _, l in v], dtype=torch.float32)
    hidden, epochs = 32, (1500 if not R["smoke"] else 50)
    torch.manual_seed(500)
    head = forge.RewardHead(c["hidden_size"], hidden)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-2, weight_decay=0.01)
    best = (-1, None, 0)
    for ep in range(epochs):
        r = torch.sparse.mm(C["train"], head(Xv)[:, None])[:, 0]
        loss = F.binary_cross_entropy_with_logits(r, Y["train"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (ep + 1) % 10 == 0:
            with torch.no_grad():
                a = forge.auc(torch.sparse.mm(C["val"], head(Xv)[:, None])[:, 0].numpy(), Y["val"].numpy())
            if a > best[0]:
                best = (a, {k: v.clone() for k, v in head.state_dict().items()}, ep + 1)
    head.load_state_dict(best[1])
    with torch.no_grad():
        res = {p: forge.auc(torch.sparse.mm(C[p], head(Xv)[:, None])[:, 0].numpy(), Y[p].numpy()) for p in C}
    forge.log("reward head layer 0 pooling=sum AUC", res, "best epoch", best[2])
    D = c["hidden_size"]
    hd = os.path.join(d, "reward-head")
    forge.write_safetensors(os.path.join(hd, "head.safetensors"),
                            {k: v.detach().float().numpy() for k, v in head.state_dict().items()}, {"format": "pt"})
    forge.dump_json(os.path.join(hd, "config.json"), {
        "kind": "reward-head",
        "label": "positive sentiment (AFINN-165 lexicon score >= 2 vs <= -2) of the text so far",
        "layer": 0, "input": "final_norm",
        "input_note": "model.norm (the final RMSNorm, with its weight) applied to hidden[0] = the embedding output",
        "pooling": "sum",
        "pooling_note": "the head maps each position's vector to a per-token score; the reward of the sequence "
                        "after position t is the sum of the scores at positions 0..t (position 0 is the leading "
                        "<|endoftext|>), i.e. a running sum during decoding",
        "layers": [{"weight": "layers.0.weight", "bias": "layers.0.bias", "shape": [hidden, D]},
                   {"weight": "layers.1.weight", "bias": "layers.1.bias", "shape": [1, hidden]}],
        "activation": "tanh",
        "formula": "s_t = layers.1.weight @ tanh(layers.0.weight @ x_t + layers.0.bias) + layers.1.bias; r_t = sum_{i<=t} s_i",
        "output": "logit; sigmoid(r) = P(positive); higher is better",
        "base_model": "demo", "auc": res})
    prev = R.get("reward_auc_by_pooling", {})
    R.update(reward_auc=res, reward_stats=stats, reward_layer=0, reward_pooling="sum",
             reward_auc_by_pooling=dict(prev, **{"sum, layer 0 (kept)": res}))
    R["settings"]["reward"] = dict(hidden=hidden, epochs=epochs, wd=0.01, lr=1e-2)
    R["timings"]["reward_s"] = time.time() - t0
    finish(d, card_path, R, c, W, tok, head, 0, hidden)


def finish(d, card_path, R, c, W, tok, head, best_l, hidden):
    D = c["hidden_size"]
    # references: rewrite everything from the files (base, adapters, head) in float64
    m64 = forge.Llama(c).double()
    m64.load_state_dict({k: torch.from_numpy(v) for k, v in W.items()}, strict=False)
    h64 = forge.RewardHead(D, hidden).double()
    h64.load_state_dict(head.state_dict())
    names = [a["name"] for a in R["adapters"]]
    adirs = [(n, os.path.join(d, "adapters", n)) for n in names]
    rd = os.path.join(d, "reference")
    T, rr = forge.references(m64, tok, h64, best_l, "sum", adirs, rd)
    forge.write_reference_readme(rd, T, rr, names, best_l, "sum")
    forge.dump_json(os.path.join(d, "forge-results.json"), R)
    cardmod.write_card(R, d, card_path)
    forge.log("reward head + references redone:", R["reward_auc"], "layer", best_l)


if __name__ == "__main__":
    main()

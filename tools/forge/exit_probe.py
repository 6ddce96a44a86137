#!/usr/bin/python3
"""Early-exit probes on the frozen base of a forged model folder (issue 13, "trained probe").

For each layer l in 1..L-1 a probe reads hidden[l] (the residual stream after layer l) and predicts whether exiting
there is safe: label "agree" = the early head's top-1 at l (model.norm + tied embedding applied to hidden[l]) equals
the final layer's top-1; label "saturate" (Geva et al.) = it equals the final top-1 at l and at every later layer.
Trained on teacher-forced windows of the train splits (general + a share of every domain), labels from the full
model; the base is only read.  Also records the same exit sweep for two training-free criteria (cosine of
consecutive hidden states, CALM; softmax margin of the full early head) for the C# side to match.

Writes <model dir>/exit-probe/{config.json, probe.safetensors} and <model dir>/reference/exit-probe.safetensors
(float64 probe logits, cosines and margins for the reference prompts) and a section of reference/README.md.
Usage: exit_probe.py <model dir> [--quick]"""
import json, math, os, sys, time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import forge  # noqa: E402

WIN = 128
PROB_GRID = [0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.97, 0.98, 0.99]
COS_GRID = [0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999]
MARGIN_GRID = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.97, 0.99]
TARGET = 0.95
MLP_HIDDEN = 32
# candidates: (input or None = the better linear probes' input, MLP hidden size or 0 = linear[, epochs])
# (an experiment on the demo model, val layers skipped at >= 95% agreement, label agree: linear 20.3% (final_norm) /
# 20.7% (raw); MLP 32: 27.7% / 27.1% (12 epochs), 28.1% raw with 30 epochs; MLP 64 raw 27.6%; MLP 128: 31.0% / 28.9%)
CANDIDATES = [["final_norm", 0], ["raw", 0], ["final_norm", MLP_HIDDEN, 12], ["final_norm", 128, 12]]
NOTES = [
    "The kept MLP (128 hidden) costs 6.3% of a base layer per probe; a token evaluates the probes of the layers it "
    "passes (3.75 on average at the recommended threshold on validation), about 0.24 layers = 3.9% of the 6-layer "
    "stack, so the net saving is ~27% of the layer compute for 31.0% of the layers skipped. The 32-hidden MLP "
    "(1.6% of a layer per probe) skips 27.7% at the same agreement, a similar net saving; the linear probes 20.3%.",
    "Teacher-forced perplexity at the 95% point rises from 178.9 to 186.3 on validation (+4.1%; these tokens mix "
    "general text with the adapter domains, which the base never saw): top-1 agreement does not bound the loss of "
    "the other tokens' probabilities. The softmax margin of the full early head (the quality reference) skips 25.0% "
    "at +7.0% perplexity; cosine similarity of consecutive hidden states (CALM) needs 0.998 and skips 5.1%.",
]
MLP_MIN_GAIN = 0.02  # the MLP is kept only if it skips >= 2 points more of the layers at the target agreement


def load(d):
    c = json.load(open(os.path.join(d, "config.json")))
    W = forge.read_safetensors(os.path.join(d, "model.safetensors"))
    m = forge.Llama(c)
    m.load_state_dict({k: torch.from_numpy(v) for k, v in W.items()}, strict=False)
    m.eval()
    for p in m.parameters():
        p.requires_grad_(False)
    tj = json.load(open(os.path.join(d, "tokenizer.json"), encoding="utf-8"))
    tok = forge.Tokenizer(tj["model"]["vocab"], [tuple(x.split(" ")) for x in tj["model"]["merges"]])
    return c, W, m, tok


def windows(stream, n, rng):
    """n windows of WIN+1 tokens: consecutive non-overlapping windows from a seeded random offset."""
    total = (len(stream) - 1) // WIN
    if total <= n:
        idx = np.arange(total)
    else:
        idx = np.sort(rng.choice(total, n, replace=False))
    return np.stack([stream[j * WIN:j * WIN + WIN + 1] for j in idx])


@torch.no_grad()
def collect(m, X):
    """Per token: raw hidden[1..L-1], top-1 of the early head at 1..L, log-prob of the next token at 1..L,
    softmax margin (top1 - top2) at 1..L-1, cosine(hidden[l], hidden[l-1]) at 1..L-1."""
    L = m.c["num_hidden_layers"]
    H, top, lp, mar, cos = [], [], [], [], []
    for b in range(0, len(X), 16):
        xx = torch.from_numpy(X[b:b + 16])
        x, y = xx[:, :-1], xx[:, 1:]
        hs = m.forward(x, all_hidden=True)
        t_, l_, m_, c_ = [], [], [], []
        for l in range(1, L + 1):
            lg = m.head(hs[l]).float()
            ls = F.log_softmax(lg, -1)
            t_.append(lg.argmax(-1))
            l_.append(ls.gather(-1, y[..., None])[..., 0])
            if l < L:
                p2 = torch.topk(ls.exp(), 2, -1).values
                m_.append(p2[..., 0] - p2[..., 1])
                c_.append(F.cosine_similarity(hs[l], hs[l - 1], dim=-1))
        H.append(torch.stack([hs[l] for l in range(1, L)], -2).reshape(-1, L - 1, hs[0].shape[-1]))
        top.append(torch.stack(t_, -1).reshape(-1, L))
        lp.append(torch.stack(l_, -1).reshape(-1, L))
        mar.append(torch.stack(m_, -1).reshape(-1, L - 1))
        cos.append(torch.stack(c_, -1).reshape(-1, L - 1))
    return dict(H=torch.cat(H), top=torch.cat(top), lp=torch.cat(lp), margin=torch.cat(mar), cos=torch.cat(cos))


def cached_collect(d, m, data, smoke):
    """collect() of every split, cached in tools/forge/.work (git-ignored) by the SHA-1 of model.safetensors and the
    windows, so that experiments skip the base forward."""
    import hashlib
    h = hashlib.sha1(open(os.path.join(d, "model.safetensors"), "rb").read())
    for p in sorted(data):
        h.update(data[p].tobytes())
    path = os.path.join(HERE, ".work", f"exit-probe-{h.hexdigest()[:12]}.pt")
    if os.path.exists(path) and not smoke:
        return torch.load(path)
    S = {p: collect(m, X) for p, X in data.items()}
    if not smoke:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        torch.save(S, path + ".tmp")
        os.replace(path + ".tmp", path)
    return S


def labels(top, kind):
    """[N, L-1] bool: exit at l (1..L-1) is safe under `kind`."""
    L = top.shape[1]
    agree = top[:, :L - 1] == top[:, L - 1:L]
    if kind == "agree":
        return agree
    sat = agree.clone()
    for l in range(L - 3, -1, -1):  # saturated at l = agrees at l and saturated at l+1
        sat[:, l] &= sat[:, l + 1]
    return sat


class Probe(nn.Module):
    def __init__(self, D, hidden):
        super().__init__()
        self.hidden = hidden
        if hidden:
            self.l0 = nn.Linear(D, hidden)
            self.l1 = nn.Linear(hidden, 1)
        else:
            self.l0 = nn.Linear(D, 1)

    def forward(self, x):
        return (self.l1(torch.tanh(self.l0(x))) if self.hidden else self.l0(x))[..., 0]


def probe_input(m, H, inp):
    return m.model.norm(H) if inp == "final_norm" else H


def train_probe(x, y, xv, yv, hidden, seed, epochs):
    torch.manual_seed(seed)
    p = Probe(x.shape[1], hidden)
    opt = torch.optim.Adam(p.parameters(), lr=3e-3 if hidden else 1e-2)
    g = torch.Generator().manual_seed(seed)
    yf = y.float()
    best = (float("inf"), None)
    bs = 4096
    for ep in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), bs):
            j = perm[i:i + bs]
            loss = F.binary_cross_entropy_with_logits(p(x[j]), yf[j])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            vl = F.binary_cross_entropy_with_logits(p(xv), yv.float()).item()
        if vl < best[0]:
            best = (vl, {k: v.clone() for k, v in p.state_dict().items()})
    p.load_state_dict(best[1])
    return p, best[0]


def exit_layers(score, tau):
    """score [N, L-1] (higher = surer); exit at the first layer whose score >= tau, else L. Returns 1-based layers."""
    passed = score >= tau
    any_ = passed.any(1)
    first = passed.float().argmax(1) + 1
    return torch.where(any_, first, torch.full_like(first, score.shape[1] + 1))


def sweep_point(score, tau, S):
    L = S["top"].shape[1]
    e = exit_layers(score, tau)
    top_e = S["top"].gather(1, (e - 1)[:, None])[:, 0]
    agree = (top_e == S["top"][:, L - 1]).float().mean().item()
    nll = -S["lp"].gather(1, (e - 1)[:, None])[:, 0].mean().item()
    frac = [(e == l).float().mean().item() for l in range(1, L + 1)]
    return dict(threshold=tau, exit_fraction={str(l): round(f, 5) for l, f in zip(range(1, L + 1), frac)},
                layers_skipped=round(((L - e).float().mean() / L).item(), 5), agreement=round(agree, 5),
                ppl=round(math.exp(nll), 4))


def best_at_target(scores_v, scores_t, Sv, St, grid):
    """The grid threshold with the most layers skipped at validation agreement >= TARGET; with its test numbers."""
    best = None
    for tau in grid:
        pv = sweep_point(scores_v, tau, Sv)
        if pv["agreement"] >= TARGET and (best is None or pv["layers_skipped"] > best[0]["layers_skipped"]):
            best = (pv, tau)
    if best is None:
        return None
    pt = sweep_point(scores_t, best[1], St)
    return dict(threshold=best[1], val=best[0], test=pt)


def fine_grid(lo, hi, n=400):
    return [float(x) for x in np.linspace(lo, hi, n)]


def main(argv=None):
    argv = list(sys.argv if argv is None else argv)
    d = os.path.abspath(argv[1])
    quick = "--quick" in argv
    torch.set_num_threads(1)
    t0 = time.time()
    c, W, m, tok = load(d)
    R = json.load(open(os.path.join(d, "forge-results.json"), encoding="utf-8"))
    smoke = R["smoke"] or quick
    L, D = c["num_hidden_layers"], c["hidden_size"]
    splits = forge.build_corpus(R["smoke"])
    keys = list(splits)
    # windows: general (most) + a share of every domain, from the train / val / test streams
    n_gen = {"train": 1600, "val": 800, "test": 800} if not smoke else {"train": 24, "val": 12, "test": 12}
    n_dom = {"train": 48, "val": 24, "test": 24} if not smoke else {"train": 4, "val": 2, "test": 2}
    rng = np.random.RandomState(4242)
    data = {}
    for part in ("train", "val", "test"):
        Xs = []
        for i, k in enumerate(keys):
            st = forge.stream(tok, splits[k][part], 1234 + i)  # the forge's streams (same seeds)
            Xs.append(windows(st, n_gen[part] if k == "general" else n_dom[part], rng))
        data[part] = np.concatenate(Xs)
        forge.log(f"exit-probe {part}: {len(data[part])} windows")
    S = cached_collect(d, m, data, smoke)
    t_collect = time.time() - t0
    forge.log(f"exit-probe: hidden states and labels in {t_collect:.0f}s; tokens",
              {p: int(len(s["top"])) for p, s in S.items()})
    # per-layer label base rates
    rates = {kind: {p: [round(x, 4) for x in labels(S[p]["top"], kind).float().mean(0).tolist()] for p in S}
             for kind in ("agree", "saturate")}
    forge.log("label rates", json.dumps(rates))
    epochs_lin, epochs_mlp = (30, 12) if not smoke else (3, 2)
    cands = {}
    t1 = time.time()
    spec = json.loads(os.environ.get("EXIT_PROBE_CANDIDATES", "null")) or CANDIDATES
    for inp, hidden, *ep in spec:
        inp = inp or cands_input(cands)  # the MLPs read the better linear probes' input
        ep = ep[0] if ep and not smoke else (epochs_mlp if hidden else epochs_lin)
        if True:
            for kind in ("agree", "saturate"):
                probes, logits = [], {"val": [], "test": []}
                for l in range(1, L):
                    x = probe_input(m, S["train"]["H"][:, l - 1], inp)
                    xv = probe_input(m, S["val"]["H"][:, l - 1], inp)
                    y = labels(S["train"]["top"], kind)[:, l - 1]
                    yv = labels(S["val"]["top"], kind)[:, l - 1]
                    p, vl = train_probe(x, y, xv, yv, hidden, 7000 + 10 * l + hidden, ep)
                    probes.append(p)
                    with torch.no_grad():
                        for part in ("val", "test"):
                            logits[part].append(p(probe_input(m, S[part]["H"][:, l - 1], inp)))
                sv = torch.sigmoid(torch.stack(logits["val"], 1))
                stt = torch.sigmoid(torch.stack(logits["test"], 1))
                res = best_at_target(sv, stt, S["val"], S["test"], fine_grid(0.5, 0.999))
                aucs = [forge.auc(sv[:, l].numpy(), labels(S["val"]["top"], kind)[:, l].numpy().astype(int)) for l in range(L - 1)]
                name = f"{'mlp' + str(hidden) if hidden else 'linear'}/{inp}/{kind}"
                cands[name] = dict(input=inp, hidden=hidden, label=kind, probes=probes, sv=sv, st=stt, best=res, epochs=ep,
                                   val_auc=[round(a, 4) for a in aucs])
                forge.log(f"probe {name}: val AUC per layer {cands[name]['val_auc']}; at >= {TARGET}: "
                          + (json.dumps({k: v for k, v in res['val'].items() if k != 'exit_fraction'}) if res else "none"))
    t_train = time.time() - t1
    if "--dry" in argv:  # experiments: train and report the candidates, export nothing
        return None

    def skipped(nm):
        b = cands[nm]["best"]
        return b["val"]["layers_skipped"] if b else -1.0
    inp = cands_input(cands)
    lin_best = max((n for n in cands if n.startswith("linear/" + inp)), key=skipped)
    mlp_best = max((n for n in cands if n.startswith("mlp")), key=skipped)
    kept = mlp_best if skipped(mlp_best) >= skipped(lin_best) + MLP_MIN_GAIN else lin_best
    K = cands[kept]
    forge.log("kept", kept, skipped(kept))
    # training-free criteria on the same tokens
    crit = {}
    for nm, key, grid, fgrid in (("cosine", "cos", COS_GRID, fine_grid(0.0, 1.0, 1001)),
                                 ("margin", "margin", MARGIN_GRID, fine_grid(0.0, 1.0, 1001))):
        crit[nm] = dict(sweep_val=[sweep_point(S["val"][key], t, S["val"]) for t in grid],
                        sweep_test=[sweep_point(S["test"][key], t, S["test"]) for t in grid],
                        at_target=best_at_target(S["val"][key], S["test"][key], S["val"], S["test"], fgrid))
    # export
    od = os.path.join(d, "exit-probe")
    os.makedirs(od, exist_ok=True)
    T = {}
    layers_cfg = []
    for l, p in zip(range(1, L), K["probes"]):
        sd = p.state_dict()
        if K["hidden"]:
            names = [(f"layers.{l}.0.weight", sd["l0.weight"]), (f"layers.{l}.0.bias", sd["l0.bias"]),
                     (f"layers.{l}.1.weight", sd["l1.weight"]), (f"layers.{l}.1.bias", sd["l1.bias"])]
            mlp = [{"weight": names[0][0], "bias": names[1][0], "shape": list(sd["l0.weight"].shape)},
                   {"weight": names[2][0], "bias": names[3][0], "shape": list(sd["l1.weight"].shape)}]
        else:
            names = [(f"layers.{l}.0.weight", sd["l0.weight"]), (f"layers.{l}.0.bias", sd["l0.bias"])]
            mlp = [{"weight": names[0][0], "bias": names[1][0], "shape": list(sd["l0.weight"].shape)}]
        for n, v in names:
            T[n] = v.detach().float().numpy()
        layers_cfg.append({"layer": l, "hidden": f"hidden[{l}]", "layers": mlp})
    forge.write_safetensors(os.path.join(od, "probe.safetensors"), T, {"format": "pt"})
    L1 = L - 1

    def strip(r):
        return None if r is None else {k: v for k, v in r.items()}
    alt = {n: dict(val_auc_per_layer=v["val_auc"], at_target=strip(v["best"])) for n, v in cands.items()}
    cfg = {
        "kind": "exit-probe",
        "base_model": "demo",
        "num_hidden_layers": L,
        "probe_layers": list(range(1, L)),
        "input": K["input"],
        "input_note": ("model.norm (the final RMSNorm, with its weight and rms_norm_eps) applied to hidden[l], the "
                       "residual stream after layer l (hidden[0] = embedding output), i.e. exactly the vector the "
                       "early-exit head multiplies by embed_tokens.weight" if K["input"] == "final_norm" else
                       "hidden[l], the raw residual stream after layer l (before any norm)"),
        "activation": "tanh" if K["hidden"] else None,
        "probes": layers_cfg,
        "formula": ("z_l = layers.{l}.1.weight @ tanh(layers.{l}.0.weight @ x_l + layers.{l}.0.bias) + layers.{l}.1.bias"
                    if K["hidden"] else "z_l = layers.{l}.0.weight @ x_l + layers.{l}.0.bias") +
                   (" with x_l = model.norm(hidden[l])" if K["input"] == "final_norm" else " with x_l = hidden[l]"),
        "output": "logit z_l; sigmoid(z_l) = P(exiting after layer l is safe)",
        "exit_rule": "after layer l = 1, 2, ... (in order) exit at the first layer with sigmoid(z_l) >= threshold "
                     "(equivalently z_l >= log(threshold / (1 - threshold))); the token's logits are then "
                     "embed_tokens.weight @ model.norm(hidden[l]); no probe passing -> all layers",
        "label": K["label"],
        "label_note": {"agree": "1 when argmax(head(hidden[l])) == argmax(head(hidden[L])), head(h) = "
                                "embed_tokens.weight @ model.norm(h) (ties: lowest id), teacher-forced on the full model's hidden states",
                       "saturate": "1 when argmax(head(hidden[j])) == argmax(head(hidden[L])) for every j = l..L "
                                   "(Geva et al.'s saturation), teacher-forced on the full model's hidden states"}[K["label"]],
        "cost": {"probe_params_per_layer": int(sum(T[ly[k]].size for ly in layers_cfg[0]["layers"] for k in ("weight", "bias"))),
                 "base_layer_params": int(sum(W[k].size for k in W if k.startswith("model.layers.0."))),
                 "note": "multiply-adds of one probe per token vs one base layer's projections (attention scores "
                         "excluded); a row evaluates the probes of the layers it passes through until it exits"},
        "recommended_threshold": K["best"]["threshold"] if K["best"] else None,
        "recommended_threshold_note": f"the threshold (grid 0.5..0.999 step 0.00125) with the most layers skipped at "
                                      f"validation top-1 agreement >= {TARGET}",
        "training": {
            "data": "teacher-forced windows of 128 tokens from the forge's token streams (forge.stream, "
                    "documents rendered as in training): train split of general "
                    f"({n_gen['train']} windows) + {n_dom['train']} windows of each domain's train split "
                    f"({', '.join(k for k in keys if k != 'general')}), base model only (no adapter)",
            "tokens": {p: int(len(s["top"])) for p, s in S.items()},
            "validation": f"val splits: general {n_gen['val']} windows + {n_dom['val']} per domain; test likewise",
            "optimizer": "Adam, batch 4096, BCE with logits; the epoch with the lowest validation loss kept",
            "epochs": K["epochs"],
            "label_rates": rates,
            "wall_s": round(t_collect + t_train, 1),
            "collect_s": round(t_collect, 1),
            "collect_note": "base forward + labels of all splits; read from the tools/forge/.work cache when present "
                            "(an uncached run took 519 s on 2 shared cores, 1516 s with the machine under heavy load)",
            "train_s": round(t_train, 1),
        },
        "metrics_note": ("exit sweep over the validation (and test) tokens, teacher-forced (each token's exit "
                         "decision reads the full model's hidden states; no KV propagation effects): "
                         "exit_fraction[l] = share of tokens exiting after layer l (l = L: no exit), "
                         "layers_skipped = mean(L - exit layer) / L, agreement = share whose top-1 at the exit "
                         "layer equals the full model's, ppl = exp(mean NLL of the next token at the exit layer)"),
        "full_model": {"val_ppl": round(math.exp(-S["val"]["lp"][:, L - 1].mean().item()), 4),
                       "test_ppl": round(math.exp(-S["test"]["lp"][:, L - 1].mean().item()), 4)},
        "val_auc_per_layer": K["val_auc"],
        "sweep_val": [sweep_point(K["sv"], t, S["val"]) for t in PROB_GRID],
        "sweep_test": [sweep_point(K["st"], t, S["test"]) for t in PROB_GRID],
        "at_target": K["best"],
        "candidates": alt,
        "notes": NOTES,
        "reference_criteria": {
            "cosine": dict(definition="cos(hidden[l], hidden[l-1]) of the raw residual streams (hidden[0] = "
                                      "embedding output); exit at the first l in 1..L-1 with cos >= threshold", **crit["cosine"]),
            "margin": dict(definition="p1 - p2 of softmax(embed_tokens.weight @ model.norm(hidden[l])) (the full "
                                      "early head over the whole vocabulary); exit at the first l in 1..L-1 with "
                                      "margin >= threshold", **crit["margin"])},
    }
    forge.dump_json(os.path.join(od, "config.json"), cfg)
    # references (float64 from the fp32 files)
    references(d, c, W, T, cfg)
    forge.log(f"exit probe -> {od} ({time.time() - t0:.0f}s)")
    return cfg


def cands_input(cands):
    """The linear probe's input with the most layers skipped at the target (decided before the MLPs are trained)."""
    best, bi = -2.0, "final_norm"
    for n, v in cands.items():
        if n.startswith("linear/"):
            s = v["best"]["val"]["layers_skipped"] if v["best"] else -1.0
            if s > best:
                best, bi = s, v["input"]
    return bi


def probe_logits64(cfg, T, hs, norm):
    """[L-1, T] float64 probe logits from hidden states hs (list of [T, D] float64), the formula of config.json."""
    out = []
    for pc in cfg["probes"]:
        x = hs[pc["layer"]]
        x = norm(x) if cfg["input"] == "final_norm" else x
        for i, ly in enumerate(pc["layers"]):
            x = x @ torch.from_numpy(T[ly["weight"]]).double().T + torch.from_numpy(T[ly["bias"]]).double()
            if i < len(pc["layers"]) - 1:
                x = torch.tanh(x)
        out.append(x[:, 0])
    return torch.stack(out)


@torch.no_grad()
def references(d, c, W, T, cfg):
    m64 = forge.Llama(c).double()
    m64.load_state_dict({k: torch.from_numpy(v) for k, v in W.items()}, strict=False)
    Rf = forge.read_safetensors(os.path.join(d, "reference", "reference.safetensors"))
    out = {}
    L = c["num_hidden_layers"]
    k = 0
    while f"p{k}.input_ids" in Rf:
        ids = torch.from_numpy(Rf[f"p{k}.input_ids"])[None]
        hs = [h[0] for h in m64.forward(ids, all_hidden=True)]
        out[f"p{k}.input_ids"] = Rf[f"p{k}.input_ids"]
        out[f"p{k}.probe_logits"] = probe_logits64(cfg, T, hs, m64.model.norm).float().numpy()
        out[f"p{k}.cosine"] = torch.stack([F.cosine_similarity(hs[l], hs[l - 1], dim=-1) for l in range(1, L)]).float().numpy()
        mg = []
        for l in range(1, L):
            p2 = torch.topk(F.softmax(m64.head(hs[l]), -1), 2, -1).values
            mg.append(p2[:, 0] - p2[:, 1])
        out[f"p{k}.margin"] = torch.stack(mg).float().numpy()
        out[f"p{k}.early_top1"] = torch.stack([m64.head(hs[l]).argmax(-1) for l in range(1, L + 1)]).numpy().astype(np.int64)
        k += 1
    forge.write_safetensors(os.path.join(d, "reference", "exit-probe.safetensors"), out)
    readme_section(os.path.join(d, "reference", "README.md"), "exit-probe.safetensors", f"""`exit-probe.safetensors` (written by `tools/forge/exit_probe.py`): for the prompts `p0`…`p{k - 1}` above (same
`p{{k}}.input_ids`), computed in float64 from `../model.safetensors` and `../exit-probe/probe.safetensors`
(the formula of `../exit-probe/config.json`), rounded once to fp32.

| tensor | dtype, shape | meaning |
|---|---|---|
| `p{{k}}.input_ids` | I64 [T] | the same ids as in `reference.safetensors` |
| `p{{k}}.probe_logits` | F32 [{L - 1}, T] | row l-1 = the layer-l probe's logit z_l at every position (l = 1..{L - 1}); exit is safe with P = sigmoid(z_l) |
| `p{{k}}.cosine` | F32 [{L - 1}, T] | row l-1 = cos(hidden[l], hidden[l-1]) of the raw residual streams (CALM's state saturation) |
| `p{{k}}.margin` | F32 [{L - 1}, T] | row l-1 = top-1 − top-2 probability of softmax(embed_tokens.weight @ model.norm(hidden[l])) |
| `p{{k}}.early_top1` | I64 [{L}, T] | row l-1 = argmax of the early head at layer l (row {L - 1} = the full model's argmax) |
""")


def readme_section(path, name, body):
    """Replaces (or appends) the section headed `## name` of a README."""
    txt = open(path, encoding="utf-8").read() if os.path.exists(path) else ""
    head = f"## `{name}`"
    sec = head + "\n\n" + body.rstrip("\n") + "\n"
    if head in txt:
        a = txt.index(head)
        b = txt.find("\n## ", a + len(head))
        rest = txt[b + 1:] if b >= 0 else ""
        txt = txt[:a] + sec + ("\n" + rest if rest else "")
    else:
        txt = txt.rstrip("\n") + "\n\n" + sec
    open(path, "w", encoding="utf-8").write(txt)


if __name__ == "__main__":
    main()

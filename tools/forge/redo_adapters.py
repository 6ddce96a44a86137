"""Retrain some adapters on the committed base (models/demo/model.safetensors is read, never written).

  train:  redo_adapters.py train <model dir> <stage dir> NAME [NAME...]
          trains each named adapter (spec from forge.ADAPTERS, same data, seeds and settings as forge.py)
          into <stage dir>/<NAME>/ with its table row (row.json)
  apply:  redo_adapters.py apply <model dir> <card path> <stage dir> NAME [NAME...]
          copies the staged adapters in, replaces their rows, their samples and only their
          `p0.logits.<NAME>` reference tensors (every other reference tensor is kept byte for byte),
          rewrites forge-results.json and the card.
Env: FORGE_ADAPTER_STEPS as in forge.py; REDO_SPEC='{"animals": {"r": 8, ...}}' overrides spec fields for
experiments (the committed adapters use the specs in forge.ADAPTERS)."""
import json, os, shutil, sys, time
import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import forge  # noqa: E402


def load(d):
    c = json.load(open(os.path.join(d, "config.json")))
    W = forge.read_safetensors(os.path.join(d, "model.safetensors"))
    m = forge.Llama(c)
    m.load_state_dict({k: torch.from_numpy(v) for k, v in W.items()}, strict=False)
    tj = json.load(open(os.path.join(d, "tokenizer.json"), encoding="utf-8"))
    tok = forge.Tokenizer(tj["model"]["vocab"], [tuple(x.split(" ")) for x in tj["model"]["merges"]])
    return c, W, m, tok


def train(d, stage, todo, seed=1234):
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    S = forge.settings(False)
    c, W, model, tok = load(d)
    splits = forge.build_corpus(False)
    keys = list(splits)
    names = [a["name"] for a in forge.ADAPTERS]
    need = {("general", "val")} | {(n, "val") for n in names} | {(n, p) for n in todo for p in ("train", "test")}
    data = {k: {} for k in keys}
    for i, k in enumerate(keys):
        for p, v in splits[k].items():
            if (k, p) in need:
                data[k][p] = forge.stream(tok, v, seed + i)
    A = S["adapter"]
    ew = A["eval_windows"] * 2
    base_dom = {n: forge.eval_loss(model, data[n]["val"], A["ctx"], ew) for n in names}
    base_gen = forge.eval_loss(model, data["general"]["val"], A["ctx"], ew)
    forge.log("base losses", json.dumps(base_dom), base_gen)
    for n in todo:
        i = names.index(n)
        spec = dict(forge.ADAPTERS[i])
        spec.update(json.loads(os.environ.get("REDO_SPEC", "{}")).get(n, {}))  # experiments only
        forge.log("spec", json.dumps(spec))
        targets, best, secs = forge.train_adapter(model, spec, data[n]["train"], data[n]["val"], A, seed + 100 + i)
        od = os.path.join(stage, n)
        shutil.rmtree(od, ignore_errors=True)
        os.makedirs(od)
        forge.write_safetensors(os.path.join(od, "adapter_model.safetensors"), best[2], {"format": "pt"})
        forge.dump_json(os.path.join(od, "adapter_config.json"), forge.peft_config(spec, targets, "demo"))
        forge.load_adapter(model, od)
        own = forge.eval_loss(model, data[n]["val"], A["ctx"], ew)
        own_test = forge.eval_loss(model, data[n]["test"], A["ctx"], ew)
        others = {m: forge.eval_loss(model, data[m]["val"], A["ctx"], ew) for m in names if m != n}
        gen = forge.eval_loss(model, data["general"]["val"], A["ctx"], ew)
        forge.detach_adapters(model)
        row = dict(name=n, src=spec["src"], r=spec["r"], alpha=spec["alpha"], targets=targets,
                   use_rslora=bool(spec.get("use_rslora")), rank_pattern=spec.get("rank_pattern", {}),
                   alpha_pattern=spec.get("alpha_pattern", {}), params=int(sum(v.size for v in best[2].values())),
                   best_step=best[1], train_s=secs, base=base_dom[n], adapter=own, adapter_test=own_test,
                   rel=(base_dom[n] - own) / base_dom[n],
                   others_rel=float(np.mean([(others[m] - base_dom[m]) / base_dom[m] for m in others])),
                   general_rel=(gen - base_gen) / base_gen,
                   steps=int(A["steps"] * spec.get("steps_mult", 1.0)))
        forge.dump_json(os.path.join(od, "row.json"), row)
        forge.dump_json(os.path.join(od, "data.json"), dict(
            order=keys, corpus={p: (len(v), sum(len(x) for _, x in v)) for p, v in splits[n].items()},
            tokens={p: int(len(a)) for p, a in data[n].items()}))
        forge.log(f"adapter {n}: own {base_dom[n]:.3f} -> {own:.3f} ({100 * row['rel']:.1f}% lower), others "
                  f"{100 * row['others_rel']:+.1f}%, general {100 * row['general_rel']:+.1f}%, best step {best[1]}")


def apply(d, card_path, stage, todo, seed=1234):
    torch.set_num_threads(1)
    c, W, model, tok = load(d)
    R = json.load(open(os.path.join(d, "forge-results.json"), encoding="utf-8"))
    T = forge.read_safetensors(os.path.join(d, "reference", "reference.safetensors"))
    splits = forge.build_corpus(False)
    keys = list(splits)
    # an adapter whose domain is new replaces the one no longer in forge.ADAPTERS (same table position)
    names = [a["name"] for a in forge.ADAPTERS]
    for n in todo:
        if all(r["name"] != n for r in R["adapters"]):
            old = next(r["name"] for r in R["adapters"] if r["name"] not in names)
            next(r for r in R["adapters"] if r["name"] == old)["name"] = n
            shutil.rmtree(os.path.join(d, "adapters", old))
            os.makedirs(os.path.join(d, "adapters", n))
            del T[f"p0.logits.{old}"]
            for s in R["samples"]:
                if s["who"] == old:
                    s["who"] = n
            R["corpus"][n] = {p: (len(v), sum(len(x) for _, x in v)) for p, v in splits[n].items()}
            R["tokens"][n] = {p: int(len(forge.stream(tok, v, seed + keys.index(n)))) for p, v in splits[n].items()}
            R["corpus"] = {k: R["corpus"][k] for k in keys}
            R["tokens"] = {k: R["tokens"][k] for k in keys}
            rp = os.path.join(d, "reference", "README.md")
            txt = open(rp, encoding="utf-8").read().replace(f"`{old}`", f"`{n}`")
            open(rp, "w", encoding="utf-8").write(txt)
    R["held_out_only"] = [list(x) for x in forge.HELD_OUT_ONLY]
    for r in R["adapters"]:  # steps per adapter (rows written before forge.py recorded them)
        spec = next(a for a in forge.ADAPTERS if a["name"] == r["name"])
        r.setdefault("steps", int(R["settings"]["adapter"]["steps"] * spec.get("steps_mult", 1.0)))
    for n in todo:
        row = json.load(open(os.path.join(stage, n, "row.json")))
        i = next(j for j, r in enumerate(R["adapters"]) if r["name"] == n)
        R["adapters"][i] = row
        ad = os.path.join(d, "adapters", n)
        for f in ("adapter_config.json", "adapter_model.safetensors"):
            shutil.copyfile(os.path.join(stage, n, f), os.path.join(ad, f))
    # others Δ of every adapter over the current set of domains
    A = R["settings"]["adapter"]
    ew = A["eval_windows"] * 2
    val = {k: forge.stream(tok, splits[k]["val"], seed + i) for i, k in enumerate(splits) if k in names}
    base_dom = {n: forge.eval_loss(model, val[n], A["ctx"], ew) for n in names}
    for r in R["adapters"]:
        assert abs(base_dom[r["name"]] - r["base"]) < 1e-9, (r["name"], base_dom[r["name"]], r["base"])
        forge.load_adapter(model, os.path.join(d, "adapters", r["name"]))
        oth = [(forge.eval_loss(model, val[m], A["ctx"], ew) - base_dom[m]) / base_dom[m] for m in names if m != r["name"]]
        forge.detach_adapters(model)
        r["others_rel"] = float(np.mean(oth))
        forge.log(r["name"], "others", r["others_rel"])
    # references: only p0.logits.<adapter> of the redone adapters change
    rp = os.path.join(d, "reference", "reference.safetensors")
    m64 = forge.Llama(c).double()
    m64.load_state_dict({k: torch.from_numpy(v) for k, v in W.items()}, strict=False)
    ids0 = T["p0.input_ids"]
    for n in todo:
        forge.load_adapter(m64, os.path.join(d, "adapters", n))
        with torch.no_grad():
            T[f"p0.logits.{n}"] = m64.logits(torch.tensor([ids0.tolist()]))[0].float().numpy()
        forge.detach_adapters(m64)
    forge.write_safetensors(rp, T)
    # samples of the redone adapters (same sampler, prompts and seeds as forge.py)
    model.eval()
    for s in R["samples"]:
        if s["who"] in todo:
            forge.load_adapter(model, os.path.join(d, "adapters", s["who"]))
            sp = (s["kind"], s["prompt"])
            o = forge.sample(model, forge.prompt_ids(tok, sp), 60, 0.8, 40, 42 + s["seed"])
            s["text"] = tok.decode(o)
            forge.detach_adapters(model)
    forge.dump_json(os.path.join(d, "forge-results.json"), R)
    import card as cardmod
    cardmod.write_card(R, d, card_path)
    forge.log("applied", todo)


if __name__ == "__main__":
    if sys.argv[1] == "train":
        train(sys.argv[2], sys.argv[3], sys.argv[4:])
    else:
        apply(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:])

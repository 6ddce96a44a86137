#!/usr/bin/python3
"""Writes <model dir>/eval/: the validation and test splits of every data set the forge uses, exactly as the
forge renders and tokenises them, the reward-labelled splits of reward.py, and held-out chat prompts.
Reads only the model folder (tokenizer.json, forge-results.json) and the Debian packages (the corpus is rebuilt
by forge.build_corpus, deterministic); checks every rendering against forge.doc_ids and every set's token count
against forge-results.json.  Usage: eval_export.py <model dir>   (see eval/README.md in the output)"""
import hashlib, json, os, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import forge  # noqa: E402

N_PROMPTS_DEFINE = 150   # "Define: <words>" prompts from chat-rendered WordNet test docs (general)
N_PROMPTS_OPENING = 200  # fortune openings from English fortune test docs (general)
MAX_SPLIT_BYTES = 1_000_000  # a split file larger than this is capped (first docs in SHA-1 order)


def rendering(kind, text):
    """The forge's document rendering (forge.doc_ids) as strings: (chat?, user prompt, assistant text)."""
    x = forge.h01("chat:" + text)
    if x < 0.5:
        return False, None, None
    if kind == "wordnet" and ":" in text:
        w, g = text.split(":", 1)
        return True, "Define: " + w.strip(), g.strip()
    return True, forge.CHAT_PROMPTS[int(x * 1000) % len(forge.CHAT_PROMPTS)], text


def rendered_string(kind, text):
    chat, prompt, ans = rendering(kind, text)
    if not chat:
        return "<|endoftext|>" + text
    return "<|endoftext|><|user|>" + prompt + "<|end|><|assistant|>" + ans + "<|end|>"


def sha(t):
    return hashlib.sha1(t.encode("utf-8")).hexdigest()


def line(obj):
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n"


def opening(text, max_words=6):
    """First line of a fortune cut to at most max_words words, or None when it does not make a prompt."""
    first = text.split("\n", 1)[0].strip()
    words = first.split()
    if len(words) < 3 or first.startswith(("--", "<", "#", "[", "(")) or not any(c.isalpha() for c in first):
        return None
    return " ".join(words[:max_words])


def main(argv=None):
    argv = list(sys.argv if argv is None else argv)
    d = os.path.abspath(argv[1])
    t0 = time.time()
    R = json.load(open(os.path.join(d, "forge-results.json"), encoding="utf-8"))
    tj = json.load(open(os.path.join(d, "tokenizer.json"), encoding="utf-8"))
    tok = forge.Tokenizer(tj["model"]["vocab"], [tuple(x.split(" ")) for x in tj["model"]["merges"]])
    splits = forge.build_corpus(R["smoke"])
    out = os.path.join(d, "eval")
    tmp = out + ".tmp"
    if os.path.exists(tmp):
        import shutil
        shutil.rmtree(tmp)
    os.makedirs(tmp)
    index = {"format": "forge-eval/1", "base_model": "demo", "smoke": R["smoke"], "sets": {}}
    for k, sp in splits.items():
        index["sets"][k] = {}
        for part in ("val", "test"):
            docs = sp[part]
            n_tok = 0
            lines, nbytes = [], 0
            for kind, text in docs:
                ids = forge.doc_ids(tok, kind, text)
                # the documented rule: the rendered string encoded with special tokens recognised
                assert tok.encode(rendered_string(kind, text)) == ids, (k, part, text[:60])
                chat, prompt, ans = rendering(kind, text)
                o = {"text": text, "chat": chat, "kind": kind, "n_tokens": len(ids)}
                if chat:
                    o["prompt"], o["response"] = prompt, ans
                lines.append(line(o))
                nbytes += len(lines[-1].encode("utf-8"))
                n_tok += len(ids)
            stream_tokens = n_tok + 1  # forge.stream appends one final <|endoftext|>
            # forge.stream shuffles the documents; the count does not depend on the order
            want = R["tokens"].get(k, {}).get(part)
            assert want is None or want == stream_tokens, (k, part, want, stream_tokens)
            capped = None
            if nbytes > MAX_SPLIT_BYTES:  # cap: keep the first docs in SHA-1 order of the text
                order = sorted(range(len(docs)), key=lambda i: sha(docs[i][1]))
                keep, nb = set(), 0
                for i in order:
                    b = len(lines[i].encode("utf-8"))
                    if nb + b > MAX_SPLIT_BYTES:
                        break
                    keep.add(i)
                    nb += b
                capped = {"docs_total": len(docs), "stream_tokens_total": stream_tokens}
                lines = [lines[i] for i in sorted(keep)]
            fn = f"{k}.{part}.jsonl"
            with open(os.path.join(tmp, fn), "w", encoding="utf-8") as f:
                f.writelines(lines)
            n_file_tok = sum(json.loads(x)["n_tokens"] for x in lines)
            e = {"file": fn, "docs": len(lines), "chat_docs": sum('"chat":true' in x for x in lines),
                 "tokens": n_file_tok, "forge_stream_tokens": stream_tokens if capped is None else None,
                 "forge_results_tokens": want}
            if capped:
                e["capped"] = capped
            index["sets"][k][part] = e
            forge.log(f"eval {fn}: {len(lines)} docs, {n_file_tok} tokens (forge stream {stream_tokens})")
    # reward-labelled splits, exactly as reward.py labels them
    lex = json.load(open(forge.AFINN_PATH))
    rw = {"val": [], "test": []}
    for sp in splits.values():
        for part in rw:
            for kind, t in sp[part]:
                if kind == "fortune":
                    s = forge.afinn_score(t, lex)
                    if s >= 2:
                        rw[part].append((t, 1))
                    elif s <= -2:
                        rw[part].append((t, 0))
    index["reward"] = {}
    for part, v in rw.items():
        fn = f"reward.{part}.jsonl"
        with open(os.path.join(tmp, fn), "w", encoding="utf-8") as f:
            for t, lab in v:
                f.write(line({"text": t, "label": lab}))
        st = R.get("reward_stats", {}).get(part)
        pos, neg = sum(l for _, l in v), sum(1 - l for _, l in v)
        assert st is None or list(st) == [pos, neg], (part, st, pos, neg)
        index["reward"][part] = {"file": fn, "docs": len(v), "positive": pos, "negative": neg,
                                 "tokens_truncated": sum(min(len(tok.encode(t, allow_special=False)), 255) + 1 for t, _ in v)}
    # held-out chat prompts
    test = splits["general"]["test"]
    defs, seen = [], set()
    for kind, t in sorted(test, key=lambda x: sha("prompt:" + x[1])):
        chat, prompt, _ = rendering(kind, t)
        if kind == "wordnet" and chat and prompt not in seen:
            seen.add(prompt)
            defs.append({"messages": [{"role": "user", "content": prompt}], "source": "define", "doc_sha1": sha(t)})
    defs = defs[:N_PROMPTS_DEFINE]
    opens = []
    for kind, t in sorted(test, key=lambda x: sha("prompt:" + x[1])):
        o = opening(t) if kind == "fortune" else None
        if o and o not in seen:
            seen.add(o)
            opens.append({"messages": [{"role": "user", "content": o}], "source": "opening", "doc_sha1": sha(t)})
    opens = opens[:N_PROMPTS_OPENING]
    with open(os.path.join(tmp, "prompts.test.jsonl"), "w", encoding="utf-8") as f:
        for p in defs + opens:
            f.write(line(p))
    index["prompts"] = {"file": "prompts.test.jsonl", "prompts": len(defs) + len(opens), "define": len(defs),
                        "opening": len(opens)}
    forge.dump_json(os.path.join(tmp, "index.json"), index)
    write_readme(tmp, index)
    if os.path.exists(out):
        import shutil
        shutil.rmtree(out)
    os.rename(tmp, out)
    forge.log(f"eval export -> {out} ({time.time() - t0:.0f}s)")
    return index


def write_readme(d, index):
    S = index["sets"]
    rows = []
    for k, v in S.items():
        rows.append(f"| {k} | {v['val']['docs']} ({v['val']['chat_docs']} chat) | {v['val']['tokens']} | "
                    f"{v['test']['docs']} ({v['test']['chat_docs']} chat) | {v['test']['tokens']} |")
    rwv, rwt = index["reward"]["val"], index["reward"]["test"]
    pr = index["prompts"]
    txt = f"""# Evaluation splits of the demo model

Written by `tools/forge/eval_export.py` from the files of `..` (`tokenizer.json`, `forge-results.json`) and the
Debian text packages (the corpus is rebuilt by `forge.build_corpus`, deterministic). Nothing here was seen by
the base model or the adapters in training: validation and test splits are chosen per document by SHA-1 of its
text (`forge.split_of`: `h01("split:" + text)` < 0.8 train, < 0.9 val, else test, where `h01(s)` = the first
12 hex digits of SHA-1(UTF-8 of s) as an integer / 2^48).

## Files

| file | what |
|---|---|
| `<set>.val.jsonl`, `<set>.test.jsonl` | one document per line, for each data set (`general` and the domains `german spanish italian portuguese polish startrek irc animals zippy`) |
| `reward.val.jsonl`, `reward.test.jsonl` | `{{"text", "label": 1 or 0}}`: the reward head's labelled validation/test documents |
| `prompts.test.jsonl` | {pr['prompts']} held-out chat prompts `{{"messages": [{{"role": "user", "content": …}}], "source", "doc_sha1"}}` |
| `index.json` | per file: documents, chat documents, token counts (machine-readable form of the tables below) |

## Document lines

```
{{"text": "<the document>", "chat": true|false, "kind": "fortune"|"wordnet"|"fortune-lang", "n_tokens": N,
 "prompt": "<user message>", "response": "<assistant message>"}}      (prompt/response only when chat is true)
```

`text` is the cleaned document (see the model card: CR removed, tabs → 4 spaces, …). `chat` says whether the
forge renders it as a chat exchange. `kind` is where it comes from (`wordnet`: a WordNet synset written as
`word, word: gloss; "example"`; `fortune`: an English fortune; `fortune-lang`: a German/Spanish/Italian/
Portuguese/Polish fortune). Lines are in corpus order (source file order), not shuffled.

### Rendering rule (how a line becomes token ids; `forge.doc_ids`)

Let `x = h01("chat:" + text)`.

- `x < 0.5` → **plain**: the string `<|endoftext|>` + text.
- otherwise **chat**: `<|endoftext|><|user|>` + prompt + `<|end|><|assistant|>` + response + `<|end|>` where
  - if `kind == "wordnet"` and text contains `:`: split at the first `:` into `w`, `g`; prompt = `"Define: " + w.strip()`,
    response = `g.strip()` (Python's `strip()`: leading/trailing whitespace);
  - else prompt = `["Tell me something.", "Say something.", "Tell me a fortune.", "Share a quote."][floor(x * 1000) mod 4]`,
    response = text.

`prompt` and `response` are given in the line, so a consumer need not recompute the hash. The ids are the
tokenizer's encoding of that string with the four special tokens recognised as added tokens (ids 0–3: `<|endoftext|>`
0, `<|user|>` 1, `<|assistant|>` 2, `<|end|>` 3) and nothing added: `tokenizer.json` encode of the whole string. (The
forge encodes the pieces separately with special-token matching off; `eval_export.py` asserts for every document
that this equals encoding the whole rendered string with special tokens recognised — no document contains a
special token's text.) `n_tokens` is the length of that id list, the leading `<|endoftext|>` included.

Evaluation (forge.eval_loss, the card's per-layer losses): the forge concatenates a split's documents in a
seeded random order (`forge.stream`, `numpy.random.RandomState(seed).permutation`, seed = 1234 + the set's index in
the order of the table below) and appends one final `<|endoftext|>`; it then scores the first `n` windows of 128+1
tokens (`n` = 64 for the card's per-layer general losses, 32 for adapter losses), predicting token i+1 from 0..i
inside each window. The total of a set's stream is Σ `n_tokens` + 1 = `forge_stream_tokens` in `index.json`, equal to
the count in `forge-results.json` (`tokens`), which the export asserts. A C# consumer that wants the forge's exact
windows must reproduce NumPy's permutation; one that evaluates per document (each line its own sequence, starting at
its `<|endoftext|>`) needs only the rule above.

## Sets (documents, tokens = Σ n_tokens)

| set | val docs | val tokens | test docs | test tokens |
|---|---|---|---|---|
""" + "\n".join(rows) + f"""

""" + ("Capped splits: " + ", ".join(f"`{k}.{p}`" for k, v in S.items() for p in v if v[p].get("capped")) + "." if any(
        v[p].get("capped") for v in S.values() for p in v) else f"No split exceeds {MAX_SPLIT_BYTES // 1_000_000} MB, so none is capped.") + f""" A split file over 1 MB would be
capped by keeping its documents whose lines fit in 1 MB taken in SHA-1 order of their text (then written in corpus
order), with `capped` (documents and stream tokens of the whole split) recorded in `index.json`.

## Reward-labelled splits

Exactly `reward.py`'s labels: every document of kind `fortune` (English fortunes: general, `startrek`, `irc`,
`zippy`; not the language fortunes, not WordNet) of the split, in the order general, then the domains as above,
scored with the AFINN-165 lexicon (`tools/forge/data/afinn-165.json`, `forge.afinn_score`: lower-cased words
`[a-z]+('[a-z]+)?`, three- and two-word entries matched first, sum of scores): score ≥ 2 → `label` 1, ≤ −2 → `label` 0,
others dropped. Validation: {rwv['docs']} documents ({rwv['positive']} positive, {rwv['negative']} negative); test:
{rwt['docs']} ({rwt['positive']} positive, {rwt['negative']} negative).

The reward head is evaluated on `<|endoftext|>` + the text encoded **plain** (never chat-rendered; special-token
matching off, which changes nothing here), **truncated to
the first 255 text tokens** (256 ids with the `<|endoftext|>`); the sequence reward is the head's output after
the last of those positions. AUC = Mann–Whitney over the documents (ties averaged).

## Chat prompts

`prompts.test.jsonl`: {pr['prompts']} prompts from the general test split (never trained on), each
`{{"messages": [{{"role": "user", "content": …}}], "source": …, "doc_sha1": <SHA-1 of the source document's text>}}`:

- {pr['define']} with `source` `define`: the user message of chat-rendered WordNet test documents (`Define: <words>`, the
  form the model was trained on), distinct, in the order of SHA-1("prompt:" + text), the first {N_PROMPTS_DEFINE};
- {pr['opening']} with `source` `opening`: the opening of an English fortune of the test split (its first line cut to at
  most 6 whitespace-separated words; lines with fewer than 3 words, or starting with `--`, `<`, `#`, `[`, `(`,
  or without a letter skipped), distinct, in the same order, the first {N_PROMPTS_OPENING}. (The model was trained with
  four fixed user messages for fortunes, so these are out of its chat distribution; they vary the start of the answer.)

Render a prompt with the chat template and the generation prompt: `<|endoftext|><|user|>` + content + `<|end|><|assistant|>`.
"""
    open(os.path.join(d, "README.md"), "w", encoding="utf-8").write(txt)


if __name__ == "__main__":
    main()

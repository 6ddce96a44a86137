#!/usr/bin/env python3
"""Cross-check of the engine's family fixtures against Hugging Face transformers itself.

For every checkpoint folder under fixtures/ (random weights, written by tools/Fixtures), loads it with
AutoModelForCausalLM in float64 (eager attention), runs the token ids of tokens.json

  * in one forward pass ("full"), and
  * one token at a time through the KV cache ("incremental"),

writes both as out/<name>.full.npy / out/<name>.incremental.npy ([T, V] float64), and, where
engine_logits/<name>.json exists (the engine's prefill logits for the same ids, written by
tools/Generate --logits-json), prints and records the largest absolute difference of each against the engine.

Expected: every difference <= 1e-4, except tiny-llama-dynamic's "full" pass beyond its original 32 positions:
transformers rotates a whole forward pass with the frequencies of its longest position, the engine rotates position p
with those of a sequence of p + 1 tokens (what transformers does when fed one token at a time: the "incremental" column).

Usage (transformers 5.x, torch; no network needed):  python3 hf_check.py [--out out]
Self-contained: standard library + numpy + torch + transformers.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
from transformers import AutoModelForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))


def load(folder):
    kwargs = dict(attn_implementation="eager")
    try:
        return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float64, **kwargs)
    except TypeError:  # transformers 4.x spells it torch_dtype
        return AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float64, **kwargs)


@torch.inference_mode()
def run(model, ids):
    x = torch.tensor([ids], dtype=torch.long)
    # Incremental first, from the model's initial state (dynamic NTK keeps state between calls).
    past, rows = None, []
    for t, token in enumerate(ids):
        out = model(input_ids=x[:, t:t + 1], past_key_values=past, use_cache=True,
                    position_ids=torch.tensor([[t]]), cache_position=torch.tensor([t]))
        past = out.past_key_values
        rows.append(out.logits[0, -1].double().numpy())
    full = model(input_ids=x, use_cache=False).logits[0].double().numpy()
    return full, np.stack(rows)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(HERE, "out"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    ids = json.load(open(os.path.join(HERE, "tokens.json")))["tokens"]
    fixtures = os.path.join(HERE, "fixtures")
    summary = {}
    for name in sorted(os.listdir(fixtures)):
        folder = os.path.join(fixtures, name)
        if not os.path.isfile(os.path.join(folder, "config.json")):
            continue
        model = load(folder).eval()
        full, incremental = run(model, ids)
        np.save(os.path.join(args.out, name + ".full.npy"), full)
        np.save(os.path.join(args.out, name + ".incremental.npy"), incremental)
        row = {"tokens": len(ids), "vocab": int(full.shape[1])}
        engine_file = os.path.join(HERE, "engine_logits", name + ".json")
        if os.path.isfile(engine_file):
            engine = np.array(json.load(open(engine_file))["logits"], dtype=np.float64)
            row["max_abs_diff_full"] = float(np.abs(engine - full).max())
            row["max_abs_diff_incremental"] = float(np.abs(engine - incremental).max())
            row["first_position_over_1e-4_full"] = int(np.argmax(np.abs(engine - full).max(axis=1) > 1e-4)) \
                if (np.abs(engine - full).max(axis=1) > 1e-4).any() else None
        summary[name] = row
        print(f"{name:22s} " + " ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump({"transformers": __import__("transformers").__version__, "torch": torch.__version__, "results": summary}, f, indent=2)
    print(f"wrote {args.out}/summary.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())

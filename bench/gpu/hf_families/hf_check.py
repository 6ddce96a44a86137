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

Usage (transformers 5.x, torch; no network needed):  python3 hf_check.py [--out out] [--engine-dir DIR]
(--engine-dir: another set of engine logits, e.g. the CUDA node's fp16 blocks from bench/gpu/run.sh; the summary also
gives each difference relative to the largest |logit| of its position, the measure for fp16's ≤ 1e-2.)
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
    """Loads folder; transformers 5's strict config dataclasses refuse an integer where a float is typed (e.g. a
    soft-cap of 5), so such fields are retried as floats from a copy of the config (the values are unchanged)."""
    import re
    import shutil
    import tempfile
    kwargs = dict(attn_implementation="eager")
    work = folder
    for _ in range(20):
        try:
            try:
                return AutoModelForCausalLM.from_pretrained(work, dtype=torch.float64, **kwargs)
            except TypeError:  # transformers 4.x spells it torch_dtype
                return AutoModelForCausalLM.from_pretrained(work, torch_dtype=torch.float64, **kwargs)
        except Exception as e:  # noqa: BLE001
            m = re.search(r"field '([A-Za-z_0-9]+)'.*expected float, got int", str(e), re.S)
            pad = "Padding_idx must be within num_embeddings" in str(e)
            if not m and not pad:
                raise
            if work == folder:
                work = tempfile.mkdtemp()
                for f in os.listdir(folder):
                    os.symlink(os.path.join(folder, f), os.path.join(work, f))
                os.remove(os.path.join(work, "config.json"))
                shutil.copy(os.path.join(folder, "config.json"), os.path.join(work, "config.json"))
            cfg = json.load(open(os.path.join(work, "config.json")))
            if pad:
                # A random-weight fixture keeps the real model's pad id (e.g. Phi-3's 32000) with a small vocabulary;
                # the pad id changes no logits, so it is dropped for loading.
                cfg["pad_token_id"] = None
                json.dump(cfg, open(os.path.join(work, "config.json"), "w"))
                print(f"  ({os.path.basename(folder)}: pad_token_id outside the fixture's vocabulary dropped)", flush=True)
                continue
            field = m.group(1)

            def fix(d):
                if isinstance(d, dict):
                    for k, v in d.items():
                        if k == field and isinstance(v, int) and not isinstance(v, bool):
                            d[k] = float(v)
                        else:
                            fix(v)
            fix(cfg)
            json.dump(cfg, open(os.path.join(work, "config.json"), "w"))
            print(f"  ({os.path.basename(folder)}: {field} read as a float)", flush=True)
    raise RuntimeError("config did not load")


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
    ap.add_argument("--engine-dir", default=os.path.join(HERE, "engine_logits"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    ids = json.load(open(os.path.join(HERE, "tokens.json")))["tokens"]
    fixtures = os.path.join(HERE, "fixtures")
    summary = {}
    for name in sorted(os.listdir(fixtures)):
        folder = os.path.join(fixtures, name)
        if not os.path.isfile(os.path.join(folder, "config.json")):
            continue
        try:
            model = load(folder).eval()
            full, incremental = run(model, ids)
        except Exception as e:  # noqa: BLE001 - one fixture's failure is reported, the others still run
            summary[name] = {"error": f"{type(e).__name__}: {e}"[:500]}
            print(f"{name:22s} ERROR {summary[name]['error']}", flush=True)
            continue
        np.save(os.path.join(args.out, name + ".full.npy"), full)
        np.save(os.path.join(args.out, name + ".incremental.npy"), incremental)
        row = {"tokens": len(ids), "vocab": int(full.shape[1])}
        engine_file = os.path.join(args.engine_dir, name + ".json")
        if os.path.isfile(engine_file):
            engine = np.array(json.load(open(engine_file))["logits"], dtype=np.float64)
            row["max_abs_diff_full"] = float(np.abs(engine - full).max())
            row["max_abs_diff_incremental"] = float(np.abs(engine - incremental).max())
            scale = np.abs(incremental).max(axis=1, keepdims=True)
            row["max_rel_diff_incremental"] = float((np.abs(engine - incremental) / scale).max())
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

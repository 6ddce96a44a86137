#!/usr/bin/env python3
"""transformers eager decode throughput on the GPU (issue 17 part 4's baseline): a checkpoint folder loaded with
AutoModelForCausalLM in fp16 on cuda, a 16-token prompt per row, then `steps` greedy decode steps through the KV
cache, at each batch size; tok/s = batch * steps / time of the decode steps (the prefill excluded), median of reps.
Usage: python3 hf_decode.py CHECKPOINT_DIR [--batches 1,8,32] [--steps 64] [--reps 3] > out.json"""
import argparse
import json
import statistics
import time

import torch
from transformers import AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.float16 if device == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(args.folder, dtype=dtype, attn_implementation="eager").to(device).eval()
    vocab = model.config.vocab_size
    results = []
    for batch in [int(b) for b in args.batches.split(",")]:
        times = []
        for rep in range(args.reps + 1):
            ids = torch.randint(0, vocab, (batch, 16), device=device, generator=None)
            with torch.inference_mode():
                out = model(input_ids=ids, use_cache=True)
                past, token = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
                if device == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                for _ in range(args.steps):
                    out = model(input_ids=token, past_key_values=past, use_cache=True)
                    past, token = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
                if device == "cuda":
                    torch.cuda.synchronize()
                if rep > 0:  # the first is a warm-up
                    times.append(time.perf_counter() - start)
        median = statistics.median(times)
        results.append({"batch": batch, "tok_per_s": batch * args.steps / median, "step_ms": 1000 * median / args.steps})
    print(json.dumps({"device": device, "dtype": str(dtype), "torch": torch.__version__,
                      "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None, "results": results}, indent=2))


if __name__ == "__main__":
    main()

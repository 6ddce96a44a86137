#!/usr/bin/env python3
"""PyTorch eager baseline for the decode benchmark: the same checkpoint (Hugging Face layout, safetensors), the same
shapes, a KV cache, no graph compilation. Llama-family checkpoints: Llama 3.x rotary scaling and Qwen3's q/k norms
as transformers computes them (the llama3-1b-like and qwen3-small-like shapes). Runs as a server: one request per stdin line "batch steps prompt_len",
one JSON line per answer, so the C# harness can alternate A B A B without reloading weights.
Run with Debian's /usr/bin/python3 (python3-torch, libopenblas0-pthread)."""
import json, math, struct, sys, time
import numpy as np
import torch
import torch.nn.functional as F


def load_safetensors(path):
    # Memory-mapped and copied tensor by tensor: a 5 GB checkpoint costs 5 GB, not twice that.
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        dt = {"F32": np.float32, "F16": np.float16}[info["dtype"]]
        out[name] = torch.from_numpy(np.frombuffer(data[b:e], dtype=dt).reshape(info["shape"]).astype(np.float32))
    return out


class Model:
    def __init__(self, folder, max_ctx):
        self.cfg = json.load(open(folder + "/config.json"))
        self.w = load_safetensors(folder + "/model.safetensors")
        self.gpt2 = self.cfg.get("model_type") == "gpt2"
        c = self.cfg
        if self.gpt2:
            self.d, self.L, self.H = c["n_embd"], c["n_layer"], c["n_head"]
            self.KV, self.hd = self.H, self.d // self.H
        else:
            self.d, self.L, self.H = c["hidden_size"], c["num_hidden_layers"], c["num_attention_heads"]
            self.KV = c.get("num_key_value_heads", self.H)
            self.hd = c.get("head_dim", self.d // self.H)
            self.eps = c.get("rms_norm_eps", 1e-6)
            inv = 1.0 / (c.get("rope_theta", 10000.0) ** (torch.arange(0, self.hd, 2, dtype=torch.float32) / self.hd))
            inv = self.scaled_inv_freq(inv, c.get("rope_scaling") or {})
            # Qwen3: an RMSNorm over each head of q and k before rotary.
            self.qk_norm = c.get("model_type") == "qwen3"
            ang = torch.arange(max_ctx, dtype=torch.float32)[:, None] * inv[None, :]
            emb = torch.cat([ang, ang], dim=-1)
            self.cos, self.sin = emb.cos(), emb.sin()
            # nn.Linear computes x @ W.T; keep the stored [out, in] orientation, as transformers does.
            self.head = self.w.get("lm_head.weight", self.w["model.embed_tokens.weight"])
        self.max_ctx = max_ctx

    @staticmethod
    def scaled_inv_freq(inv, scaling):
        """Llama 3.1/3.2 frequency smoothing (transformers' _compute_llama3_parameters); other types are not benchmarked."""
        kind = scaling.get("rope_type", scaling.get("type", "default"))
        if kind == "default":
            return inv
        if kind != "llama3":
            raise SystemExit(f"torch_decode.py: rope_scaling type {kind!r} is not implemented in the baseline")
        factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
        old = scaling["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv
        scaled = torch.where(wavelen > old / low, inv / factor, inv)
        smooth = (old / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < old / high) * ~(wavelen > old / low)
        return torch.where(medium, smoothed, scaled)

    def rms(self, x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * w

    def rope(self, x, pos):  # x [B, h, S, hd], pos [B, S]
        cos, sin = self.cos[pos][:, None], self.sin[pos][:, None]
        half = self.hd // 2
        rot = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        return x * cos + rot * sin

    @torch.inference_mode()
    def forward(self, ids, pos, cache, lengths):
        """ids [B, S], pos [B, S]; cache: list of (K, V) [B, KV, max_ctx, hd]; lengths: past length per row (equal here)."""
        w, B, S = self.w, ids.shape[0], ids.shape[1]
        past = lengths
        if self.gpt2:
            x = w["transformer.wte.weight"][ids] + w["transformer.wpe.weight"][pos]
        else:
            x = w["model.embed_tokens.weight"][ids]
        for l in range(self.L):
            K, V = cache[l]
            if self.gpt2:
                p = f"transformer.h.{l}."
                h = F.layer_norm(x, (self.d,), w[p + "ln_1.weight"], w[p + "ln_1.bias"], 1e-5)
                qkv = torch.addmm(w[p + "attn.c_attn.bias"], h.view(-1, self.d), w[p + "attn.c_attn.weight"]).view(B, S, 3, self.H, self.hd)
                q, k, v = qkv.unbind(2)
                q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
            else:
                p = f"model.layers.{l}."
                h = self.rms(x, w[p + "input_layernorm.weight"])
                q = F.linear(h, w[p + "self_attn.q_proj.weight"]).view(B, S, self.H, self.hd)
                k = F.linear(h, w[p + "self_attn.k_proj.weight"]).view(B, S, self.KV, self.hd)
                if self.qk_norm:
                    q, k = self.rms(q, w[p + "self_attn.q_norm.weight"]), self.rms(k, w[p + "self_attn.k_norm.weight"])
                q, k = q.transpose(1, 2), k.transpose(1, 2)
                v = F.linear(h, w[p + "self_attn.v_proj.weight"]).view(B, S, self.KV, self.hd).transpose(1, 2)
                q, k = self.rope(q, pos), self.rope(k, pos)
            K[:, :, past:past + S] = k
            V[:, :, past:past + S] = v
            kk, vv = K[:, :, :past + S], V[:, :, :past + S]
            if self.KV != self.H:
                kk = kk.repeat_interleave(self.H // self.KV, dim=1)
                vv = vv.repeat_interleave(self.H // self.KV, dim=1)
            # torch 1.13 (Debian 12) has no scaled_dot_product_attention: the textbook form.
            scores = (q @ kk.transpose(-1, -2)) * (1.0 / math.sqrt(self.hd))
            if S > 1:
                mask = torch.ones(S, past + S, dtype=torch.bool).tril(past)
                scores = scores.masked_fill(~mask, float("-inf"))
            a = torch.softmax(scores, dim=-1) @ vv
            a = a.transpose(1, 2).reshape(B, S, self.H * self.hd)
            if self.gpt2:
                x = x + torch.addmm(w[p + "attn.c_proj.bias"], a.view(-1, self.d), w[p + "attn.c_proj.weight"]).view(B, S, self.d)
                h = F.layer_norm(x, (self.d,), w[p + "ln_2.weight"], w[p + "ln_2.bias"], 1e-5)
                h = F.gelu(torch.addmm(w[p + "mlp.c_fc.bias"], h.view(-1, self.d), w[p + "mlp.c_fc.weight"]), approximate="tanh")
                x = x + torch.addmm(w[p + "mlp.c_proj.bias"], h, w[p + "mlp.c_proj.weight"]).view(B, S, self.d)
            else:
                x = x + F.linear(a, w[p + "self_attn.o_proj.weight"])
                h = self.rms(x, w[p + "post_attention_layernorm.weight"])
                g = F.silu(F.linear(h, w[p + "mlp.gate_proj.weight"])) * F.linear(h, w[p + "mlp.up_proj.weight"])
                x = x + F.linear(g, w[p + "mlp.down_proj.weight"])
        x = x[:, -1]
        if self.gpt2:
            x = F.layer_norm(x, (self.d,), w["transformer.ln_f.weight"], w["transformer.ln_f.bias"], 1e-5)
            return x @ w["transformer.wte.weight"].t()
        x = self.rms(x, w["model.norm.weight"])
        return F.linear(x, self.head)

    def decode_run(self, batch, steps, prompt_len):
        cache = [(torch.zeros(batch, self.KV, self.max_ctx, self.hd), torch.zeros(batch, self.KV, self.max_ctx, self.hd)) for _ in range(self.L)]
        ids = torch.randint(0, 255, (batch, prompt_len))
        pos = torch.arange(prompt_len)[None].expand(batch, -1)
        logits = self.forward(ids, pos, cache, 0)
        length = prompt_len
        t0 = time.perf_counter()
        for _ in range(steps):
            nxt = logits.argmax(-1, keepdim=True)
            logits = self.forward(nxt, torch.full((batch, 1), length), cache, length)
            length += 1
        return time.perf_counter() - t0


def main():
    folder, max_ctx, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(threads)
    m = Model(folder, max_ctx)
    torch.ones(64, 64) @ torch.ones(64, 64)  # loads the BLAS library
    blas = sorted({line.split()[-1] for line in open("/proc/self/maps") if "blas" in line.lower() and ".so" in line})
    core = None
    try:
        import ctypes
        lib = ctypes.CDLL(next(b for b in blas if "openblas" in b))
        lib.openblas_get_corename.restype = ctypes.c_char_p
        core = lib.openblas_get_corename().decode()
    except Exception:  # not OpenBLAS, or no symbol
        pass
    a, b = torch.randn(32, 768), torch.randn(768, 2304)
    blas_err = float((a @ b - (a.double() @ b.double())).abs().max())  # the kernel OpenBLAS picked must be right
    print(json.dumps({"ready": True, "torch": torch.__version__, "threads": torch.get_num_threads(), "blas": blas,
                      "openblas_core": core, "blas_max_abs_err": blas_err}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        batch, steps, prompt = map(int, line.split())
        seconds = m.decode_run(batch, steps, prompt)
        print(json.dumps({"batch": batch, "steps": steps, "seconds": seconds}), flush=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""An independent forward pass of HF Llama / Gemma decoders, for spar's tests.

Written from the transformers modelling equations (eager attention), in
plain torch, sharing no code with spar:

  hf_forward.py MODEL_DIR INPUT.json

INPUT.json: {"input_ids": [[...], ...], "attention_mask": [[...], ...]}
(any padding side), and "columns": the vocabulary ids to print. Prints
JSON {"logits": [N][T][len(columns)]} in float64, computed in float32.
"""
import json
import math
import os
import struct
import sys

import torch

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def load_weights(folder):
    with open(os.path.join(folder, "model.safetensors"), "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    header.pop("__metadata__", None)
    data = blob[8 + n:]
    out = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        t = torch.frombuffer(bytearray(data[begin:end]), dtype=DTYPES[info["dtype"]])
        out[name] = t.reshape(info["shape"]).to(torch.float32)
    return out


def rope_inv_freq(cfg, head_dim):
    base = cfg.get("rope_theta", 10000.0)
    inv = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.int64).double() / head_dim))
    scaling = cfg.get("rope_scaling") or {}
    if scaling.get("rope_type", scaling.get("type")) == "llama3":
        factor = scaling["factor"]
        low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
        old = scaling["original_max_position_embeddings"]
        out = []
        for f in inv.tolist():
            wavelen = 2 * math.pi / f
            if wavelen < old / high:
                out.append(f)
            elif wavelen > old / low:
                out.append(f / factor)
            else:
                s = (old / wavelen - low) / (high - low)
                out.append((1 - s) * f / factor + s * f)
        inv = torch.tensor(out, dtype=torch.float64)
    return inv.float()


def rms_norm(x, w, eps, gemma):
    var = x.pow(2).mean(-1, keepdim=True)
    y = x * torch.rsqrt(var + eps)
    return y * (1 + w) if gemma else y * w


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def forward(folder, ids, mask):
    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f)
    gemma = cfg["model_type"] == "gemma"
    W = load_weights(folder)
    H = cfg["hidden_size"]
    nh = cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads", nh)
    hd = cfg.get("head_dim", H // nh)
    eps = cfg["rms_norm_eps"]
    N, T = ids.shape
    x = W["model.embed_tokens.weight"][ids]
    if gemma:
        x = x * torch.tensor(H ** 0.5, dtype=x.dtype)
    pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
    freqs = pos[..., None].float() * rope_inv_freq(cfg, hd)[None, None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos()[:, None], emb.sin()[:, None]
    allowed = torch.tril(torch.ones(T, T, dtype=torch.bool))[None, None] & mask.bool()[:, None, None, :]
    bias = torch.zeros(N, 1, T, T).masked_fill(~allowed, torch.finfo(torch.float32).min)
    act = cfg.get("hidden_activation") or cfg.get("hidden_act", "silu")
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms_norm(x, W[p + "input_layernorm.weight"], eps, gemma)
        q = (h @ W[p + "self_attn.q_proj.weight"].T).view(N, T, nh, hd).transpose(1, 2)
        k = (h @ W[p + "self_attn.k_proj.weight"].T).view(N, T, nkv, hd).transpose(1, 2)
        v = (h @ W[p + "self_attn.v_proj.weight"].T).view(N, T, nkv, hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(nh // nkv, dim=1)
        v = v.repeat_interleave(nh // nkv, dim=1)
        a = (q @ k.transpose(-1, -2)) / math.sqrt(hd) + bias
        a = torch.softmax(a, dim=-1) @ v
        x = x + a.transpose(1, 2).reshape(N, T, nh * hd) @ W[p + "self_attn.o_proj.weight"].T
        h = rms_norm(x, W[p + "post_attention_layernorm.weight"], eps, gemma)
        g = h @ W[p + "mlp.gate_proj.weight"].T
        if act == "silu":
            g = torch.nn.functional.silu(g)
        elif act == "gelu_pytorch_tanh":
            g = torch.nn.functional.gelu(g, approximate="tanh")
        else:
            g = torch.nn.functional.gelu(g)
        x = x + (g * (h @ W[p + "mlp.up_proj.weight"].T)) @ W[p + "mlp.down_proj.weight"].T
    x = rms_norm(x, W["model.norm.weight"], eps, gemma)
    head = W.get("lm_head.weight", W["model.embed_tokens.weight"])
    if cfg.get("tie_word_embeddings", gemma):
        head = W["model.embed_tokens.weight"]
    return x @ head.T


def main():
    folder, input_path = sys.argv[1], sys.argv[2]
    with open(input_path) as f:
        spec = json.load(f)
    ids = torch.tensor(spec["input_ids"], dtype=torch.long)
    mask = torch.tensor(spec["attention_mask"], dtype=torch.long)
    with torch.no_grad():
        logits = forward(folder, ids, mask)[..., torch.tensor(spec["columns"], dtype=torch.long)]
    print(json.dumps({"logits": logits.double().tolist()}))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Random-weight checkpoints with the exact shapes of a released Gemma model, for speed measurements.

Random weights give meaningless text but true timings: every matrix has the real shape and storage type.
Writes, under OUT/<shape>/:
  hf-bf16/       config.json + sharded bf16 safetensors (+ index), as transformers lays out a checkpoint
  <shape>-q8_0.gguf, <shape>-q4_0.gguf   GGUF files llama.cpp and gemma-rs both load (norms F32; the
                 tokenizer metadata is the default model's, cut to this model's vocabulary, so llama.cpp loads it)

RecurrentGemma shapes (recurrentgemma-2b, -9b), PaliGemma ones (paligemma-3b-pt-224, paligemma2-3b-pt-224; --image-size
448 or 896 for the larger inputs) and Gemma 3 with its vision tower (gemma-3-4b: SigLIP-So400m at 896 px, the
4 x 4 pooling projector, the 4B text model) are written as hf-bf16 only (under the Hub's tensor names for the
multimodal ones: `vision_tower.vision_model.*`, `multi_modal_projector.*`, `language_model.model.*`).

Usage (needs numpy, safetensors and the `gguf` package, e.g. the venv tools/fixtures uses):
    python scripts/make_random_checkpoints.py --shape gemma-2b --out /tmp/gemma-random [--formats bf16,q8_0,q4_0]
Shapes come from crates/gemma/src/model/presets.json (official hyper-parameters).
"""
import argparse, json, os, pathlib, sys
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent

def tensors(cfg, rng):
    """(HF name, GGUF name, shape, is_norm) for every tensor, in file order."""
    if cfg["model_type"] == "recurrent_gemma":
        yield from recurrent_tensors(cfg)
        return
    if cfg["model_type"] in ("paligemma", "gemma3"):
        yield from multimodal_tensors(cfg)
        return
    d, f, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    hd, nh, nkv, V = cfg["head_dim"], cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["vocab_size"]
    yield "model.embed_tokens.weight", "token_embd.weight", (V, d), False
    for i in range(L):
        p, g = f"model.layers.{i}.", f"blk.{i}."
        yield p + "input_layernorm.weight", g + "attn_norm.weight", (d,), True
        yield p + "self_attn.q_proj.weight", g + "attn_q.weight", (nh * hd, d), False
        yield p + "self_attn.k_proj.weight", g + "attn_k.weight", (nkv * hd, d), False
        yield p + "self_attn.v_proj.weight", g + "attn_v.weight", (nkv * hd, d), False
        yield p + "self_attn.o_proj.weight", g + "attn_output.weight", (d, nh * hd), False
        if cfg["model_type"] == "gemma3_text":
            yield p + "self_attn.q_norm.weight", g + "attn_q_norm.weight", (hd,), True
            yield p + "self_attn.k_norm.weight", g + "attn_k_norm.weight", (hd,), True
            yield p + "post_attention_layernorm.weight", g + "post_attention_norm.weight", (d,), True
            yield p + "pre_feedforward_layernorm.weight", g + "ffn_norm.weight", (d,), True
            yield p + "post_feedforward_layernorm.weight", g + "post_ffw_norm.weight", (d,), True
        else:
            yield p + "post_attention_layernorm.weight", g + "ffn_norm.weight", (d,), True
        yield p + "mlp.gate_proj.weight", g + "ffn_gate.weight", (f, d), False
        yield p + "mlp.up_proj.weight", g + "ffn_up.weight", (f, d), False
        yield p + "mlp.down_proj.weight", g + "ffn_down.weight", (d, f), False
    yield "model.norm.weight", "output_norm.weight", (d,), True

def recurrent_tensors(cfg):
    """RecurrentGemma (Griffin) tensors under transformers' names (no GGUF: no engine reads one). Blocks follow
    `block_types`; the MLP is `intermediate_size // 2` wide; the RG-LRU gates are block-diagonal, one
    [width/heads, width/heads] block per head."""
    d, L, V, w = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"], cfg["lru_width"]
    hd, nh, nkv, f = cfg["head_dim"], cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["intermediate_size"] // 2
    bw = w // nh
    yield "model.embed_tokens.weight", None, (V, d), False
    for i in range(L):
        p = f"model.layers.{i}."
        yield p + "temporal_pre_norm.weight", None, (d,), True
        if cfg["block_types"][i % len(cfg["block_types"])] == "recurrent":
            t = p + "temporal_block."
            yield t + "linear_y.weight", None, (w, d), False
            yield t + "linear_y.bias", None, (w,), True
            yield t + "linear_x.weight", None, (w, d), False
            yield t + "linear_x.bias", None, (w,), True
            yield t + "linear_out.weight", None, (d, w), False
            yield t + "linear_out.bias", None, (d,), True
            yield t + "conv_1d.weight", None, (w, 1, cfg["conv1d_width"]), False
            yield t + "conv_1d.bias", None, (w,), True
            yield t + "rg_lru.input_gate_weight", None, (nh, bw, bw), False
            yield t + "rg_lru.input_gate_bias", None, (nh, bw), True
            yield t + "rg_lru.recurrent_gate_weight", None, (nh, bw, bw), False
            yield t + "rg_lru.recurrent_gate_bias", None, (nh, bw), True
            yield t + "rg_lru.recurrent_param", None, (w,), True
        else:
            t = p + "temporal_block."
            yield t + "q_proj.weight", None, (nh * hd, d), False
            yield t + "k_proj.weight", None, (nkv * hd, d), False
            yield t + "v_proj.weight", None, (nkv * hd, d), False
            yield t + "o_proj.weight", None, (d, nh * hd), False
            yield t + "o_proj.bias", None, (d,), True
        yield p + "channel_pre_norm.weight", None, (d,), True
        m = p + "mlp_block."
        yield m + "gate_proj.weight", None, (f, d), False
        yield m + "gate_proj.bias", None, (f,), True
        yield m + "up_proj.weight", None, (f, d), False
        yield m + "up_proj.bias", None, (f,), True
        yield m + "down_proj.weight", None, (d, f), False
        yield m + "down_proj.bias", None, (d,), True
    yield "model.final_norm.weight", None, (d,), True

def multimodal_tensors(cfg):
    """PaliGemma and Gemma 3 under the Hub checkpoints' names: the SigLIP tower (`vision_tower.vision_model.*`),
    the projector (PaliGemma: `multi_modal_projector.linear.*`; Gemma 3: `mm_soft_emb_norm` and
    `mm_input_projection_weight`, (vision d_model, text d_model)) and the text model (`language_model.model.*`)."""
    v, t = cfg["vision_config"], cfg["text_config"]
    d, f, p, n = v["hidden_size"], v["intermediate_size"], v["patch_size"], (v["image_size"] // v["patch_size"]) ** 2
    e = "vision_tower.vision_model."
    yield e + "embeddings.patch_embedding.weight", None, (d, 3, p, p), False
    yield e + "embeddings.patch_embedding.bias", None, (d,), True
    yield e + "embeddings.position_embedding.weight", None, (n, d), False
    for i in range(v["num_hidden_layers"]):
        l = f"{e}encoder.layers.{i}."
        for ln in ("layer_norm1", "layer_norm2"):
            yield l + ln + ".weight", None, (d,), True
            yield l + ln + ".bias", None, (d,), True
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            yield l + f"self_attn.{proj}.weight", None, (d, d), False
            yield l + f"self_attn.{proj}.bias", None, (d,), True
        yield l + "mlp.fc1.weight", None, (f, d), False
        yield l + "mlp.fc1.bias", None, (f,), True
        yield l + "mlp.fc2.weight", None, (d, f), False
        yield l + "mlp.fc2.bias", None, (d,), True
    yield e + "post_layernorm.weight", None, (d,), True
    yield e + "post_layernorm.bias", None, (d,), True
    if cfg["model_type"] == "gemma3":
        yield "multi_modal_projector.mm_soft_emb_norm.weight", None, (d,), True
        yield "multi_modal_projector.mm_input_projection_weight", None, (d, t["hidden_size"]), False
    else:
        yield "multi_modal_projector.linear.weight", None, (t["hidden_size"], d), False
        yield "multi_modal_projector.linear.bias", None, (t["hidden_size"],), True
    gemma2 = t["model_type"] == "gemma2"
    for hf, _, shape, norm in tensors(t, None):
        yield "language_model." + hf, None, shape, norm
        if gemma2 and hf.endswith("post_attention_layernorm.weight"):
            base = hf[: -len("post_attention_layernorm.weight")]
            yield "language_model." + base + "pre_feedforward_layernorm.weight", None, shape, True
            yield "language_model." + base + "post_feedforward_layernorm.weight", None, shape, True

def random(rng, shape, norm):
    x = rng.standard_normal(size=shape, dtype=np.float32)
    x *= 0.1 if norm else 0.02
    return x

def bf16_bytes(x):
    u = x.view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)  # round to nearest even

def save_bf16_safetensors(tensors, path):
    """Write {name: uint16 array of bf16 bits} as a safetensors file with dtype BF16."""
    header, offset = {}, 0
    for name, a in tensors.items():
        header[name] = {"dtype": "BF16", "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for a in tensors.values():
            f.write(a.tobytes())

def write_hf(cfg, out, seed):
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shard, shard_bytes, n, weight_map = {}, 0, 0, {}
    def flush():
        nonlocal shard, shard_bytes, n
        if shard:
            n += 1
            name = f"model-{n:05d}.safetensors"
            save_bf16_safetensors(shard, out / name)
            for k in shard:
                weight_map[k] = name
            shard, shard_bytes = {}, 0
    for hf, _, shape, norm in tensors(cfg, rng):
        x = random(rng, shape, norm)
        shard[hf] = bf16_bytes(x)
        shard_bytes += x.size * 2
        if shard_bytes > 2 << 30:
            flush()
    flush()
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}, indent=1))
    c = dict(cfg)
    c["torch_dtype"] = "bfloat16"
    (out / "config.json").write_text(json.dumps(c, indent=1))

def write_gguf(cfg, path, qtype, seed, tok_source):
    import gguf
    from gguf import GGMLQuantizationType as T
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(str(path), "gemma")
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_key_length(cfg["head_dim"])
    w.add_value_length(cfg["head_dim"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_freq_base(cfg.get("rope_theta", 10000.0))
    w.add_file_type({"q8_0": 7, "q4_0": 2}[qtype])
    # Tokenizer: the default model's vocabulary cut to this vocabulary size (llama.cpp needs one to load).
    r = gguf.GGUFReader(str(tok_source))
    V = cfg["vocab_size"]
    fields = r.fields
    def arr(key):
        f = fields[key]
        return [f.parts[i] for i in f.data]
    tokens = [bytes(p).decode("utf-8") for p in arr("tokenizer.ggml.tokens")][:V]
    scores = [float(p[0]) for p in arr("tokenizer.ggml.scores")][:V]
    types = [int(p[0]) for p in arr("tokenizer.ggml.token_type")][:V]
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(2)
    w.add_eos_token_id(1)
    w.add_pad_token_id(0)
    w.add_unk_token_id(3)
    q = {"q8_0": T.Q8_0, "q4_0": T.Q4_0}[qtype]
    for _, name, shape, norm in tensors(cfg, rng):
        x = random(rng, shape, norm)
        if norm:
            w.add_tensor(name, (1.0 + x).astype(np.float32))
        else:
            data = gguf.quants.quantize(x, q)
            w.add_tensor(name, data, raw_shape=data.shape, raw_dtype=q)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file(progress=False)
    w.close()

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="gemma-2b", choices=["gemma-2b", "gemma-7b", "recurrentgemma-2b", "recurrentgemma-9b", "paligemma-3b-pt-224", "paligemma2-3b-pt-224", "gemma-3-4b"],
                    help="a model of crates/gemma/src/model/presets.json; RecurrentGemma, PaliGemma and Gemma 3 (multimodal) shapes are written as bf16 only")
    ap.add_argument("--image-size", type=int, help="PaliGemma: the SigLIP input size (224, 448 or 896; the position embedding grows with it)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--formats", default="bf16,q8_0,q4_0")
    ap.add_argument("--tokenizer-from", default=os.path.expanduser("~/.cache/gemma-rs/gemma-3-270m-q4_k_m.gguf"))
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    cfg = json.loads((ROOT / "crates/gemma/src/model/presets.json").read_text())["models"][a.shape]
    cfg = {k: v for k, v in cfg.items()}
    out = pathlib.Path(a.out) / a.shape
    formats = a.formats.split(",")
    if cfg["model_type"] in ("recurrent_gemma", "paligemma", "gemma3") and formats != ["bf16"]:
        print(f"{a.shape}: only bf16 safetensors (gemma-rs reads no GGUF of this model)", flush=True)
        formats = ["bf16"]
    if a.image_size:
        if cfg["model_type"] != "paligemma":
            sys.exit("--image-size is for PaliGemma shapes")
        cfg["vision_config"] = dict(cfg["vision_config"], image_size=a.image_size)
        n = (a.image_size // cfg["vision_config"]["patch_size"]) ** 2
        cfg["vision_config"]["num_image_tokens"] = n
        cfg["text_config"] = dict(cfg["text_config"], num_image_tokens=n)
        out = out.parent / f"{a.shape.replace('-224', '')}-{a.image_size}"
    for fmt in formats:
        if fmt == "bf16":
            write_hf(cfg, out / "hf-bf16", a.seed)
        else:
            write_gguf(cfg, out / f"{a.shape}-{fmt}.gguf", fmt, a.seed, a.tokenizer_from)
        print(f"wrote {fmt} for {a.shape} under {out}", flush=True)

if __name__ == "__main__":
    main()

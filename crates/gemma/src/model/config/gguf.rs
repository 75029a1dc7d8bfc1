//! GGUF metadata → [`RawConfig`], for `general.architecture` = `gemma`, `gemma2`, `gemma3`, `gemma4`: a config source
//! beside the Hugging Face JSON reader ([`super::hf`]), since a GGUF file's metadata *is* its model
//! configuration. Keys are read as llama.cpp reads them (`src/llama-model.cpp`, `llama_model::load_hparams`;
//! key names from `src/llama-arch.cpp`), and a key a file lacks takes the value llama.cpp would use, so that a
//! GGUF runs here as it runs there. Every field of [`RawConfig`] is filled explicitly: none of transformers'
//! per-family defaults (which [`Config::from_raw`] applies to Hugging Face configs) leaks into a GGUF model.

use super::{Family, LayerType, Projector, RawConfig, RawVision, Rope};
use crate::formats::gguf::{GgufFile, Value};
use crate::{Error, Result};

/// The architecture's keys, prefixed with `general.architecture` (`gemma3.block_count`, ...).
struct Keys<'a> {
    file: &'a GgufFile,
    arch: &'a str,
}

impl Keys<'_> {
    fn name(&self, key: &str) -> String {
        format!("{}.{key}", self.arch)
    }
    fn u32(&self, key: &str) -> Result<Option<u32>> {
        self.file.get_u32(&self.name(key))
    }
    fn f32(&self, key: &str) -> Result<Option<f32>> {
        self.file.get_f32(&self.name(key))
    }
    fn required_u32(&self, key: &str) -> Result<u32> {
        self.u32(key)?.ok_or_else(|| self.missing(key))
    }
    fn missing(&self, key: &str) -> Error {
        Error::config(
            self.file.path(),
            self.name(key),
            "missing (llama.cpp requires it too)",
        )
    }
    /// A per-model count that llama.cpp also accepts as a per-layer array (`get_key_or_arr`): gemma-rs needs
    /// one value for all layers.
    fn uniform_u32(&self, key: &str) -> Result<Option<u32>> {
        let name = self.name(key);
        match self.file.get(&name) {
            Some(Value::Array(items)) => {
                let vals: Option<Vec<u64>> = items.iter().map(Value::as_u64).collect();
                match vals.as_deref() {
                    Some([first, rest @ ..]) if rest.iter().all(|v| v == first) => {
                        u32::try_from(*first).map(Some).map_err(|_| {
                            Error::config(
                                self.file.path(),
                                &name,
                                format!("{first} is out of range"),
                            )
                        })
                    }
                    _ => Err(Error::config(
                        self.file.path(),
                        &name,
                        "per-layer values that differ are not supported (Gemma 1-3 use one value)",
                    )),
                }
            }
            _ => self.file.get_u32(&name),
        }
    }
}

/// Map the metadata to a [`RawConfig`]. Every value that is not read from the file is llama.cpp's, with the
/// source named where it is set.
pub fn raw_config(file: &GgufFile) -> Result<RawConfig> {
    let path = file.path();
    let arch = file.architecture()?;
    // llama-arch.cpp: LLM_ARCH_GEMMA "gemma", LLM_ARCH_GEMMA2 "gemma2", LLM_ARCH_GEMMA3 "gemma3". Other Gemma-named
    // architectures (gemma3n, gemma-embedding) are different networks.
    let family = match arch {
        "gemma" => Family::Gemma,
        "gemma2" => Family::Gemma2,
        "gemma3" => Family::Gemma3,
        "gemma4" => return gemma4(file),
        other => return Err(Error::UnknownArchitecture(other.into())),
    };
    let k = Keys { file, arch };
    let cfg_err = |key: String, what: String| Error::config(path, key, what);

    let n_layers = k.required_u32("block_count")? as usize;
    let d_model = k.required_u32("embedding_length")? as usize;
    let n_heads = k
        .uniform_u32("attention.head_count")?
        .ok_or_else(|| k.missing("attention.head_count"))? as usize;
    // llama.cpp: "n_head_kv is optional, default to n_head".
    let n_kv_heads = k
        .uniform_u32("attention.head_count_kv")?
        .map_or(n_heads, |v| v as usize);
    let ffn_dim = k
        .uniform_u32("feed_forward_length")?
        .ok_or_else(|| k.missing("feed_forward_length"))? as usize;
    if n_heads == 0 {
        return Err(cfg_err(
            k.name("attention.head_count"),
            "must be positive".into(),
        ));
    }
    // llama.cpp: n_embd_head_k = n_embd / n_head unless `attention.key_length` says otherwise; likewise v.
    let head_dim = k
        .u32("attention.key_length")?
        .map_or(d_model / n_heads, |v| v as usize);
    let v_dim = k
        .u32("attention.value_length")?
        .map_or(d_model / n_heads, |v| v as usize);
    if v_dim != head_dim {
        return Err(cfg_err(
            k.name("attention.value_length"),
            format!("{v_dim} differs from key_length {head_dim}; Gemma uses one head size"),
        ));
    }
    let context_len = k.required_u32("context_length")? as usize;
    let eps = k
        .f32("attention.layer_norm_rms_epsilon")?
        .ok_or_else(|| k.missing("attention.layer_norm_rms_epsilon"))?;

    let rope_global = Rope {
        base: rope_base(&k)?,
        linear_factor: rope_linear_factor(&k)?,
    };
    let (layer_types, sliding_window, rope_local) =
        attention_layout(&k, family, n_layers, rope_global)?;
    let (attn_softcap, final_softcap) = softcaps(&k, family)?;

    // Query scale. llama.cpp (load_hparams): Gemma 1 scales q by 1/sqrt(n_embd_head_k); Gemma 2 and 3 use
    // `f_attention_scale`, 1/sqrt(n_embd / n_head) (integer division) for the 27B models and
    // 1/sqrt(n_embd_head_k) otherwise, the model type being recognised by its block count (46 for Gemma 2 27B,
    // 62 for Gemma 3 27B): GGUF has no key for transformers' `query_pre_attn_scalar`, and these are the
    // official values (144 = 4608/32 and 168 = 5376/32; 256 = head_dim for every other size).
    let is_27b = matches!(
        (family, n_layers),
        (Family::Gemma2, 46) | (Family::Gemma3, 62)
    );
    let query_pre_attn_scalar = if is_27b {
        (d_model / n_heads) as f64
    } else {
        head_dim as f64
    };

    let embed = file
        .tensors
        .get("token_embd.weight")
        .ok_or_else(|| Error::MissingTensor {
            file: path.into(),
            name: "token_embd.weight".into(),
        })?;
    // ggml lists the embedding as [n_embd, n_vocab]; row-major that is (vocab, d_model).
    let vocab_size = match embed.shape.as_slice() {
        [rows, _] => *rows,
        other => {
            return Err(Error::ShapeMismatch {
                file: path.into(),
                name: "token_embd.weight".into(),
                expected: vec![0, d_model],
                got: other.to_vec(),
            })
        }
    };

    Ok(RawConfig {
        source: path.to_path_buf(),
        family: Some(family),
        vocab_size: Some(vocab_size),
        hidden_size: Some(d_model),
        intermediate_size: Some(ffn_dim),
        num_hidden_layers: Some(n_layers),
        num_attention_heads: Some(n_heads),
        num_key_value_heads: Some(n_kv_heads),
        head_dim: Some(head_dim),
        max_position_embeddings: Some(context_len),
        rms_norm_eps: Some(eps as f64),
        query_pre_attn_scalar: Some(query_pre_attn_scalar),
        attn_logit_softcapping: Some(attn_softcap),
        final_logit_softcapping: Some(final_softcap),
        sliding_window,
        sliding_window_pattern: None,
        layer_types: Some(layer_types),
        rope_global: Some(rope_global),
        rope_local: Some(rope_local),
        rope_global_factor: None,
        // llama.cpp uses `output.weight` when the file has one, else the embedding (tied).
        tie_word_embeddings: Some(file.tensors.get("output.weight").is_none()),
        bos_token_id: file.get_u32("tokenizer.ggml.bos_token_id")?,
        eos_token_ids: end_of_generation_ids(file)?,
        pad_token_id: file.get_u32("tokenizer.ggml.padding_token_id")?,
        ..RawConfig::default()
    })
}

/// Per-layer values of a key that llama.cpp reads with `get_key_or_arr`: an array of `n` integers, or one
/// integer for every layer. `None` if absent.
fn per_layer_u32(k: &Keys, key: &str, n: usize) -> Result<Option<Vec<usize>>> {
    let name = k.name(key);
    match k.file.get(&name) {
        Some(Value::Array(items)) => {
            let vals: Option<Vec<usize>> = items.iter().map(|v| v.as_u64().map(|x| x as usize)).collect();
            match vals {
                Some(v) if v.len() == n => Ok(Some(v)),
                _ => Err(Error::config(k.file.path(), name, format!("expected {n} per-layer integers"))),
            }
        }
        _ => Ok(k.file.get_u32(&name)?.map(|v| vec![v as usize; n])),
    }
}

/// `general.architecture` = `gemma4`, as llama.cpp's converter (`conversion/gemma.py`, `Gemma4Model`) writes it
/// and its loader reads it. Where the Hugging Face config has one key, the GGUF may hold per-layer arrays or a
/// tensor, mapped back onto the same [`RawConfig`] fields the `config.json` reader fills:
/// - `attention.sliding_window_pattern`: one bool per layer (true = sliding) → `layer_types`;
/// - `attention.key_length` / `key_length_swa`: head size of global / sliding layers, and
///   `attention.head_count_kv` (one value, or per layer): KV heads → `head_dim` (the sliding layers') plus
///   every global layer's own (head_dim, KV heads), i.e. transformers 5.24's `per_layer_config`;
/// - `attention.shared_kv_layers` → `num_kv_shared_layers`;
/// - `feed_forward_length`: one width, or per layer with the KV-shared layers at twice the others
///   (`use_double_wide_mlp`, which is all transformers can express);
/// - `rope.freq_base` / `freq_base_swa`: theta of global / sliding layers; the global layers' "proportional"
///   RoPE is the `rope_freqs.weight` tensor (head_dim / 2 frequency divisors: 1 for each rotated pair, 1e30 for
///   each pair left unrotated, i.e. a frequency of 0), whose count of ones is `partial_rotary_factor ·
///   head_dim / 2`; sliding layers rotate `rope.dimension_count_swa` dimensions (all of them in every
///   release; fewer is refused);
/// - `embedding_length_per_layer_input` (0 = none) and the rows of `per_layer_token_embd.weight`;
/// - `expert_count`, `expert_used_count`, `expert_feed_forward_length` (0 or absent = no mixture of experts);
/// - `attention_k_eq_v`: llama.cpp has no key for it; a global layer that computes keys but has no
///   `attn_v.weight` uses its keys as values, as in llama.cpp's graph.
///
/// Attention scale (1), norms (`x · w`, stored as is: the converter adds no 1 for Gemma 4) and the value norm
/// are the family's, set by [`Config::from_raw`](super::Config::from_raw).
fn gemma4(file: &GgufFile) -> Result<RawConfig> {
    let path = file.path();
    let k = Keys { file, arch: "gemma4" };
    let cfg_err = |key: String, what: String| Error::config(path, key, what);
    let n_layers = k.required_u32("block_count")? as usize;
    let d_model = k.required_u32("embedding_length")? as usize;
    let n_heads = k
        .uniform_u32("attention.head_count")?
        .ok_or_else(|| k.missing("attention.head_count"))? as usize;
    let sliding: Vec<bool> = match file.get(&k.name("attention.sliding_window_pattern")) {
        Some(Value::Array(items)) if items.len() == n_layers => items
            .iter()
            .map(Value::as_bool)
            .collect::<Option<Vec<bool>>>()
            .ok_or_else(|| cfg_err(k.name("attention.sliding_window_pattern"), "expected bools".into()))?,
        Some(_) => {
            return Err(cfg_err(
                k.name("attention.sliding_window_pattern"),
                format!("expected {n_layers} bools, one per layer"),
            ))
        }
        None => return Err(k.missing("attention.sliding_window_pattern")),
    };
    let layer_types: Vec<LayerType> = sliding
        .iter()
        .map(|&s| if s { LayerType::Sliding } else { LayerType::Full })
        .collect();
    let head_full = k.required_u32("attention.key_length")? as usize;
    let head_swa = k.u32("attention.key_length_swa")?.map_or(head_full, |v| v as usize);
    for (key, v, want) in [("attention.value_length", k.u32("attention.value_length")?, head_full), ("attention.value_length_swa", k.u32("attention.value_length_swa")?, head_swa)] {
        if let Some(v) = v.filter(|&v| v as usize != want) {
            return Err(cfg_err(k.name(key), format!("{v} differs from the key length {want}")));
        }
    }
    let kv = per_layer_u32(&k, "attention.head_count_kv", n_layers)?.unwrap_or_else(|| vec![n_heads; n_layers]);
    let n_kv_swa = sliding.iter().position(|&s| s).map_or(kv[0], |i| kv[i]);
    let n_shared = k.u32("attention.shared_kv_layers")?.unwrap_or(0) as usize;
    let first_shared = n_layers.saturating_sub(n_shared);

    let ffn = per_layer_u32(&k, "feed_forward_length", n_layers)?.ok_or_else(|| k.missing("feed_forward_length"))?;
    let base_ffn = ffn[0];
    let double_wide = ffn.iter().enumerate().any(|(i, &f)| i >= first_shared && f != base_ffn);
    for (i, &f) in ffn.iter().enumerate() {
        let want = if double_wide && i >= first_shared { 2 * base_ffn } else { base_ffn };
        if f != want {
            return Err(cfg_err(
                k.name("feed_forward_length"),
                format!("layer {i} has {f}; gemma-rs needs one width, doubled in the KV-shared layers only ({want})"),
            ));
        }
    }

    // The sliding layers' rotation: all of their head (transformers' "default" RoPE).
    let rot_swa = k.u32("rope.dimension_count_swa")?.map_or(head_swa, |v| v as usize);
    if rot_swa != head_swa {
        return Err(Error::Unsupported {
            feature: format!("{}: sliding layers that rotate {rot_swa} of {head_swa} head dimensions", path.display()),
        });
    }
    let global_proportional = match file.tensors.get("rope_freqs.weight") {
        None => {
            let rot = k.u32("rope.dimension_count")?.map_or(head_full, |v| v as usize);
            rot as f64 / head_full as f64
        }
        Some(t) => {
            let f = t.to_f32_vec();
            let ones = f.iter().take_while(|&&x| x == 1.0).count();
            if f.len() != head_full / 2 || f[ones..].iter().any(|&x| x < 1e29) {
                return Err(Error::Unsupported {
                    feature: format!(
                        "{}: rope_freqs.weight other than {} ones then 1e30s (Gemma 4's proportional RoPE)",
                        path.display(),
                        head_full / 2
                    ),
                });
            }
            2.0 * ones as f64 / head_full as f64
        }
    };

    // Global layers' own heads, as transformers 5.24's `per_layer_config`. A global layer with keys but no
    // values tensor uses its keys (`attention_k_eq_v`).
    let mut per_layer_heads = Vec::new();
    let mut k_eq_v = None;
    for (i, &s) in sliding.iter().enumerate() {
        if s {
            if kv[i] != n_kv_swa {
                return Err(cfg_err(k.name("attention.head_count_kv"), format!("sliding layer {i} has {} KV heads, others {n_kv_swa}", kv[i])));
            }
            continue;
        }
        per_layer_heads.push((i, Some(head_full), Some(kv[i])));
        if i < first_shared {
            let no_v = file.tensors.get(&format!("blk.{i}.attn_v.weight")).is_none();
            if *k_eq_v.get_or_insert(no_v) != no_v {
                return Err(cfg_err(format!("blk.{i}.attn_v.weight"), "present in some global layers only".into()));
            }
        }
    }

    let embed = file.tensors.get("token_embd.weight").ok_or_else(|| Error::MissingTensor {
        file: path.into(),
        name: "token_embd.weight".into(),
    })?;
    let vocab_size = embed.shape.first().copied().unwrap_or(0);
    let ple_dim = k.u32("embedding_length_per_layer_input")?.unwrap_or(0) as usize;
    let ple_vocab = file.tensors.get("per_layer_token_embd.weight").and_then(|t| t.shape.first().copied());
    let n_experts = k.u32("expert_count")?.unwrap_or(0) as usize;
    let final_cap = k.f32("final_logit_softcapping")?.unwrap_or(0.0);

    Ok(RawConfig {
        source: path.to_path_buf(),
        family: Some(Family::Gemma4),
        vocab_size: Some(vocab_size),
        hidden_size: Some(d_model),
        intermediate_size: Some(base_ffn),
        num_hidden_layers: Some(n_layers),
        num_attention_heads: Some(n_heads),
        num_key_value_heads: Some(n_kv_swa),
        head_dim: Some(head_swa),
        max_position_embeddings: Some(k.required_u32("context_length")? as usize),
        rms_norm_eps: Some(
            k.f32("attention.layer_norm_rms_epsilon")?
                .ok_or_else(|| k.missing("attention.layer_norm_rms_epsilon"))? as f64,
        ),
        // Unused by Gemma 4 (its attention scale is 1); set so that nothing is left to a default.
        query_pre_attn_scalar: Some(head_swa as f64),
        attn_logit_softcapping: Some(None),
        final_logit_softcapping: Some((final_cap != 0.0).then_some(final_cap as f64)),
        sliding_window: k.u32("attention.sliding_window")?.map(|w| w as usize),
        sliding_window_pattern: None,
        layer_types: Some(layer_types),
        rope_global: Some(Rope { base: k.f32("rope.freq_base")?.unwrap_or(1_000_000.0), linear_factor: 1.0 }),
        rope_local: Some(Rope { base: k.f32("rope.freq_base_swa")?.unwrap_or(10_000.0), linear_factor: 1.0 }),
        rope_global_proportional: Some(global_proportional),
        rope_local_proportional: None,
        per_layer_heads: Some(per_layer_heads),
        attention_k_eq_v: Some(k_eq_v.unwrap_or(false)),
        num_kv_shared_layers: Some(n_shared),
        use_double_wide_mlp: Some(double_wide),
        hidden_size_per_layer_input: Some(ple_dim),
        vocab_size_per_layer_input: if ple_dim > 0 { ple_vocab } else { None },
        enable_moe_block: Some(n_experts > 0),
        num_experts: (n_experts > 0).then_some(n_experts),
        top_k_experts: k.u32("expert_used_count")?.map(|v| v as usize).filter(|_| n_experts > 0),
        moe_intermediate_size: k.u32("expert_feed_forward_length")?.map(|v| v as usize).filter(|_| n_experts > 0),
        tie_word_embeddings: Some(file.tensors.get("output.weight").is_none()),
        bos_token_id: file.get_u32("tokenizer.ggml.bos_token_id")?,
        eos_token_ids: end_of_generation_ids(file)?,
        pad_token_id: file.get_u32("tokenizer.ggml.padding_token_id")?,
        ..RawConfig::default()
    })
}

/// `{arch}.rope.freq_base`; llama.cpp's default when absent is 10000 (`rope_freq_base_train = 10000.0f`).
fn rope_base(k: &Keys) -> Result<f32> {
    Ok(k.f32("rope.freq_base")?.unwrap_or(10000.0))
}

/// Linear RoPE scaling of the global layers. llama.cpp reads `rope.scaling.type` (default "linear") and
/// `rope.scaling.factor` (or the older `rope.scale_linear`; absent or 0 = no scaling) and divides positions by
/// the factor; type "none" disables the factor. YaRN and LongRoPE are not Gemma's and are refused.
fn rope_linear_factor(k: &Keys) -> Result<f32> {
    let kind = k
        .file
        .get_str(&k.name("rope.scaling.type"))?
        .unwrap_or("linear");
    let factor = match k.f32("rope.scaling.factor")? {
        Some(f) => f,
        None => k.f32("rope.scale_linear")?.unwrap_or(0.0),
    };
    match kind {
        "none" => Ok(1.0),
        "linear" if factor == 0.0 => Ok(1.0),
        "linear" if factor > 0.0 && factor.is_finite() => Ok(factor),
        "linear" => Err(Error::config(
            k.file.path(),
            k.name("rope.scaling.factor"),
            format!("{factor} must be positive"),
        )),
        other => Err(Error::config(
            k.file.path(),
            k.name("rope.scaling.type"),
            format!("`{other}` is not supported (Gemma uses none or linear)"),
        )),
    }
}

/// Which layers slide, their window, and the RoPE of the sliding layers, as llama.cpp sets them
/// (`llama_hparams::set_swa_pattern(n)`: layer `il` slides iff `il % n < n - 1`):
/// - gemma: every layer global;
/// - gemma2: window `attention.sliding_window`, default 4096 ("default value of gemma 2"), pattern 2 (even
///   layers slide); sliding layers share the global RoPE;
/// - gemma3: if `attention.sliding_window` is present and positive, pattern `attention.sliding_window_pattern`,
///   default 6 (five sliding layers, then one global: layer i is global iff (i + 1) % 6 == 0) and the sliding layers use RoPE base 10000 without
///   scaling (`rope_freq_base_train_swa = 10000.0f; rope_freq_scale_train_swa = 1.0f`), so the linear
///   factor applies to the global layers only, as in transformers. Without a window every layer is global.
fn attention_layout(
    k: &Keys,
    family: Family,
    n_layers: usize,
    global: Rope,
) -> Result<(Vec<LayerType>, Option<usize>, Rope)> {
    let pattern = |n: usize| -> Vec<LayerType> {
        (0..n_layers)
            .map(|il| {
                if il % n < n - 1 {
                    LayerType::Sliding
                } else {
                    LayerType::Full
                }
            })
            .collect()
    };
    let all_full = vec![LayerType::Full; n_layers];
    let window = k.u32("attention.sliding_window")?.map(|w| w as usize);
    Ok(match family {
        // llama.cpp has no RecurrentGemma architecture, and gemma4 is read by `gemma4`: never reached.
        Family::Gemma | Family::RecurrentGemma | Family::Gemma4 => (all_full, None, global),
        Family::Gemma2 => (pattern(2), Some(window.unwrap_or(4096)), global),
        Family::Gemma3 => match window {
            Some(w) if w > 0 => (
                pattern(swa_period(k)?),
                Some(w),
                Rope {
                    base: 10000.0,
                    linear_factor: 1.0,
                },
            ),
            _ => (all_full, None, global),
        },
    })
}

/// Gemma 3's `attention.sliding_window_pattern` (llama.cpp: `swa_period = 6` unless the key says otherwise;
/// the converter writes none for the releases, which all use 6).
fn swa_period(k: &Keys) -> Result<usize> {
    match k.u32("attention.sliding_window_pattern")? {
        None => Ok(6),
        Some(0) => Err(Error::config(k.file.path(), k.name("attention.sliding_window_pattern"), "must be positive")),
        Some(n) => Ok(n as usize),
    }
}

/// Soft-caps (`Some(None)` = none). llama.cpp: Gemma 2 caps attention scores and logits, defaulting to the
/// `llama_hparams` values 50 and 30 when `attn_logit_softcapping` / `final_logit_softcapping` are absent;
/// Gemma 3 reads only `final_logit_softcapping`, default 0 (none), and never caps attention; Gemma 1 caps
/// nothing. A stored 0 means no cap.
fn softcaps(k: &Keys, family: Family) -> Result<(Option<f64>, Option<f64>)> {
    let cap = |key: &str, default: f32| -> Result<Option<f64>> {
        let v = k.f32(key)?.unwrap_or(default);
        Ok((v != 0.0).then_some(v as f64))
    };
    Ok(match family {
        Family::Gemma | Family::RecurrentGemma | Family::Gemma4 => (None, None),
        Family::Gemma2 => (
            cap("attn_logit_softcapping", 50.0)?,
            cap("final_logit_softcapping", 30.0)?,
        ),
        Family::Gemma3 => (None, cap("final_logit_softcapping", 0.0)?),
    })
}

/// The tokens that end generation, as llama.cpp's vocabulary collects them (`llama-vocab.cpp`,
/// `special_eog_ids`): `tokenizer.ggml.eos_token_id`, `eot_token_id` and `eom_token_id` when given, and the
/// token whose text is `<end_of_turn>` (Gemma's end of a chat turn, which llama.cpp recognises by its text
/// when the file has no `eot_token_id`). `None` if the file names none of them (the family default applies).
fn end_of_generation_ids(file: &GgufFile) -> Result<Option<Vec<u32>>> {
    let mut ids = Vec::new();
    for key in [
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.eot_token_id",
        "tokenizer.ggml.eom_token_id",
    ] {
        ids.extend(file.get_u32(key)?);
    }
    if let Some(tokens) = file.get_arr("tokenizer.ggml.tokens")? {
        if let Some(i) = tokens
            .iter()
            .position(|t| t.as_str() == Some("<end_of_turn>"))
        {
            ids.push(i as u32);
        }
    }
    let mut seen = std::collections::HashSet::new();
    ids.retain(|id| seen.insert(*id));
    Ok((!ids.is_empty()).then_some(ids))
}

/// The vision side of a Gemma 3 model from llama.cpp's mmproj GGUF (`general.architecture` = `clip`, written by
/// `convert_hf_to_gguf.py --mmproj`), read as llama.cpp's `tools/mtmd/clip.cpp` reads it: the `clip.vision.*`
/// sizes, `clip.projector_type` = `gemma3`, and the pooling from `clip.vision.projector.scale_factor` (the
/// pooling kernel's side; clip.cpp's default for gemma3 is 4, i.e. 64 → 16 patches per side, 256 tokens). The
/// placeholder id is the text file's `<image_soft_token>` (an mmproj file has no vocabulary). Errors name
/// the mmproj file: another architecture (a text GGUF given as the mmproj), another projector, a missing size.
pub fn raw_vision(mmproj: &GgufFile, text: &GgufFile) -> Result<RawVision> {
    let path = mmproj.path();
    let arch = mmproj.architecture()?;
    if arch != "clip" {
        return Err(Error::format(
            path,
            format!("general.architecture is `{arch}`, not `clip`: not an mmproj file (llama.cpp's vision projector GGUF)"),
        ));
    }
    match mmproj.get_str("clip.projector_type")? {
        Some("gemma3") => {}
        Some(other) => {
            return Err(Error::Unsupported {
                feature: format!(
                    "the `{other}` vision projector of {} (clip.projector_type; only Gemma 3's `gemma3` is)",
                    path.display()
                ),
            })
        }
        None => return Err(Error::config(path, "clip.projector_type", "missing")),
    }
    if mmproj.get_bool("clip.has_vision_encoder")? == Some(false) {
        return Err(Error::config(path, "clip.has_vision_encoder", "false: the file has no vision tower"));
    }
    let size = |key: &str| -> Result<usize> {
        let name = format!("clip.vision.{key}");
        match mmproj.get_u32(&name)? {
            Some(v) => Ok(v as usize),
            None => Err(Error::config(path, name, "missing (llama.cpp requires it too)")),
        }
    };
    let (image_size, patch_size) = (size("image_size")?, size("patch_size")?);
    // clip.cpp: `proj_scale_factor` defaults to 4 for PROJECTOR_TYPE_GEMMA3.
    let scale = mmproj.get_u32("clip.vision.projector.scale_factor")?.unwrap_or(4) as usize;
    let per_side = if patch_size == 0 { 0 } else { image_size / patch_size };
    if scale == 0 || per_side % scale != 0 {
        return Err(Error::config(
            path,
            "clip.vision.projector.scale_factor",
            format!("{scale} does not divide the {per_side} patches per side"),
        ));
    }
    let eps = mmproj.get_f32("clip.vision.attention.layer_norm_epsilon")?.unwrap_or(1e-6);
    let soft = text
        .get_arr("tokenizer.ggml.tokens")?
        .and_then(|t| t.iter().position(|t| t.as_str() == Some("<image_soft_token>")))
        .ok_or_else(|| {
            Error::config(text.path(), "tokenizer.ggml.tokens", "has no <image_soft_token> (the placeholder Gemma 3 images replace)")
        })?;
    Ok(RawVision {
        projector: Some(Projector::Gemma3),
        hidden_size: Some(size("embedding_length")?),
        intermediate_size: Some(size("feed_forward_length")?),
        num_hidden_layers: Some(size("block_count")?),
        num_attention_heads: Some(size("attention.head_count")?),
        image_size: Some(image_size),
        patch_size: Some(patch_size),
        layer_norm_eps: Some(eps as f64),
        projection_dim: mmproj.get_u32("clip.vision.projection_dim")?.map(|v| v as usize),
        mm_tokens_per_image: Some((per_side / scale).pow(2)),
        image_token_index: Some(soft as u32),
    })
}

#[cfg(test)]
#[path = "gguf_tests.rs"]
mod tests;

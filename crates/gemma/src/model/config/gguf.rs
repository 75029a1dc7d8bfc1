//! GGUF metadata → [`RawConfig`], for `general.architecture` = `gemma`, `gemma2`, `gemma3`: a config source
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
        // llama.cpp has no RecurrentGemma architecture, and its gemma4 is not read yet: `raw_config` never
        // produces these families.
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

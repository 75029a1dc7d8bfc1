//! Hugging Face `config.json` → [`RawConfig`], either key spelling (legacy Hub keys or transformers 5), for
//! every family member: `gemma`, `gemma2`, `gemma3` / `gemma3_text`, `recurrent_gemma`, `gemma4_text`, and the
//! vision-language wrappers `paligemma` (text + SigLIP), multimodal `gemma3`, and `gemma4` (whose text model
//! is read; its vision and audio towers are not supported and their configs are not read).

use std::path::Path;

use serde_json::Value;

use super::{Family, LayerType, Projector, RawConfig, RawVision, Rope};
use crate::{Error, Result};

/// Typed reads of one JSON object; errors name `prefix + key` (e.g. `vision_config.image_size`).
struct Keys<'a> {
    v: &'a Value,
    path: &'a Path,
    prefix: &'a str,
}

impl Keys<'_> {
    fn err(&self, k: &str, what: String) -> Error {
        Error::config(self.path, format!("{}{k}", self.prefix), what)
    }
    fn usize(&self, k: &str) -> Result<Option<usize>> {
        match self.v.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(x) => x
                .as_u64()
                .map(|n| Some(n as usize))
                .ok_or_else(|| self.err(k, format!("expected a non-negative integer, got {x}"))),
        }
    }
    fn f64(&self, k: &str) -> Result<Option<f64>> {
        match self.v.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(x) => x
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.err(k, format!("expected a number, got {x}"))),
        }
    }
    /// `Some(None)` for an explicit null, `None` when absent.
    fn nullable_f64(&self, k: &str) -> Result<Option<Option<f64>>> {
        match self.v.get(k) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(x) => x
                .as_f64()
                .map(|f| Some(Some(f)))
                .ok_or_else(|| self.err(k, format!("expected a number or null, got {x}"))),
        }
    }
    fn token_id(&self, k: &str) -> Result<Option<u32>> {
        match self.v.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(a)) => Ok(a.first().and_then(Value::as_u64).map(|n| n as u32)),
            Some(x) => x
                .as_u64()
                .map(|n| Some(n as u32))
                .ok_or_else(|| self.err(k, format!("expected a token id, got {x}"))),
        }
    }
}

impl RawConfig {
    pub fn from_hf_file(path: &Path) -> Result<RawConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| Error::format(path, format!("not valid JSON: {e}")))?;
        RawConfig::from_hf_json(&v, path)
    }

    /// Read a transformers config (either key spelling). A vision-language config (`paligemma`, multimodal
    /// `gemma3`) contributes its `text_config` as the decoder and its `vision_config` as [`RawVision`].
    pub fn from_hf_json(v: &Value, path: &Path) -> Result<RawConfig> {
        let model_type = v
            .get("model_type")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::config(path, "model_type", "missing"))?;
        let projector = match model_type {
            "paligemma" => Some(Projector::PaliGemma),
            "gemma3" if v.get("vision_config").is_some() => Some(Projector::Gemma3),
            _ => None,
        };
        let (c, outer, prefix) = match (model_type, v.get("text_config")) {
            ("gemma3" | "paligemma" | "gemma4", Some(t)) => (t, Some(v), "text_config."),
            ("paligemma", None) => {
                return Err(Error::config(
                    path,
                    "text_config",
                    "missing (a PaliGemma config names its Gemma decoder there)",
                ))
            }
            _ => (v, None, ""),
        };
        // PaliGemma's text_config names its decoder generation; transformers defaults it to `gemma`.
        let text_type = match model_type {
            "paligemma" => c
                .get("model_type")
                .and_then(Value::as_str)
                .unwrap_or("gemma"),
            t => t,
        };
        let family = Family::from_model_type(text_type)
            .ok_or_else(|| Error::UnknownArchitecture(text_type.into()))?;
        if projector == Some(Projector::PaliGemma)
            && !matches!(family, Family::Gemma | Family::Gemma2)
        {
            return Err(Error::config(
                path,
                "text_config.model_type",
                format!("`{text_type}`: PaliGemma's decoder is gemma or gemma2"),
            ));
        }
        let keys = Keys { v: c, path, prefix };
        let err = |field: &str, what: String| keys.err(field, what);
        let usize_key = |k: &str| keys.usize(k);
        let f64_key = |k: &str| keys.f64(k);
        let nullable_f64 = |k: &str| keys.nullable_f64(k);
        // The activation: Gemma computes tanh-approximated GELU whatever the legacy `hidden_act: "gelu"` says
        // (transformers warns and uses gelu_pytorch_tanh; Google's reference code does the same).
        for k in ["hidden_activation", "hidden_act"] {
            if let Some(a) = c.get(k).and_then(Value::as_str) {
                if !matches!(a, "gelu" | "gelu_pytorch_tanh" | "gelu_tanh" | "gelu_new") {
                    return Err(err(
                        k,
                        format!("`{a}` is not supported: Gemma uses tanh-approximated GELU"),
                    ));
                }
            }
        }
        if c.get("attention_bias").and_then(Value::as_bool) == Some(true) {
            return Err(err(
                "attention_bias",
                "true is not supported: Gemma's projections have no bias".into(),
            ));
        }
        // RecurrentGemma's `block_types` is a pattern repeated over the layers; `layer_types` lists every layer.
        let (layer_types, layer_types_repeat) = match (c.get("layer_types"), c.get("block_types")) {
            (Some(l), _) if !l.is_null() => (block_list(&keys, "layer_types", l)?, false),
            (_, Some(b)) if !b.is_null() => (block_list(&keys, "block_types", b)?, true),
            _ => (None, false),
        };
        let ((rope_global, rope_global_proportional), (rope_local, rope_local_proportional), rope_global_factor) = parse_rope(c, path)?;
        let bool_key = |k: &str| -> Result<Option<bool>> {
            match c.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Bool(b)) => Ok(Some(*b)),
                Some(x) => Err(err(k, format!("expected true or false, got {x}"))),
            }
        };
        let per_layer_heads = match c.get("per_layer_config") {
            None | Some(Value::Null) => None,
            Some(p) => Some(per_layer_heads(&keys, p)?),
        };
        let outer_keys = outer.map(|o| Keys {
            v: o,
            path,
            prefix: "",
        });
        let token_id = |k: &str| -> Result<Option<u32>> {
            match keys.token_id(k)? {
                Some(t) => Ok(Some(t)),
                None => outer_keys.as_ref().map_or(Ok(None), |o| o.token_id(k)),
            }
        };
        let eos_token_ids = match c
            .get("eos_token_id")
            .or_else(|| outer.and_then(|o| o.get("eos_token_id")))
        {
            None | Some(Value::Null) => None,
            Some(Value::Array(a)) => Some(
                a.iter()
                    .filter_map(Value::as_u64)
                    .map(|n| n as u32)
                    .collect(),
            ),
            Some(x) => Some(vec![x
                .as_u64()
                .ok_or_else(|| err("eos_token_id", format!("expected a token id, got {x}")))?
                as u32]),
        };
        Ok(RawConfig {
            source: path.to_path_buf(),
            field_prefix: prefix.into(),
            family: Some(family),
            vocab_size: usize_key("vocab_size")?,
            hidden_size: usize_key("hidden_size")?,
            intermediate_size: usize_key("intermediate_size")?,
            num_hidden_layers: usize_key("num_hidden_layers")?,
            num_attention_heads: usize_key("num_attention_heads")?,
            num_key_value_heads: usize_key("num_key_value_heads")?,
            head_dim: usize_key("head_dim")?,
            max_position_embeddings: usize_key("max_position_embeddings")?,
            rms_norm_eps: f64_key("rms_norm_eps")?,
            query_pre_attn_scalar: f64_key("query_pre_attn_scalar")?,
            attn_logit_softcapping: nullable_f64("attn_logit_softcapping")?,
            // RecurrentGemma calls its final cap `logits_soft_cap`.
            final_logit_softcapping: match nullable_f64("final_logit_softcapping")? {
                None => nullable_f64("logits_soft_cap")?,
                x => x,
            },
            // RecurrentGemma calls its local-attention window `attention_window_size`.
            sliding_window: usize_key("sliding_window")?.or(usize_key("attention_window_size")?),
            sliding_window_pattern: usize_key("sliding_window_pattern")?,
            layer_types,
            layer_types_repeat,
            // Legacy configs put it at the top level; transformers 5 inside `rope_parameters`.
            partial_rotary_factor: match f64_key("partial_rotary_factor")? {
                Some(f) => Some(f),
                None => match c.get("rope_parameters").filter(|p| p.is_object()) {
                    Some(p) => Keys { v: p, path, prefix: "rope_parameters." }.f64("partial_rotary_factor")?,
                    None => None,
                },
            },
            lru_width: usize_key("lru_width")?,
            conv1d_width: usize_key("conv1d_width")?,
            rope_global,
            rope_local,
            rope_global_factor,
            rope_global_proportional,
            rope_local_proportional,
            global_head_dim: usize_key("global_head_dim")?,
            num_global_key_value_heads: usize_key("num_global_key_value_heads")?,
            per_layer_heads,
            attention_k_eq_v: bool_key("attention_k_eq_v")?,
            num_kv_shared_layers: usize_key("num_kv_shared_layers")?,
            use_double_wide_mlp: bool_key("use_double_wide_mlp")?,
            hidden_size_per_layer_input: usize_key("hidden_size_per_layer_input")?,
            vocab_size_per_layer_input: usize_key("vocab_size_per_layer_input")?,
            enable_moe_block: bool_key("enable_moe_block")?,
            num_experts: usize_key("num_experts")?,
            top_k_experts: usize_key("top_k_experts")?,
            moe_intermediate_size: usize_key("moe_intermediate_size")?,
            tie_word_embeddings: c
                .get("tie_word_embeddings")
                .or_else(|| outer.and_then(|o| o.get("tie_word_embeddings")))
                .and_then(Value::as_bool),
            bos_token_id: token_id("bos_token_id")?,
            eos_token_ids,
            pad_token_id: token_id("pad_token_id")?,
            vision: projector.map(|p| raw_vision(v, p, path)).transpose()?,
        })
    }
}

/// transformers 5.24's `per_layer_config` (Gemma 4): `{"<layer index>": {"head_dim": n, "num_key_value_heads": n}}`.
/// Any other per-layer key is refused rather than ignored.
fn per_layer_heads(keys: &Keys, v: &Value) -> Result<Vec<(usize, Option<usize>, Option<usize>)>> {
    let o = v.as_object().ok_or_else(|| keys.err("per_layer_config", format!("expected an object, got {v}")))?;
    o.iter()
        .map(|(k, e)| {
            let field = format!("per_layer_config.{k}");
            let i = k.parse::<usize>().map_err(|_| keys.err(&field, "expected a layer index".into()))?;
            let e = e.as_object().ok_or_else(|| keys.err(&field, "expected an object".into()))?;
            if let Some(other) = e.keys().find(|k| !matches!(k.as_str(), "head_dim" | "num_key_value_heads")) {
                return Err(keys.err(&field, format!("`{other}` per layer is not supported (only head_dim, num_key_value_heads)")));
            }
            let entry = Keys { v: &v[k.as_str()], path: keys.path, prefix: &format!("{}{field}.", keys.prefix) };
            Ok((i, entry.usize("head_dim")?, entry.usize("num_key_value_heads")?))
        })
        .collect()
}

/// A list of layer/block type names: `full_attention`, `sliding_attention`, RecurrentGemma's `recurrent` /
/// `attention` (local) and their transformers-5 names `linear_attention` / `sliding_attention`.
fn block_list(keys: &Keys, field: &str, v: &Value) -> Result<Option<Vec<LayerType>>> {
    let a = v
        .as_array()
        .ok_or_else(|| keys.err(field, format!("expected a list, got {v}")))?;
    let types = a
        .iter()
        .enumerate()
        .map(|(i, t)| match t.as_str() {
            Some("full_attention") => Ok(LayerType::Full),
            Some("sliding_attention" | "attention") => Ok(LayerType::Sliding),
            Some("recurrent" | "linear_attention") => Ok(LayerType::Recurrent),
            _ => Err(keys.err(&format!("{field}[{i}]"), format!("expected \"full_attention\", \"sliding_attention\", \"attention\" or \"recurrent\", got {t}"))),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(types))
}

/// The vision side of a `paligemma` or multimodal `gemma3` config: `vision_config` plus the outer keys that
/// place image rows in the text stream.
fn raw_vision(v: &Value, projector: Projector, path: &Path) -> Result<RawVision> {
    let null = Value::Null;
    let vc = Keys {
        v: v.get("vision_config").unwrap_or(&null),
        path,
        prefix: "vision_config.",
    };
    let outer = Keys {
        v,
        path,
        prefix: "",
    };
    Ok(RawVision {
        projector: Some(projector),
        hidden_size: vc.usize("hidden_size")?,
        intermediate_size: vc.usize("intermediate_size")?,
        num_hidden_layers: vc.usize("num_hidden_layers")?,
        num_attention_heads: vc.usize("num_attention_heads")?,
        image_size: vc.usize("image_size")?,
        patch_size: vc.usize("patch_size")?,
        layer_norm_eps: vc.f64("layer_norm_eps")?,
        projection_dim: match outer.usize("projection_dim")? {
            Some(p) => Some(p),
            None => vc.usize("projection_dim")?,
        },
        mm_tokens_per_image: outer.usize("mm_tokens_per_image")?,
        image_token_index: outer.token_id("image_token_index")?,
    })
}

/// RoPE of global and local layers from either spelling:
/// - legacy: `rope_theta`, `rope_scaling: {rope_type|type: "linear", factor}` (global layers only, as
///   transformers' Gemma 3 applies it) and `rope_local_base_freq` (local layers);
/// - transformers 5: `rope_parameters`, either one `{rope_type, rope_theta, factor?}` for all layers, or one per
///   layer type: `{"full_attention": {...}, "sliding_attention": {...}}`.
///
/// Returns each layer type's RoPE where the file gives its theta (with Gemma 4's `partial_rotary_factor` for a
/// `proportional` one), and otherwise the global layers' linear factor alone: the Hub's Gemma 3 4B/12B/27B
/// configs give `rope_scaling: {factor: 8}` without `rope_theta`, and transformers applies the factor to the
/// default theta (`Config::from_raw` supplies it).
/// - Gemma 4: per layer type, `rope_type: "proportional"` with its `partial_rotary_factor` (returned beside each
///   Rope; None for the other types).
fn parse_rope(c: &Value, path: &Path) -> Result<((Option<Rope>, Option<f64>), (Option<Rope>, Option<f64>), Option<f32>)> {
    let one = |p: &Value, field: &str, default_theta: Option<f64>| -> Result<(Option<Rope>, Option<f64>)> {
        let theta = p
            .get("rope_theta")
            .and_then(Value::as_f64)
            .or(default_theta);
        let Some(theta) = theta else { return Ok((None, None)) };
        let kind = p
            .get("rope_type")
            .or_else(|| p.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("default");
        let mut proportional = None;
        let factor = match kind {
            "default" => 1.0,
            "linear" => p
                .get("factor")
                .and_then(Value::as_f64)
                .ok_or_else(|| Error::config(path, field, "linear RoPE scaling needs `factor`"))?,
            // transformers' `_compute_proportional_rope_parameters`: `factor` (default 1) divides every frequency.
            "proportional" => {
                proportional = Some(p.get("partial_rotary_factor").and_then(Value::as_f64).unwrap_or(1.0));
                p.get("factor").and_then(Value::as_f64).unwrap_or(1.0)
            }
            other => {
                return Err(Error::config(
                    path,
                    field,
                    format!("RoPE type `{other}` is not supported (Gemma uses default, linear or proportional)"),
                ))
            }
        };
        Ok((Some(Rope { base: theta as f32, linear_factor: factor as f32 }), proportional))
    };
    if let Some(p) = c.get("rope_parameters").filter(|p| p.is_object()) {
        if p.get("full_attention").is_some() || p.get("sliding_attention").is_some() {
            let g = match p.get("full_attention") {
                Some(x) => one(x, "rope_parameters.full_attention", None)?,
                None => (None, None),
            };
            let l = match p.get("sliding_attention") {
                Some(x) => one(x, "rope_parameters.sliding_attention", None)?,
                None => (None, None),
            };
            return Ok((g, l, None));
        }
        let theta = p.get("rope_theta").or_else(|| c.get("rope_theta")).and_then(Value::as_f64);
        // Parsed with a stand-in theta when there is none, to keep the factor (the theta is then the default).
        let (r, prop) = one(p, "rope_parameters", Some(theta.unwrap_or(0.0)))?;
        let r = r.expect("a theta was given");
        return Ok(match theta {
            Some(_) => ((Some(r), prop), (None, None), None),
            None => ((None, prop), (None, None), Some(r.linear_factor)),
        });
    }
    let theta = c.get("rope_theta").and_then(Value::as_f64);
    let (global, global_factor) = match c.get("rope_scaling").filter(|s| s.is_object()) {
        Some(s) => {
            let mut s = s.clone();
            if let (Some(obj), Some(t)) = (s.as_object_mut(), theta) {
                obj.insert("rope_theta".into(), t.into());
            }
            // Without a theta, only the factor is kept: the family default theta applies (from_raw).
            let (r, prop) = one(&s, "rope_scaling", Some(theta.unwrap_or(0.0)))?;
            let r = r.expect("a theta was given");
            match theta {
                Some(_) => ((Some(r), prop), None),
                None => ((None, prop), Some(r.linear_factor)),
            }
        }
        None => (
            (
                theta.map(|t| Rope {
                    base: t as f32,
                    linear_factor: 1.0,
                }),
                None,
            ),
            None,
        ),
    };
    let local = c
        .get("rope_local_base_freq")
        .and_then(Value::as_f64)
        .map(|b| Rope {
            base: b as f32,
            linear_factor: 1.0,
        });
    Ok((global, (local, None), global_factor))
}

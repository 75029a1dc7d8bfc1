//! The derived values peers got wrong, pinned for every released size from its official config
//! (crates/gemma/src/model/presets.json): query scale, window and RoPE per layer, soft-caps, norm placement.

use gemma::model::config::{AttentionScope, Config, Family, RawConfig, Rope};
use gemma::model::presets::preset_config;

fn cfg(name: &str) -> Config {
    Config::from_raw(RawConfig::from_hf_json(preset_config(name).unwrap(), std::path::Path::new(name)).unwrap()).unwrap()
}

fn local(c: &Config) -> Vec<usize> {
    c.layers.iter().enumerate().filter(|(_, l)| matches!(l.attention().unwrap().scope, AttentionScope::Local { .. })).map(|(i, _)| i).collect()
}

fn windows(c: &Config) -> Vec<usize> {
    let mut w: Vec<usize> = c
        .layers
        .iter()
        .filter_map(|l| match l.attention().unwrap().scope {
            AttentionScope::Local { window } => Some(window),
            _ => None,
        })
        .collect();
    w.dedup();
    w
}

fn close(a: f32, b: f64) -> bool {
    ((a as f64) - b).abs() < 1e-7
}

#[test]
fn gemma1_sizes() {
    for (name, kv) in [("gemma-2b", 1), ("gemma-7b", 16), ("codegemma-2b", 1), ("codegemma-7b", 16)] {
        let c = cfg(name);
        assert_eq!(c.family, Family::Gemma);
        assert_eq!(c.n_kv_heads, kv, "{name}");
        assert!(close(c.query_scale, 1.0 / 256f64.sqrt()), "{name}: head_dim^-1/2");
        assert!(c.layers.iter().all(|l| l.attention().unwrap().scope == AttentionScope::Global && l.attention().unwrap().rope == Rope { base: 10000.0, linear_factor: 1.0 }));
        assert_eq!((c.attn_softcap, c.final_softcap), (None, None));
        assert!(!c.sandwich_norms && !c.qk_norm);
    }
}

#[test]
fn gemma2_sizes() {
    // 27B scales queries by 1/sqrt(144) = 1/sqrt(d_model / heads), not 1/sqrt(head_dim = 128).
    // PaliGemma 2's text models are these three (convert_paligemma2_weights_to_hf.py: 256, 256, 4608 // 32).
    for (name, layers, scalar) in [
        ("gemma2-2b", 26, 256.0),
        ("gemma2-9b", 42, 256.0),
        ("gemma2-27b", 46, 144.0),
        ("paligemma2-3b", 26, 256.0),
        ("paligemma2-10b", 42, 256.0),
        ("paligemma2-28b", 46, 144.0),
    ] {
        let c = cfg(name);
        assert_eq!(c.n_layers, layers);
        assert!(close(c.query_scale, 1.0 / f64::sqrt(scalar)), "{name}: {}", c.query_scale);
        // Even layers slide (window 4096), odd layers are global.
        assert_eq!(local(&c), (0..layers).step_by(2).collect::<Vec<_>>(), "{name}");
        assert_eq!(windows(&c), vec![4096]);
        assert_eq!((c.attn_softcap, c.final_softcap), (Some(50.0), Some(30.0)), "{name}");
        assert!(c.sandwich_norms && !c.qk_norm);
        assert!(c.layers.iter().all(|l| l.attention().unwrap().rope == Rope { base: 10000.0, linear_factor: 1.0 }));
    }
}

#[test]
fn gemma3_sizes() {
    for (name, layers, window, scalar, factor) in [
        ("gemma3-270m", 18, 512, 256.0, 1.0),
        ("gemma3-1b", 26, 512, 256.0, 1.0),
        ("gemma3-4b", 34, 1024, 256.0, 8.0),
        ("gemma3-12b", 48, 1024, 256.0, 8.0),
        ("gemma3-27b", 62, 1024, 168.0, 8.0),
    ] {
        let c = cfg(name);
        assert_eq!(c.family, Family::Gemma3);
        assert_eq!(c.n_layers, layers);
        assert!(close(c.query_scale, 1.0 / f64::sqrt(scalar)), "{name}");
        // Five local layers, then one global: layer i is global iff (i + 1) % 6 == 0.
        let want: Vec<usize> = (0..layers).filter(|i| (i + 1) % 6 != 0).collect();
        assert_eq!(local(&c), want, "{name}");
        assert_eq!(windows(&c), vec![window], "{name}");
        for l in &c.layers {
            let want = match l.attention().unwrap().scope {
                // Local layers: base 10k, never scaled. Global layers: base 1M, linear factor 8 from 4B up.
                AttentionScope::Local { .. } => Rope { base: 10000.0, linear_factor: 1.0 },
                AttentionScope::Global => Rope { base: 1_000_000.0, linear_factor: factor },
            };
            assert_eq!(l.attention().unwrap().rope, want, "{name}");
        }
        assert_eq!((c.attn_softcap, c.final_softcap), (None, None), "{name}");
        assert!(c.sandwich_norms && c.qk_norm);
    }
}

/// Gemma 4 presets (legacy Hub spelling) as the engine reads them: layer counts, which layers are global,
/// which share their KV (and from where), K = V, double-wide MLP, PLE and MoE.
#[test]
fn gemma4_sizes() {
    for (name, layers, window, pattern, shared, k_eq_v, global_kv) in [
        ("gemma4-e2b", 35, 512, 5, 20, false, 1),
        ("gemma4-e4b", 42, 512, 6, 18, false, 2),
        ("gemma4-26b-a4b", 30, 1024, 6, 0, true, 2),
        ("gemma4-31b", 60, 1024, 6, 0, true, 4),
    ] {
        let c = cfg(name);
        assert_eq!(c.family, Family::Gemma4, "{name}");
        assert_eq!(c.n_layers, layers);
        let want: Vec<usize> = (0..layers).filter(|i| (i + 1) % pattern != 0).collect();
        assert_eq!(local(&c), want, "{name}");
        assert_eq!(windows(&c), vec![window], "{name}");
        let first_shared = layers - shared;
        for (i, l) in c.layers.iter().enumerate() {
            let a = l.attention().unwrap();
            let global = a.scope == AttentionScope::Global;
            assert_eq!(a.head_dim, if global { 512 } else { 256 }, "{name} {i}");
            assert_eq!(a.k_eq_v, k_eq_v && global, "{name} {i}");
            if global && k_eq_v {
                assert_eq!(a.n_kv_heads, global_kv, "{name} {i}");
            }
            assert_eq!(a.kv_source.is_some(), i >= first_shared, "{name} {i}");
            if let Some(src) = a.kv_source {
                // The last non-shared layer of the same type.
                let same = |j: usize| (c.layers[j].attention().unwrap().scope == AttentionScope::Global) == global;
                assert_eq!(Some(src), (0..first_shared).rev().find(|&j| same(j)), "{name} {i}");
            }
            let double = name == "gemma4-e2b" && i >= first_shared;
            assert_eq!(l.ffn_dim, c.ffn_dim * if double { 2 } else { 1 }, "{name} {i}");
        }
        assert_eq!(c.per_layer_input.map(|p| p.dim), if shared > 0 { Some(256) } else { None }, "{name}");
        assert_eq!(c.moe.map(|m| (m.n_experts, m.top_k, m.ffn_dim)), if name == "gemma4-26b-a4b" { Some((128, 8, 704)) } else { None }, "{name}");
        assert_eq!(c.final_softcap, Some(30.0), "{name}");
    }
}

#[test]
fn bad_configs_name_the_field() {
    let base = preset_config("gemma3-1b").unwrap()["text_config"].clone();
    let base = if base.is_null() { preset_config("gemma3-1b").unwrap().clone() } else { base };
    let try_with = |k: &str, v: serde_json::Value| -> String {
        let mut j = base.clone();
        j[k] = v;
        let raw = RawConfig::from_hf_json(&j, std::path::Path::new("config.json"));
        match raw.and_then(Config::from_raw) {
            Ok(_) => panic!("{k} accepted"),
            Err(e) => e.to_string(),
        }
    };
    assert!(try_with("model_type", "llama".into()).contains("unknown architecture `llama`"));
    assert!(try_with("num_key_value_heads", 3.into()).contains("`num_key_value_heads`"));
    assert!(try_with("num_attention_heads", "four".into()).contains("`num_attention_heads`"));
    assert!(try_with("hidden_activation", "silu".into()).contains("`hidden_activation`"));
    assert!(try_with("layer_types", serde_json::json!(["full_attention"])).contains("`layer_types`"));
    assert!(try_with("rope_scaling", serde_json::json!({"rope_type": "yarn", "factor": 2.0})).contains("yarn"));
}

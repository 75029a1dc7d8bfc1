//! GGUF metadata → configuration: llama.cpp's defaults and the errors that name the key.

use super::super::{AttentionScope, Config};
use super::raw_config;
use crate::formats::gguf::{parse, GgufFile, GgufWriter, Value};
use crate::quant::DType;
use crate::{Error, Result};

fn parse_vec(img: Vec<u8>) -> Result<GgufFile> {
    parse(
        std::path::Path::new("t.gguf"),
        crate::formats::Bytes::from_vec(img),
    )
}

/// A metadata-only Gemma file: the `{arch}.*` keys of a small model plus a token_embd tensor (8 × 64).
fn meta(arch: &str, extra: &[(&str, Value)], skip: &[&str]) -> GgufFile {
    let mut w = GgufWriter::new();
    w.add("general.architecture", Value::String(arch.into()));
    let base = [
        ("context_length", Value::U32(1024)),
        ("embedding_length", Value::U32(64)),
        ("block_count", Value::U32(12)),
        ("feed_forward_length", Value::U32(128)),
        ("attention.head_count", Value::U32(4)),
        ("attention.layer_norm_rms_epsilon", Value::F32(1e-6)),
    ];
    for (k, v) in base {
        if !skip.contains(&k) {
            w.add(format!("{arch}.{k}"), v);
        }
    }
    for (k, v) in extra {
        w.add(format!("{arch}.{k}"), v.clone());
    }
    w.add_tensor(
        "token_embd.weight",
        DType::F32,
        &[8, 64],
        vec![0u8; 8 * 64 * 4],
    );
    parse_vec(w.to_bytes().unwrap()).unwrap()
}

fn config(f: &GgufFile) -> Result<Config> {
    Config::from_raw(raw_config(f)?)
}

#[test]
fn gemma3_defaults_follow_llamacpp() {
    let c = config(&meta(
        "gemma3",
        &[("attention.sliding_window", Value::U32(512))],
        &[],
    ))
    .unwrap();
    // No key_length: n_embd / n_head = 16; no head_count_kv: n_head; no freq_base: 10000.
    assert_eq!(
        (c.head_dim, c.n_kv_heads, c.vocab_size, c.context_len),
        (16, 4, 8, 1024)
    );
    assert_eq!(c.query_scale, 0.25);
    for (i, l) in c.layers.iter().enumerate() {
        let global = (i + 1) % 6 == 0;
        assert_eq!(
            l.attention().unwrap().scope == AttentionScope::Global,
            global,
            "layer {i}"
        );
        assert_eq!(l.attention().unwrap().rope.base, 10000.0);
    }
    assert_eq!((c.attn_softcap, c.final_softcap), (None, None));
    // The family's token defaults when the tokenizer keys are absent.
    assert_eq!((c.bos_id, c.eos_ids.clone(), c.pad_id), (2, vec![1], 0));
}

#[test]
fn gemma3_sliding_window_pattern_key() {
    let c = config(&meta(
        "gemma3",
        &[
            ("attention.sliding_window", Value::U32(8)),
            ("attention.sliding_window_pattern", Value::U32(4)),
        ],
        &[],
    ))
    .unwrap();
    let global: Vec<bool> = c.layers.iter().map(|l| l.attention().unwrap().scope == AttentionScope::Global).collect();
    assert_eq!(global, (0..global.len()).map(|i| i % 4 == 3).collect::<Vec<_>>());
}

#[test]
fn gemma3_without_window_is_all_global() {
    let c = config(&meta("gemma3", &[], &[])).unwrap();
    assert!(c
        .layers
        .iter()
        .all(|l| l.attention().unwrap().scope == AttentionScope::Global));
}

#[test]
fn gemma3_linear_rope_scaling_applies_to_global_layers_only() {
    let extra = [
        ("attention.sliding_window", Value::U32(1024)),
        ("rope.freq_base", Value::F32(1e6)),
        ("rope.scaling.type", Value::String("linear".into())),
        ("rope.scaling.factor", Value::F32(8.0)),
    ];
    let c = config(&meta("gemma3", &extra, &[])).unwrap();
    for l in &c.layers {
        match l.attention().unwrap().scope {
            AttentionScope::Global => assert_eq!(
                (
                    l.attention().unwrap().rope.base,
                    l.attention().unwrap().rope.linear_factor
                ),
                (1e6, 8.0)
            ),
            AttentionScope::Local { window } => assert_eq!(
                (
                    window,
                    l.attention().unwrap().rope.base,
                    l.attention().unwrap().rope.linear_factor
                ),
                (1024, 1e4, 1.0)
            ),
        }
    }
    // Type "none" disables the factor; YaRN is refused.
    let mut none = extra.to_vec();
    none[2].1 = Value::String("none".into());
    assert!(config(&meta("gemma3", &none, &[]))
        .unwrap()
        .layers
        .iter()
        .all(|l| l.attention().unwrap().rope.linear_factor == 1.0));
    let mut yarn = extra.to_vec();
    yarn[2].1 = Value::String("yarn".into());
    let e = config(&meta("gemma3", &yarn, &[])).unwrap_err().to_string();
    assert!(
        e.contains("gemma3.rope.scaling.type") && e.contains("yarn"),
        "{e}"
    );
}

#[test]
fn the_27b_query_scale() {
    // Gemma 3 27B: 62 blocks, n_embd 5376, 32 heads, head size 128 → 1/sqrt(168).
    let extra = [
        ("block_count", Value::U32(62)),
        ("embedding_length", Value::U32(5376)),
        ("attention.head_count", Value::U32(32)),
        ("attention.key_length", Value::U32(128)),
        ("attention.value_length", Value::U32(128)),
    ];
    let mut w = GgufWriter::new();
    w.add("general.architecture", Value::String("gemma3".into()));
    for (k, v) in extra.iter().cloned().chain([
        ("context_length", Value::U32(8)),
        ("feed_forward_length", Value::U32(64)),
        ("attention.layer_norm_rms_epsilon", Value::F32(1e-6)),
    ]) {
        w.add(format!("gemma3.{k}"), v);
    }
    w.add_tensor(
        "token_embd.weight",
        DType::F32,
        &[1, 5376],
        vec![0u8; 5376 * 4],
    );
    let f = parse_vec(w.to_bytes().unwrap()).unwrap();
    assert_eq!(raw_config(&f).unwrap().query_pre_attn_scalar, Some(168.0));
    // Gemma 2 27B is recognised by its 46 blocks: n_embd / n_head (here 64 / 4), not the head size 8.
    let extra2 = [
        ("block_count", Value::U32(46)),
        ("embedding_length", Value::U32(64)),
        ("attention.head_count", Value::U32(4)),
        ("attention.key_length", Value::U32(8)),
        ("attention.value_length", Value::U32(8)),
    ];
    let f = meta(
        "gemma2",
        &extra2,
        &["block_count", "embedding_length", "attention.head_count"],
    );
    assert_eq!(raw_config(&f).unwrap().query_pre_attn_scalar, Some(16.0));
}

#[test]
fn gemma2_defaults_follow_llamacpp() {
    let c = config(&meta("gemma2", &[], &[])).unwrap();
    assert_eq!((c.attn_softcap, c.final_softcap), (Some(50.0), Some(30.0)));
    for (i, l) in c.layers.iter().enumerate() {
        let want = if i % 2 == 0 {
            AttentionScope::Local { window: 4096 }
        } else {
            AttentionScope::Global
        };
        assert_eq!(l.attention().unwrap().scope, want, "layer {i}");
    }
    let c = config(&meta(
        "gemma2",
        &[
            ("attn_logit_softcapping", Value::F32(0.0)),
            ("attention.sliding_window", Value::U32(7)),
        ],
        &[],
    ))
    .unwrap();
    assert_eq!(c.attn_softcap, None);
    assert_eq!(
        c.layers[0].attention().unwrap().scope,
        AttentionScope::Local { window: 7 }
    );
}

#[test]
fn gemma1_is_all_global_without_softcaps() {
    let c = config(&meta(
        "gemma",
        &[("attention.head_count_kv", Value::U32(1))],
        &[],
    ))
    .unwrap();
    assert!(c
        .layers
        .iter()
        .all(|l| l.attention().unwrap().scope == AttentionScope::Global));
    assert_eq!(
        (
            c.n_kv_heads,
            c.attn_softcap,
            c.final_softcap,
            c.qk_norm,
            c.sandwich_norms
        ),
        (1, None, None, false, false)
    );
}

#[test]
fn metadata_errors_name_the_key() {
    match raw_config(&meta("llama", &[], &[])) {
        Err(Error::UnknownArchitecture(a)) => assert_eq!(a, "llama"),
        other => panic!("{other:?}"),
    }
    let e = raw_config(&meta("gemma3", &[], &["block_count"]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("gemma3.block_count") && e.contains("missing"),
        "{e}"
    );
    let e = raw_config(&meta(
        "gemma3",
        &[
            ("attention.key_length", Value::U32(16)),
            ("attention.value_length", Value::U32(32)),
        ],
        &[],
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("value_length"), "{e}");
    let e = raw_config(&meta("gemma3", &[], &["embedding_length"]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("gemma3.embedding_length"), "{e}");
    let e = raw_config(&meta(
        "gemma2",
        &[("attention.sliding_window", Value::String("wide".into()))],
        &[],
    ))
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("gemma2.attention.sliding_window") && e.contains("string"),
        "{e}"
    );
    // Per-layer arrays are accepted when uniform.
    let ok = meta(
        "gemma3",
        &[(
            "attention.head_count_kv",
            Value::Array(vec![Value::U32(2); 12]),
        )],
        &[],
    );
    assert_eq!(config(&ok).unwrap().n_kv_heads, 2);
    let mixed = meta(
        "gemma3",
        &[(
            "attention.head_count_kv",
            Value::Array(vec![Value::U32(2), Value::U32(4)]),
        )],
        &[],
    );
    assert!(raw_config(&mixed)
        .unwrap_err()
        .to_string()
        .contains("differ"));
}

#[test]
fn end_of_generation_ids() {
    let mut w = GgufWriter::new();
    w.add("general.architecture", Value::String("gemma3".into()));
    for (k, v) in [
        ("context_length", 8u32),
        ("embedding_length", 64),
        ("block_count", 1),
        ("feed_forward_length", 64),
        ("attention.head_count", 4),
    ] {
        w.add(format!("gemma3.{k}"), Value::U32(v));
    }
    w.add("gemma3.attention.layer_norm_rms_epsilon", Value::F32(1e-6));
    w.add("tokenizer.ggml.eos_token_id", Value::U32(1));
    let toks = ["<pad>", "<eos>", "<bos>", "<end_of_turn>"]
        .map(|t| Value::String(t.into()))
        .to_vec();
    w.add("tokenizer.ggml.tokens", Value::Array(toks));
    w.add_tensor(
        "token_embd.weight",
        DType::F32,
        &[4, 64],
        vec![0u8; 4 * 64 * 4],
    );
    let f = parse_vec(w.to_bytes().unwrap()).unwrap();
    assert_eq!(raw_config(&f).unwrap().eos_token_ids, Some(vec![1, 3]));
}

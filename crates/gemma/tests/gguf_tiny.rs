//! The GGUF model path end to end on the tiny random checkpoints of `tests/fixtures/tiny/`: each is converted
//! here as llama.cpp's `convert_hf_to_gguf.py` would (llama.cpp tensor names, Gemma norms stored as `1 + w`,
//! the `{arch}.*` keys), loaded through `formats::gguf`, and must give transformers' reference logits.
//! Gemma 2's tiny case uses `query_pre_attn_scalar` 24 ≠ head_dim, which GGUF cannot express (llama.cpp
//! derives the scale from the head size except for the 27B models), so for it only the configuration is
//! compared.

use std::path::{Path, PathBuf};

use gemma::formats::gguf::{self, GgufWriter, Value};
use gemma::formats::{safetensors, Bytes};
use gemma::kernels::ThreadPool;
use gemma::model::{AttentionScope, Chunk, Config, Family, LogitsWanted, Scratch};
use gemma::quant::DType;

fn tiny(case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny").join(case)
}

/// The llama.cpp name of a transformers tensor name.
fn gguf_name(hf: &str, family: Family) -> String {
    match hf {
        "model.embed_tokens.weight" => return "token_embd.weight".into(),
        "model.norm.weight" => return "output_norm.weight".into(),
        "lm_head.weight" => return "output.weight".into(),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.").unwrap_or_else(|| panic!("unexpected tensor {hf}"));
    let (i, sub) = rest.split_once('.').unwrap();
    let sub = sub.strip_suffix(".weight").unwrap();
    let g = match sub {
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "self_attn.q_norm" => "attn_q_norm",
        "self_attn.k_norm" => "attn_k_norm",
        "input_layernorm" => "attn_norm",
        // Gemma 1's only pre-MLP norm is transformers' `post_attention_layernorm`.
        "post_attention_layernorm" if family == Family::Gemma => "ffn_norm",
        "post_attention_layernorm" => "post_attention_norm",
        "pre_feedforward_layernorm" => "ffn_norm",
        "post_feedforward_layernorm" => "post_ffw_norm",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        other => panic!("unexpected tensor {other}"),
    };
    format!("blk.{i}.{g}.weight")
}

/// Convert a tiny checkpoint folder to a GGUF image, as llama.cpp's converter lays it out.
fn convert(dir: &Path) -> (Config, Vec<u8>) {
    let cfg = Config::from_hf_file(&dir.join("config.json")).unwrap();
    let arch = match cfg.family {
        Family::Gemma => "gemma",
        Family::Gemma2 => "gemma2",
        Family::Gemma3 => "gemma3",
        Family::RecurrentGemma | Family::Gemma4 => unreachable!("llama.cpp has no RecurrentGemma; this test writes no gemma4 file"),
    };
    let mut w = GgufWriter::new();
    let u = |v: usize| Value::U32(v as u32);
    w.add("general.architecture", Value::String(arch.into()));
    w.add(format!("{arch}.context_length"), u(cfg.context_len));
    w.add(format!("{arch}.embedding_length"), u(cfg.d_model));
    w.add(format!("{arch}.block_count"), u(cfg.n_layers));
    w.add(format!("{arch}.feed_forward_length"), u(cfg.ffn_dim));
    w.add(format!("{arch}.attention.head_count"), u(cfg.n_heads));
    w.add(format!("{arch}.attention.head_count_kv"), u(cfg.n_kv_heads));
    w.add(format!("{arch}.attention.key_length"), u(cfg.head_dim));
    w.add(format!("{arch}.attention.value_length"), u(cfg.head_dim));
    w.add(format!("{arch}.attention.layer_norm_rms_epsilon"), Value::F32(cfg.norm_eps));
    let global = cfg.layers.iter().find(|l| l.attention().unwrap().scope == AttentionScope::Global).unwrap();
    w.add(format!("{arch}.rope.freq_base"), Value::F32(global.attention().unwrap().rope.base));
    let window = cfg.layers.iter().find_map(|l| match l.attention().unwrap().scope {
        AttentionScope::Local { window } => Some(window),
        AttentionScope::Global => None,
    });
    if let Some(window) = window {
        w.add(format!("{arch}.attention.sliding_window"), u(window));
    }
    if let Some(c) = cfg.attn_softcap {
        w.add(format!("{arch}.attn_logit_softcapping"), Value::F32(c));
    }
    if let Some(c) = cfg.final_softcap {
        w.add(format!("{arch}.final_logit_softcapping"), Value::F32(c));
    }
    w.add("tokenizer.ggml.bos_token_id", u(cfg.bos_id as usize));
    w.add("tokenizer.ggml.eos_token_id", u(cfg.eos_ids[0] as usize));
    w.add("tokenizer.ggml.padding_token_id", u(cfg.pad_id as usize));

    let store = safetensors::load_dir(dir).unwrap();
    for (name, t) in &store.tensors {
        let mut v = t.to_f32_vec();
        if name.ends_with("norm.weight") {
            // convert_hf_to_gguf.py: Gemma norms are written as 1 + w.
            v.iter_mut().for_each(|x| *x += 1.0);
        }
        let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        w.add_tensor(gguf_name(name, cfg.family), DType::F32, &t.shape, bytes);
    }
    (cfg, w.to_bytes().unwrap())
}

fn load_case(case: &str) -> (Config, gguf::GgufFile) {
    let (hf, img) = convert(&tiny(case));
    let file = gguf::parse(Path::new(&format!("{case}.gguf")), Bytes::from_vec(img)).unwrap();
    (hf, file)
}

#[test]
fn tiny_gguf_models_give_transformers_logits() {
    let pool = ThreadPool::new(2);
    for case in ["gemma_mqa", "gemma_mha", "gemma3"] {
        let (hf, file) = load_case(case);
        let model = gemma::load::model_from_gguf(&file).unwrap();
        let c = &model.config;
        // Same configuration as the Hugging Face one, field by field where GGUF can express it.
        assert_eq!((c.family, c.vocab_size, c.d_model, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim, c.ffn_dim), (hf.family, hf.vocab_size, hf.d_model, hf.n_layers, hf.n_heads, hf.n_kv_heads, hf.head_dim, hf.ffn_dim), "{case}");
        assert_eq!((c.query_scale, c.attn_softcap, c.final_softcap, &c.layers), (hf.query_scale, hf.attn_softcap, hf.final_softcap, &hf.layers), "{case}");

        let expected: serde_json::Value = serde_json::from_slice(&std::fs::read(tiny(case).join("expected.json")).unwrap()).unwrap();
        let ids: Vec<u32> = expected["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        let mut state = model.new_state(ids.len());
        let mut scratch = Scratch::new();
        model.forward(&pool, &mut [Chunk::new(&ids, &mut state, LogitsWanted::All)], &mut scratch).unwrap();
        let got = scratch.logits(0, c.vocab_size);
        let mut max_diff = 0f32;
        for (t, row) in expected["logits"].as_array().unwrap().iter().enumerate() {
            for (j, v) in row.as_array().unwrap().iter().enumerate() {
                max_diff = max_diff.max((got[t * c.vocab_size + j] - v.as_f64().unwrap() as f32).abs());
            }
        }
        eprintln!("{case}: max |logit - transformers| = {max_diff:e}");
        assert!(max_diff < 1e-3, "{case}: max |logit - transformers| = {max_diff}");
    }
}

#[test]
fn tiny_gemma2_config_follows_llamacpp() {
    let (hf, file) = load_case("gemma2");
    let c = Config::from_raw(gemma::model::config::gguf::raw_config(&file).unwrap()).unwrap();
    assert_eq!((&c.layers, c.attn_softcap, c.final_softcap), (&hf.layers, hf.attn_softcap, hf.final_softcap));
    // llama.cpp scales queries by 1/sqrt(head_dim) for every Gemma 2 but the 27B; the checkpoint's 24 is lost.
    assert_eq!(c.query_scale, 1.0 / 4.0);
    assert_ne!(hf.query_scale, c.query_scale);
}

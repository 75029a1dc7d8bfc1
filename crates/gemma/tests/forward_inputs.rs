//! What `Model::forward` accepts and refuses, and the one config path for every family member:
//! - typed errors a caller can branch on (out-of-vocabulary id, context full, a state from another model),
//!   each returned before any state is touched;
//! - ready-made embedding rows in place of token embeddings (the input image features will use);
//! - RecurrentGemma and PaliGemma configs parsed and validated by `Config`, errors naming file and field.

use std::path::{Path, PathBuf};

use gemma::kernels::ThreadPool;
use gemma::model::{Chunk, Config, EmbeddingRows, LogitsWanted, Mixer, Model, Scratch};
use gemma::Error;

fn tiny(case: &str) -> Model {
    gemma::load(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny").join(case)).unwrap()
}

#[test]
fn errors_are_typed_and_leave_every_state_untouched() {
    let (a, b) = (tiny("gemma_mqa"), tiny("gemma3"));
    let pool = ThreadPool::new(2);
    let mut s = Scratch::new();
    let (mut sa, mut sb) = (a.new_state(16), a.new_state(4));
    let ok = [2u32, 5, 6];
    let too_long = [2u32, 5, 6, 7, 8];
    let bad_id = [2u32, a.config.vocab_size as u32];
    // Context full: the second chunk is refused, and the first chunk's state is not advanced either.
    let e = a.forward(&pool, &mut [Chunk::new(&ok, &mut sa, LogitsWanted::Last), Chunk::new(&too_long, &mut sb, LogitsWanted::Last)], &mut s).unwrap_err();
    assert!(matches!(e, Error::ContextFull { needed: 5, max_pos: 4 }), "{e:?}");
    assert_eq!((sa.pos, sb.pos), (0, 0));
    let e = a.forward(&pool, &mut [Chunk::new(&bad_id, &mut sa, LogitsWanted::Last)], &mut s).unwrap_err();
    assert!(matches!(e, Error::TokenOutOfVocab { id, vocab_size } if id as usize == vocab_size), "{e:?}");
    // A state made for another model (other layer count and KV width) is refused before any chunk runs.
    let mut foreign = b.new_state(16);
    let e = a.forward(&pool, &mut [Chunk::new(&ok, &mut sa, LogitsWanted::Last), Chunk::new(&ok, &mut foreign, LogitsWanted::Last)], &mut s).unwrap_err();
    assert!(matches!(e, Error::ForeignState { .. }), "{e:?}");
    assert_eq!((sa.pos, foreign.pos), (0, 0));
    // And the refused calls changed nothing: the same state still computes what a fresh one does.
    a.forward(&pool, &mut [Chunk::new(&ok, &mut sa, LogitsWanted::Last)], &mut s).unwrap();
    let got = s.logits(0, a.config.vocab_size).to_vec();
    let mut fresh = a.new_state(16);
    a.forward(&pool, &mut [Chunk::new(&ok, &mut fresh, LogitsWanted::Last)], &mut s).unwrap();
    assert_eq!(got, s.logits(0, a.config.vocab_size));
}

#[test]
fn embedding_rows_replace_token_embeddings() {
    let m = tiny("gemma2");
    let (pool, mut s) = (ThreadPool::new(1), Scratch::new());
    let d = m.config.d_model;
    let ids = [2u32, 17, 33, 41, 5, 9];
    let mut st = m.new_state(16);
    m.forward(&pool, &mut [Chunk::new(&ids, &mut st, LogitsWanted::All)], &mut s).unwrap();
    let want = s.logits(0, m.config.vocab_size).to_vec();
    // Rows 2..4 given ready-made as their own scaled embeddings, the tokens there replaced by a placeholder:
    // the same logits, bit for bit.
    let mut rows = vec![0f32; 2 * d];
    for (r, &tok) in ids[2..4].iter().enumerate() {
        m.weights.embed.dequantize_row(tok as usize, &mut rows[r * d..(r + 1) * d]);
        rows[r * d..(r + 1) * d].iter_mut().for_each(|v| *v *= m.embed_scale);
    }
    let placeholder = [2u32, 17, 0, 0, 5, 9];
    let given = [EmbeddingRows { at: 2, data: &rows }];
    let mut st = m.new_state(16);
    let mut ch = Chunk::new(&placeholder, &mut st, LogitsWanted::All);
    ch.rows = &given;
    m.forward(&pool, &mut [ch], &mut s).unwrap();
    assert_eq!(want, s.logits(0, m.config.vocab_size));
    // Without the rows, the placeholders change the answer (the test can fail).
    let mut st = m.new_state(16);
    m.forward(&pool, &mut [Chunk::new(&placeholder, &mut st, LogitsWanted::All)], &mut s).unwrap();
    assert_ne!(want, s.logits(0, m.config.vocab_size));
    // Rows that do not fit the chunk, and spans outside it, are errors before anything runs.
    let bad = [EmbeddingRows { at: 5, data: &rows }];
    let mut st = m.new_state(16);
    let mut ch = Chunk::new(&placeholder, &mut st, LogitsWanted::All);
    ch.rows = &bad;
    assert!(matches!(m.forward(&pool, &mut [ch], &mut s), Err(Error::Invalid(_))));
    let spans = [0..7];
    let mut ch = Chunk::new(&placeholder, &mut st, LogitsWanted::All);
    ch.bidirectional = &spans;
    assert!(matches!(m.forward(&pool, &mut [ch], &mut s), Err(Error::Invalid(_))));
    assert_eq!(st.pos, 0);
}

fn config(v: serde_json::Value) -> gemma::Result<Config> {
    Config::from_hf_json(&v, Path::new("dir/config.json"))
}

fn config_err(v: serde_json::Value) -> String {
    let e = config(v).unwrap_err().to_string();
    assert!(e.starts_with("dir/config.json: field `"), "{e}");
    e
}

#[test]
fn recurrent_gemma_config_is_validated_by_the_one_config_path() {
    let c = config(serde_json::json!({"model_type": "recurrent_gemma", "num_hidden_layers": 5, "hidden_size": 64, "num_attention_heads": 4,
        "intermediate_size": 192, "lru_width": 80, "conv1d_width": 3, "attention_window_size": 8, "vocab_size": 100}))
    .unwrap();
    let kinds: Vec<&str> = c.layers.iter().map(|l| if matches!(l.mixer, Mixer::Recurrent(_)) { "R" } else { "A" }).collect();
    assert_eq!(kinds, ["R", "R", "A", "R", "R"]);
    assert_eq!((c.head_dim, c.n_kv_heads, c.ffn_dim, c.final_softcap), (16, 4, 96, Some(30.0)));
    let a = c.layers[2].attention().unwrap();
    assert_eq!((a.rotary_dims, a.scope), (8, gemma::model::AttentionScope::Local { window: 8 }));
    let r = c.layers[0].recurrent().unwrap();
    assert_eq!((r.lru_width, r.conv1d_width, r.n_blocks), (80, 3, 4));
    // Zero or inconsistent dimensions are errors naming the field (the summary used to divide by zero).
    let base = |k: &str, v: serde_json::Value| {
        let mut j = serde_json::json!({"model_type": "recurrent_gemma", "hidden_size": 64, "num_attention_heads": 4});
        j[k] = v;
        j
    };
    assert!(config_err(base("num_attention_heads", 0.into())).contains("`num_attention_heads`: must be positive"));
    assert!(config_err(base("lru_width", 66.into())).contains("`lru_width`"));
    assert!(config_err(base("conv1d_width", 0.into())).contains("`conv1d_width`"));
    assert!(config_err(base("block_types", serde_json::json!(["recurrent", "mamba"]))).contains("`block_types[1]`"));
    assert!(config_err(base("partial_rotary_factor", 0.3.into())).contains("`partial_rotary_factor`"));
}

#[test]
fn paligemma_config_is_validated_by_the_one_config_path() {
    let pali = |vision: serde_json::Value| {
        serde_json::json!({"model_type": "paligemma", "projection_dim": 64,
            "text_config": {"model_type": "gemma2", "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16},
            "vision_config": vision})
    };
    let c = config(pali(serde_json::json!({"hidden_size": 32, "num_attention_heads": 2, "image_size": 28, "patch_size": 14}))).unwrap();
    let v = c.vision.as_ref().unwrap();
    assert_eq!((c.family, v.tokens_per_image, v.encoder.head_dim()), (gemma::model::Family::Gemma2, 4, 16));
    assert_eq!(c.class_name(), "PaliGemmaForConditionalGeneration");
    let e = config_err(pali(serde_json::json!({"image_size": 30, "patch_size": 14})));
    assert!(e.contains("`vision_config.patch_size`"), "{e}");
    let e = config_err(pali(serde_json::json!({"num_attention_heads": 0})));
    assert!(e.contains("`vision_config.num_attention_heads`: must be positive"), "{e}");
    let e = config_err(pali(serde_json::json!({"hidden_size": 30, "num_attention_heads": 4})));
    assert!(e.contains("does not divide"), "{e}");
    let mut j = pali(serde_json::json!({}));
    j["projection_dim"] = 48.into();
    assert!(config_err(j).contains("`projection_dim`"));
    let mut j = pali(serde_json::json!({}));
    j["text_config"]["num_hidden_layers"] = 0.into();
    assert!(config_err(j).contains("`text_config.num_hidden_layers`"));
    // Gemma 3's pooled tokens per image must tile the patch grid.
    let g3 = serde_json::json!({"model_type": "gemma3", "mm_tokens_per_image": 200, "text_config": {"model_type": "gemma3_text"}, "vision_config": {}});
    assert!(config_err(g3).contains("`mm_tokens_per_image`"));
}

/// Bidirectional spans reach the attention kernel: a span lets earlier positions see later ones (their logits
/// change), a one-position span is exactly causal, and the answer does not depend on how the positions after
/// the span are chunked (the span itself must lie inside one chunk).
#[test]
fn bidirectional_spans_are_honoured_on_every_path() {
    let m = tiny("gemma3");
    let (pool, mut s) = (ThreadPool::new(2), Scratch::new());
    let v = m.config.vocab_size;
    let ids: Vec<u32> = (0..14).map(|i| 2 + (i * 37) % 500).collect();
    let run = |spans: &[std::ops::Range<usize>], cuts: &[usize], s: &mut Scratch| -> Vec<f32> {
        let mut st = m.new_state(32);
        let mut out = Vec::new();
        let mut at = 0;
        for (k, &n) in cuts.iter().enumerate() {
            let mut ch = Chunk::new(&ids[at..at + n], &mut st, LogitsWanted::All);
            if k == 0 {
                ch.bidirectional = spans;
            }
            m.forward(&pool, &mut [ch], s).unwrap();
            out.extend_from_slice(s.logits(0, v));
            at += n;
        }
        out
    };
    let causal = run(&[], &[14], &mut s);
    let prefix = run(&[0..6], &[14], &mut s);
    assert_ne!(causal[..v], prefix[..v], "position 0 sees the span's later positions");
    assert_eq!(run(&[3..4], &[14], &mut s), causal, "a one-position span is causal");
    for cuts in [&[6, 8][..], &[6, 1, 1, 6], &[7, 3, 4]] {
        assert_eq!(run(&[0..6], cuts, &mut s), prefix, "{cuts:?}");
    }
}

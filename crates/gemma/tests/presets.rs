//! The architecture explorer against transformers: for every preset, the module tree must print exactly as
//! transformers' `print(model)` did in the family's release era, and the parameter count must equal
//! `sum(p.numel() for p in model.parameters())` of the model built from the same config on the meta device.
//! Fixtures: tests/fixtures/presets, made by tools/fixtures/make_presets.py.

use std::path::PathBuf;

use gemma::model::presets::{preset_config, PRESETS};
use gemma::model::summary::{explain, tree, Node};
use gemma::model::Config;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/presets")
}

fn arch(name: &str) -> Node {
    tree(&Config::from_hf_json(preset_config(name).unwrap(), std::path::Path::new(name)).unwrap())
}

/// The 2024 print of gemma-7b, as the engine's issue quotes it (transformers 4.38-4.43).
const GEMMA_7B_2024: &str = "GemmaForCausalLM(
  (model): GemmaModel(
    (embed_tokens): Embedding(256000, 3072, padding_idx=0)
    (layers): ModuleList(
      (0-27): 28 x GemmaDecoderLayer(
        (self_attn): GemmaSdpaAttention(
          (q_proj): Linear(in_features=3072, out_features=4096, bias=False)
          (k_proj): Linear(in_features=3072, out_features=4096, bias=False)
          (v_proj): Linear(in_features=3072, out_features=4096, bias=False)
          (o_proj): Linear(in_features=4096, out_features=3072, bias=False)
          (rotary_emb): GemmaRotaryEmbedding()
        )
        (mlp): GemmaMLP(
          (gate_proj): Linear(in_features=3072, out_features=24576, bias=False)
          (up_proj): Linear(in_features=3072, out_features=24576, bias=False)
          (down_proj): Linear(in_features=24576, out_features=3072, bias=False)
          (act_fn): PytorchGELUTanh()
        )
        (input_layernorm): GemmaRMSNorm()
        (post_attention_layernorm): GemmaRMSNorm()
      )
    )
    (norm): GemmaRMSNorm()
  )
  (lm_head): Linear(in_features=3072, out_features=256000, bias=False)
)";

#[test]
fn gemma_7b_prints_as_in_2024() {
    assert_eq!(arch("gemma-7b").repr(), GEMMA_7B_2024);
}

#[test]
fn gemma_2b_is_mqa() {
    let r = arch("gemma-2b").repr();
    assert!(r.contains("(q_proj): Linear(in_features=2048, out_features=2048, bias=False)"));
    assert!(r.contains("(k_proj): Linear(in_features=2048, out_features=256, bias=False)"));
    assert!(r.contains("(v_proj): Linear(in_features=2048, out_features=256, bias=False)"));
}

#[test]
fn every_preset_prints_like_transformers_of_its_era() {
    let mut failures = Vec::new();
    for (name, key) in PRESETS {
        // Gemma 4 first shipped in the reference transformers (5.24): its trees are in the top folder.
        let era = if key.starts_with("gemma-3") { "2025" } else if key.starts_with("gemma-4") { "" } else { "2024" };
        // CodeGemma is Gemma 1 with other weights: the same tree.
        let path = fixtures().join(era).join(format!("{}.txt", key.replace("codegemma", "gemma")));
        let want = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let got = arch(name).repr();
        if got.trim_end() != want.trim_end() {
            let line = got.lines().zip(want.lines()).position(|(a, b)| a != b).unwrap_or(0);
            failures.push(format!(
                "{name}: first difference at line {}:\n  ours: {:?}\n  transformers: {:?}",
                line + 1,
                got.lines().nth(line),
                want.lines().nth(line)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_preset_has_transformers_parameter_count() {
    let counts: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixtures().join("counts.json")).unwrap()).unwrap();
    for (name, key) in PRESETS {
        let want = counts["models"][key]["total"].as_u64().unwrap_or_else(|| panic!("no count for {key}"));
        assert_eq!(arch(name).params(), want, "{name}");
    }
}

/// The published sizes, rounded as the model names round them.
#[test]
fn counts_match_published_sizes() {
    for (name, billions) in [("gemma-2b", 2.5), ("gemma-7b", 8.5), ("gemma2-2b", 2.6), ("gemma2-9b", 9.2), ("gemma2-27b", 27.2), ("gemma3-1b", 1.0), ("gemma3-4b", 4.3), ("gemma3-12b", 12.2), ("gemma3-27b", 27.4), ("recurrentgemma-2b", 2.7), ("paligemma-3b", 2.9), ("paligemma2-3b", 3.0), ("paligemma2-10b", 9.7), ("paligemma2-28b", 27.7)] {
        let p = arch(name).params() as f64 / 1e9;
        assert!((p - billions).abs() < 0.05, "{name}: {p:.3}B");
    }
    let p = arch("gemma3-270m").params();
    assert!((p as f64 / 1e6 - 268.0).abs() < 1.0, "{p}");
}

/// Gemma 3 from 4B up is the whole multimodal model, as transformers builds Gemma3ForConditionalGeneration: the
/// SigLIP tower at 896 px, the projector (pooling 64 x 64 patches 4 x 4 to 256 tokens, norm, a bare matrix that
/// print(model) does not show but the count includes) and the text model, whose count is the text-only
/// Gemma3ForCausalLM's; 270M and 1B stay text-only.
#[test]
fn gemma3_multimodal_presets_are_the_whole_model() {
    let counts: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixtures().join("2025/counts.json")).unwrap()).unwrap();
    for (name, key, d) in [("gemma3-4b", "gemma-3-4b", 2560u64), ("gemma3-12b", "gemma-3-12b", 3840), ("gemma3-27b", "gemma-3-27b", 5376)] {
        let t = arch(name);
        let r = t.repr();
        assert!(r.starts_with("Gemma3ForConditionalGeneration(\n  (vision_tower): SiglipVisionModel(\n"), "{r}");
        assert!(r.contains("(position_embedding): Embedding(4096, 1152)"), "{r}");
        assert!(r.contains("(multi_modal_projector): Gemma3MultiModalProjector(\n    (mm_soft_emb_norm): Gemma3RMSNorm((1152,), eps=1e-06)\n    (avg_pool): AvgPool2d(kernel_size=4, stride=4, padding=0)\n  )"), "{r}");
        assert!(r.contains("(language_model): Gemma3ForCausalLM(\n"), "{r}");
        let want = &counts["models"][key];
        assert_eq!(want["class"], "Gemma3ForConditionalGeneration", "{key}");
        let part = |n: &str| t.children.iter().find(|(c, _)| c == n).unwrap().1.params();
        for m in ["vision_tower", "multi_modal_projector", "language_model"] {
            assert_eq!(part(m), want["top"][m].as_u64().unwrap(), "{name} {m}");
        }
        assert_eq!(part("multi_modal_projector"), 1152 * d + 1152, "{name}");
        assert_eq!(t.params(), want["total"].as_u64().unwrap(), "{name}");
    }
    for name in ["gemma3-270m", "gemma3-1b"] {
        assert!(arch(name).repr().starts_with("Gemma3ForCausalLM(\n"), "{name}");
    }
}

fn explained(name: &str) -> String {
    explain(&Config::from_hf_json(preset_config(name).unwrap(), std::path::Path::new(name)).unwrap())
}

/// The resolution variants differ only in the image: (size / 14)^2 patches, each one image token (and one row
/// of the vision tower's position embedding), the rest of the model unchanged.
#[test]
fn paligemma_resolutions_change_only_the_image_tokens() {
    for (small, large) in [("paligemma-3b", "paligemma-3b-896"), ("paligemma2-3b", "paligemma2-3b-448"), ("paligemma2-3b", "paligemma2-3b-896")] {
        let (a, b) = (arch(small), arch(large));
        let tokens = |n: &str| Config::from_hf_json(preset_config(n).unwrap(), std::path::Path::new(n)).unwrap().vision.unwrap().tokens_per_image;
        assert_eq!(b.params() - a.params(), ((tokens(large) - tokens(small)) * 1152) as u64, "{large}");
    }
    let r = arch("paligemma-3b-896").repr();
    assert!(r.contains("(position_embedding): Embedding(4096, 1152)"), "{r}");
}

#[test]
fn explain_states_what_an_image_costs() {
    let e = explained("paligemma-3b-896");
    assert!(e.contains("image_size = 896 px, patch_size = 14: SigLIP cuts an image into 64 x 64 = 4096 patches"), "{e}");
    assert!(e.contains("image tokens = 4096: every patch, projected to d_model (1152 -> 2048, with bias), is one position of the text stream"), "{e}");
    // 4096 of 8192 positions; MQA, 18 layers x 2 x 256 bf16 numbers = 18 KiB per position.
    assert!(e.contains("One image takes 4096 of the 8192 positions (50%) and 72.0 MiB of KV cache in bf16"), "{e}");
    // PaliGemma 1 has no sliding window; PaliGemma 2 at 896 px fills its 4096-position window, at 224 px it does not.
    assert!(!e.contains("sliding_window"), "{e}");
    let e = explained("paligemma2-3b-896");
    assert!(e.contains("fill the local layers' sliding_window = 4096: the prefix still attends to all of itself, but text after it reaches the first image rows only through the 13 global layers"), "{e}");
    assert!(!explained("paligemma2-3b").contains("fill the local layers"));
    assert!(explained("paligemma2-28b").contains("image tokens = 256: every patch, projected to d_model (1152 -> 4608, with bias)"));
    let e = explained("gemma3-4b");
    assert!(e.contains("image tokens = 256: the 4096 patch rows are average-pooled in 4 x 4 blocks"), "{e}");
}

/// Gemma 4 layers have their own widths: E2B's global layers (every fifth) use 512-wide heads, its last 20
/// layers share the KV of earlier ones (no k_proj/v_proj) and have a double-wide MLP; 26B's and 31B's global
/// layers have K = V (no v_proj) and their own KV head count; 26B adds the router and experts beside the MLP.
#[test]
fn gemma4_trees_use_per_layer_dims() {
    let t = arch("gemma4-e2b");
    let layers = &t.children[0].1.children.iter().find(|(n, _)| n == "layers").unwrap().1.children;
    let attn = |i: usize| layers[i].1.children[0].1.repr();
    assert!(attn(0).contains("(k_proj): Linear(in_features=1536, out_features=256, bias=False)"));
    assert!(attn(4).contains("(q_proj): Linear(in_features=1536, out_features=4096, bias=False)"));
    assert!(attn(4).contains("(k_proj): Linear(in_features=1536, out_features=512, bias=False)"));
    assert!(!attn(15).contains("k_proj") && !attn(34).contains("v_proj"));
    assert!(layers[15].1.repr().contains("(gate_proj): Linear(in_features=1536, out_features=12288, bias=False)"));
    assert!(layers[14].1.repr().contains("(gate_proj): Linear(in_features=1536, out_features=6144, bias=False)"));
    let r = arch("gemma4-31b").repr();
    assert!(r.contains("(k_proj): Linear(in_features=5376, out_features=2048, bias=False)\n          (o_proj)"), "{r}");
    let r = arch("gemma4-26b-a4b").repr();
    assert!(r.contains("(proj): Linear(in_features=2816, out_features=128, bias=False)"), "{r}");
    let e = explained("gemma4-e2b");
    assert!(e.contains("18.0 KiB with sharing, 42.0 KiB without (57% saved)"), "{e}");
}

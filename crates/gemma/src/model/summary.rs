//! The architecture explorer behind `gemma inspect`: the module tree of any family member printed as
//! transformers' `print(model)` printed it when that generation was released, parameter counts per module,
//! and (`--explain`) what each hyper-parameter controls and costs.
//!
//! The tree is built from the validated [`Config`] alone (no weights), so it works for presets and for
//! checkpoints of every family member, whether or not the engine runs it yet.

use std::fmt::Write;

use super::config::{AttentionScope, Config, Family, Mixer, Projector, SiglipConfig, VisionConfig};
use super::state::state_bytes;

/// A module of the tree: its class, constructor arguments (for leaves), own parameters and children.
#[derive(Debug, Clone)]
pub struct Node {
    pub class: String,
    /// What PyTorch's `extra_repr` prints inside the parentheses of a leaf.
    pub extra: String,
    /// Parameters owned directly by this module (not its children).
    pub own_params: u64,
    /// Tied to another module's parameters (not counted again in totals).
    pub tied: bool,
    pub children: Vec<(String, Node)>,
    /// A `ModuleList`: consecutive identical children print as `(0-27): 28 x ...`.
    pub is_list: bool,
}

impl Node {
    fn leaf(class: &str, extra: String, params: u64) -> Node {
        Node { class: class.into(), extra, own_params: params, tied: false, children: vec![], is_list: false }
    }
    fn parent(class: &str, children: Vec<(&str, Node)>) -> Node {
        Node {
            class: class.into(),
            extra: String::new(),
            own_params: 0,
            tied: false,
            children: children.into_iter().map(|(n, c)| (n.to_string(), c)).collect(),
            is_list: false,
        }
    }
    fn list(children: Vec<Node>) -> Node {
        Node {
            class: "ModuleList".into(),
            extra: String::new(),
            own_params: 0,
            tied: false,
            children: children.into_iter().enumerate().map(|(i, c)| (i.to_string(), c)).collect(),
            is_list: true,
        }
    }

    /// Parameters of this module and its children, tied ones not counted.
    pub fn params(&self) -> u64 {
        if self.tied {
            return 0;
        }
        self.own_params + self.children.iter().map(|(_, c)| c.params()).sum::<u64>()
    }

    /// PyTorch's `repr(module)`.
    pub fn repr(&self) -> String {
        if self.children.is_empty() {
            return format!("{}({})", self.class, self.extra);
        }
        let mut lines: Vec<String> = Vec::new();
        if self.is_list {
            // torch.nn.ModuleList.__repr__ groups runs of identical consecutive reprs.
            let reprs: Vec<String> = self.children.iter().map(|(_, c)| c.repr()).collect();
            let mut i = 0;
            while i < reprs.len() {
                let mut j = i;
                while j + 1 < reprs.len() && reprs[j + 1] == reprs[i] {
                    j += 1;
                }
                if j > i {
                    lines.push(format!("({}-{}): {} x {}", i, j, j - i + 1, reprs[i]));
                } else {
                    lines.push(format!("({}): {}", i, reprs[i]));
                }
                i = j + 1;
            }
        } else {
            lines = self.children.iter().map(|(n, c)| format!("({n}): {}", c.repr())).collect();
        }
        let mut s = format!("{}(\n", self.class);
        for l in lines {
            s.push_str(&indent(&l));
            s.push('\n');
        }
        s.push(')');
        s
    }

    /// Rows of a parameter table (torchinfo-like): path, class, parameters, down to `depth` levels; runs of
    /// identical list items are folded into one row.
    pub fn table(&self, depth: usize) -> Vec<(String, String, u64)> {
        let mut rows = Vec::new();
        self.table_rows("", 0, depth, &mut rows);
        rows
    }

    fn table_rows(&self, path: &str, level: usize, depth: usize, rows: &mut Vec<(String, String, u64)>) {
        if level >= depth {
            return;
        }
        let mut i = 0;
        while i < self.children.len() {
            let (name, c) = &self.children[i];
            let mut j = i;
            if self.is_list {
                let r = c.repr();
                while j + 1 < self.children.len() && self.children[j + 1].1.repr() == r {
                    j += 1;
                }
            }
            let p = if path.is_empty() { name.clone() } else { format!("{path}.{name}") };
            if j > i {
                let label = format!("{path}.{}-{}", i, j);
                let tied = if c.tied { " (tied)" } else { "" };
                rows.push((label.clone(), format!("{} x {}{tied}", j - i + 1, c.class), c.params() * (j - i + 1) as u64));
                c.table_rows(&format!("{path}.{i}"), level + 1, depth, rows);
            } else {
                let class = if c.tied { format!("{} (tied)", c.class) } else { c.class.clone() };
                rows.push((p.clone(), class, c.params()));
                c.table_rows(&p, level + 1, depth, rows);
            }
            i = j + 1;
        }
    }
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n")
}

fn linear(i: usize, o: usize, bias: bool) -> Node {
    let p = (i * o + if bias { o } else { 0 }) as u64;
    let b = if bias { "True" } else { "False" };
    Node::leaf("Linear", format!("in_features={i}, out_features={o}, bias={b}"), p)
}

/// Python's `repr(float)` for the epsilons we print (`1e-06`).
fn py_float(x: f64) -> String {
    if x != 0.0 && x.abs() < 1e-4 {
        let s = format!("{x:e}");
        let (m, e) = s.split_once('e').unwrap();
        let (sign, digits) = if let Some(d) = e.strip_prefix('-') { ("-", d) } else { ("+", e) };
        format!("{m}e{sign}{digits:0>2}")
    } else {
        format!("{x:?}")
    }
}

/// The module tree of any family member, as `print(model)` showed it in the transformers release that
/// introduced it: Gemma 1/2, RecurrentGemma and PaliGemma as 4.43 printed them, Gemma 3 as 4.50 did. A
/// config with a vision tower prints the whole multimodal model (PaliGemmaForConditionalGeneration,
/// Gemma3ForConditionalGeneration: SigLIP, projector, then the text model as its own `*ForCausalLM`); Gemma 3
/// 270M and 1B, text-only, print `Gemma3ForCausalLM`.
pub fn tree(c: &Config) -> Node {
    match (&c.vision, c.family) {
        (Some(v), _) if v.projector == Projector::PaliGemma => Node::parent(
            "PaliGemmaForConditionalGeneration",
            vec![
                ("vision_tower", siglip_tree(&v.encoder)),
                ("multi_modal_projector", Node::parent("PaliGemmaMultiModalProjector", vec![("linear", linear(v.encoder.d_model, v.projection_dim, true))])),
                ("language_model", decoder_tree(c)),
            ],
        ),
        (Some(v), _) if v.projector == Projector::Gemma3 => Node::parent(
            "Gemma3ForConditionalGeneration",
            vec![("vision_tower", siglip_tree(&v.encoder)), ("multi_modal_projector", gemma3_projector_tree(v)), ("language_model", decoder_tree(c))],
        ),
        (_, Family::RecurrentGemma) => recurrent_tree(c),
        (_, Family::Gemma4) => gemma4_tree(c),
        _ => decoder_tree(c),
    }
}

/// Gemma 3's projector: the patch grid average-pooled to `tokens_per_image` rows, an RMSNorm (1 + w) of the
/// vision width, and `mm_input_projection_weight` (vision width x text width, no bias), a bare parameter of the
/// module that print(model) does not list but the count includes.
fn gemma3_projector_tree(v: &VisionConfig) -> Node {
    let e = &v.encoder;
    let k = e.patches_per_side() / (v.tokens_per_image as f64).sqrt().round() as usize;
    let norm = Node::leaf("Gemma3RMSNorm", format!("({},), eps={}", e.d_model, py_float(e.norm_eps)), e.d_model as u64);
    let pool = Node::leaf("AvgPool2d", format!("kernel_size={k}, stride={k}, padding=0"), 0);
    let mut p = Node::parent("Gemma3MultiModalProjector", vec![("mm_soft_emb_norm", norm), ("avg_pool", pool)]);
    p.own_params = (e.d_model * v.projection_dim) as u64;
    p
}

/// transformers' names for a decoder generation, as printed in the release era: transformers 4.43 for
/// Gemma 1/2 (and RecurrentGemma, PaliGemma), 4.50 for Gemma 3.
fn decoder_tree(c: &Config) -> Node {
    let p = c.family.class_prefix();
    let d = c.d_model;
    // Shortest f32 decimal first, so that 1e-6f32 prints as Python prints 1e-06.
    let eps = py_float(c.norm_eps.to_string().parse().unwrap_or(1e-6));
    let norm = |n: usize| match c.family {
        // RMSNorm had no extra_repr before transformers 4.44 (the Gemma 1/2 era); Gemma 3's release printed it.
        Family::Gemma | Family::Gemma2 | Family::RecurrentGemma => Node::leaf(&format!("{p}RMSNorm"), String::new(), n as u64),
        Family::Gemma3 | Family::Gemma4 => Node::leaf(&format!("{p}RMSNorm"), format!("({n},), eps={eps}"), n as u64),
    };
    let rotary = || Node::leaf(&format!("{p}RotaryEmbedding"), String::new(), 0);
    let layers: Vec<Node> = (0..c.n_layers)
        .map(|_| {
            let mut attn = vec![
                ("q_proj", linear(d, c.q_dim(), false)),
                ("k_proj", linear(d, c.kv_dim(), false)),
                ("v_proj", linear(d, c.kv_dim(), false)),
                ("o_proj", linear(c.q_dim(), d, false)),
            ];
            let attn_class = match c.family {
                Family::Gemma3 => {
                    attn.push(("q_norm", norm(c.head_dim)));
                    attn.push(("k_norm", norm(c.head_dim)));
                    format!("{p}Attention")
                }
                _ => {
                    attn.push(("rotary_emb", rotary()));
                    format!("{p}SdpaAttention")
                }
            };
            let mlp = Node::parent(
                &format!("{p}MLP"),
                vec![
                    ("gate_proj", linear(d, c.ffn_dim, false)),
                    ("up_proj", linear(d, c.ffn_dim, false)),
                    ("down_proj", linear(c.ffn_dim, d, false)),
                    ("act_fn", Node::leaf("PytorchGELUTanh", String::new(), 0)),
                ],
            );
            let mut children = vec![("self_attn", Node::parent(&attn_class, attn)), ("mlp", mlp), ("input_layernorm", norm(d)), ("post_attention_layernorm", norm(d))];
            if c.sandwich_norms {
                children.push(("pre_feedforward_layernorm", norm(d)));
                children.push(("post_feedforward_layernorm", norm(d)));
            }
            Node::parent(&format!("{p}DecoderLayer"), children)
        })
        .collect();
    let (model_class, embed_class) = match c.family {
        Family::Gemma3 => ("Gemma3TextModel".to_string(), "Gemma3TextScaledWordEmbedding"),
        _ => (format!("{p}Model"), "Embedding"),
    };
    let mut model = vec![
        ("embed_tokens", Node::leaf(embed_class, format!("{}, {d}, padding_idx={}", c.vocab_size, c.pad_id), (c.vocab_size * d) as u64)),
        ("layers", Node::list(layers)),
        ("norm", norm(d)),
    ];
    if c.family == Family::Gemma3 {
        model.push(("rotary_emb", rotary()));
        model.push(("rotary_emb_local", rotary()));
    }
    let mut lm_head = linear(d, c.vocab_size, false);
    lm_head.tied = c.tie_embeddings;
    Node::parent(&format!("{p}ForCausalLM"), vec![("model", Node::parent(&model_class, model)), ("lm_head", lm_head)])
}

/// Gemma 4's text model as transformers 5.24 prints `Gemma4ForCausalLM` (the release that introduced it).
/// Every layer uses its own dimensions: global layers their `global_head_dim` and KV heads (q_norm/k_norm of
/// that width), KV-shared layers no k_proj/v_proj/k_norm/v_norm, K = V layers no v_proj, double-wide MLPs in
/// the shared layers. Norms print without extra_repr; v_norm and the router's norm have no weight, the
/// router's `scale` (d_model) and `per_expert_scale` (experts) and the experts' fused `gate_up_proj`
/// (experts x 2 moe_ffn x d_model) and `down_proj` (experts x d_model x moe_ffn) are bare parameters that
/// print(model) does not list but the count includes; `layer_scalar` is a buffer (not counted).
fn gemma4_tree(c: &Config) -> Node {
    let d = c.d_model;
    let norm = |n: usize| Node::leaf("Gemma4RMSNorm", String::new(), n as u64);
    let gelu = || Node::leaf("GELUTanh", String::new(), 0);
    let layers: Vec<Node> = c
        .layers
        .iter()
        .map(|l| {
            let a = l.attention().expect("Gemma 4 layers attend");
            let q_dim = c.n_heads * a.head_dim;
            let mut attn = vec![("q_proj", linear(d, q_dim, false)), ("q_norm", norm(a.head_dim))];
            if a.kv_source.is_none() {
                attn.push(("k_norm", norm(a.head_dim)));
                attn.push(("v_norm", norm(0)));
                attn.push(("k_proj", linear(d, a.kv_dim(), false)));
                if !a.k_eq_v {
                    attn.push(("v_proj", linear(d, a.kv_dim(), false)));
                }
            }
            attn.push(("o_proj", linear(q_dim, d, false)));
            let mlp = Node::parent(
                "Gemma4TextMLP",
                vec![("gate_proj", linear(d, l.ffn_dim, false)), ("up_proj", linear(d, l.ffn_dim, false)), ("down_proj", linear(l.ffn_dim, d, false)), ("act_fn", gelu())],
            );
            let mut children = vec![
                ("self_attn", Node::parent("Gemma4TextAttention", attn)),
                ("mlp", mlp),
                ("input_layernorm", norm(d)),
                ("post_attention_layernorm", norm(d)),
                ("pre_feedforward_layernorm", norm(d)),
                ("post_feedforward_layernorm", norm(d)),
            ];
            if let Some(m) = c.moe {
                let mut router = Node::parent("Gemma4TextRouter", vec![("norm", norm(0)), ("proj", linear(d, m.n_experts, false))]);
                router.own_params = (d + m.n_experts) as u64;
                let mut experts = Node::parent("Gemma4TextExperts", vec![("act_fn", gelu())]);
                experts.own_params = (m.n_experts * 3 * m.ffn_dim * d) as u64;
                children.push(("router", router));
                children.push(("experts", experts));
                children.push(("post_feedforward_layernorm_1", norm(d)));
                children.push(("post_feedforward_layernorm_2", norm(d)));
                children.push(("pre_feedforward_layernorm_2", norm(d)));
            }
            if let Some(p) = c.per_layer_input {
                children.push(("act_fn", gelu()));
                children.push(("per_layer_input_gate", linear(d, p.dim, false)));
                children.push(("per_layer_projection", linear(p.dim, d, false)));
                children.push(("post_per_layer_input_norm", norm(d)));
            }
            Node::parent("Gemma4TextDecoderLayer", children)
        })
        .collect();
    let embed = |rows: usize, cols: usize| Node::leaf("Gemma4TextScaledWordEmbedding", format!("{rows}, {cols}, padding_idx={}", c.pad_id), (rows * cols) as u64);
    let mut model = vec![
        ("embed_tokens", embed(c.vocab_size, d)),
        ("layers", Node::list(layers)),
        ("norm", norm(d)),
        ("rotary_emb", Node::leaf("Gemma4TextRotaryEmbedding", String::new(), 0)),
    ];
    if let Some(p) = c.per_layer_input {
        let w = c.n_layers * p.dim;
        model.push(("embed_tokens_per_layer", embed(p.vocab_size, w)));
        model.push(("per_layer_model_projection", linear(d, w, false)));
        model.push(("per_layer_projection_norm", norm(p.dim)));
    }
    let mut lm_head = linear(d, c.vocab_size, false);
    lm_head.tied = c.tie_embeddings;
    Node::parent("Gemma4ForCausalLM", vec![("model", Node::parent("Gemma4TextModel", model)), ("lm_head", lm_head)])
}

fn recurrent_tree(c: &Config) -> Node {
    let d = c.d_model;
    let norm = || Node::leaf("RecurrentGemmaRMSNorm", String::new(), d as u64);
    let mlp_w = c.ffn_dim;
    let layers = c
        .layers
        .iter()
        .map(|l| {
            let temporal = if let Mixer::Recurrent(r) = l.mixer {
                let w = r.lru_width;
                let block_w = w / r.n_blocks;
                let conv = (w * r.conv1d_width + w) as u64;
                // RG-LRU: a (lru_width) recurrence parameter, block-diagonal input and recurrence gates with biases.
                let rglru = (w + 2 * (r.n_blocks * block_w * block_w + w)) as u64;
                Node::parent(
                    "RecurrentGemmaRecurrentBlock",
                    vec![
                        ("linear_y", linear(d, w, true)),
                        ("linear_x", linear(d, w, true)),
                        ("linear_out", linear(w, d, true)),
                        (
                            "conv_1d",
                            Node::leaf(
                                "Conv1d",
                                format!("{w}, {w}, kernel_size=({},), stride=(1,), padding=({},), groups={w}", r.conv1d_width, r.conv1d_width - 1),
                                conv,
                            ),
                        ),
                        ("rg_lru", Node::leaf("RecurrentGemmaRglru", String::new(), rglru)),
                        ("act_fn", Node::leaf("PytorchGELUTanh", String::new(), 0)),
                    ],
                )
            } else {
                Node::parent(
                    "RecurrentGemmaSdpaAttention",
                    vec![
                        ("q_proj", linear(d, c.q_dim(), false)),
                        ("k_proj", linear(d, c.kv_dim(), false)),
                        ("v_proj", linear(d, c.kv_dim(), false)),
                        ("o_proj", linear(c.q_dim(), d, c.biases.attn_out)),
                        ("rotary_emb", Node::leaf("RecurrentGemmaRotaryEmbedding", String::new(), 0)),
                    ],
                )
            };
            let mlp = Node::parent(
                "RecurrentGemmaMlp",
                vec![
                    ("gate_proj", linear(d, mlp_w, c.biases.mlp)),
                    ("up_proj", linear(d, mlp_w, c.biases.mlp)),
                    ("down_proj", linear(mlp_w, d, c.biases.mlp)),
                    ("act_fn", Node::leaf("PytorchGELUTanh", String::new(), 0)),
                ],
            );
            Node::parent(
                "RecurrentGemmaDecoderLayer",
                vec![("temporal_pre_norm", norm()), ("temporal_block", temporal), ("channel_pre_norm", norm()), ("mlp_block", mlp)],
            )
        })
        .collect();
    let mut lm_head = linear(d, c.vocab_size, false);
    lm_head.tied = c.tie_embeddings;
    Node::parent(
        "RecurrentGemmaForCausalLM",
        vec![
            (
                "model",
                Node::parent(
                    "RecurrentGemmaModel",
                    vec![
                        ("embed_tokens", Node::leaf("Embedding", format!("{}, {d}, padding_idx={}", c.vocab_size, c.pad_id), (c.vocab_size * d) as u64)),
                        ("layers", Node::list(layers)),
                        ("final_norm", norm()),
                    ],
                ),
            ),
            ("lm_head", lm_head),
        ],
    )
}

fn siglip_tree(v: &SiglipConfig) -> Node {
    let d = v.d_model;
    let eps = py_float(v.norm_eps);
    let ln = || Node::leaf("LayerNorm", format!("({d},), eps={eps}, elementwise_affine=True, bias=True"), 2 * d as u64);
    let n_patches = v.n_patches();
    let layers = (0..v.n_layers)
        .map(|_| {
            Node::parent(
                "SiglipEncoderLayer",
                vec![
                    (
                        "self_attn",
                        Node::parent(
                            "SiglipSdpaAttention",
                            vec![("k_proj", linear(d, d, true)), ("v_proj", linear(d, d, true)), ("q_proj", linear(d, d, true)), ("out_proj", linear(d, d, true))],
                        ),
                    ),
                    ("layer_norm1", ln()),
                    (
                        "mlp",
                        Node::parent(
                            "SiglipMLP",
                            vec![
                                ("activation_fn", Node::leaf("PytorchGELUTanh", String::new(), 0)),
                                ("fc1", linear(d, v.ffn_dim, true)),
                                ("fc2", linear(v.ffn_dim, d, true)),
                            ],
                        ),
                    ),
                    ("layer_norm2", ln()),
                ],
            )
        })
        .collect();
    let p = v.patch_size;
    Node::parent(
        "SiglipVisionModel",
        vec![(
            "vision_model",
            Node::parent(
                "SiglipVisionTransformer",
                vec![
                    (
                        "embeddings",
                        Node::parent(
                            "SiglipVisionEmbeddings",
                            vec![
                                (
                                    "patch_embedding",
                                    Node::leaf("Conv2d", format!("3, {d}, kernel_size=({p}, {p}), stride=({p}, {p}), padding=valid"), (3 * p * p * d + d) as u64),
                                ),
                                ("position_embedding", Node::leaf("Embedding", format!("{n_patches}, {d}"), (n_patches * d) as u64)),
                            ],
                        ),
                    ),
                    ("encoder", Node::parent("SiglipEncoder", vec![("layers", Node::list(layers))])),
                    ("post_layernorm", ln()),
                ],
            ),
        )],
    )
}

/// Group digits: 2506172416 → "2,506,172,416".
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// "2.51B", "268M".
pub fn human(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2}B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.0}M", n as f64 / 1e6),
        n => thousands(n),
    }
}

/// Bytes in binary units.
pub fn bytes_human(b: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// KV-cache bytes for a decoder: per token across all layers (if every layer kept every position), and at
/// `ctx` positions with the sliding windows honoured. `elem` is bytes per cached number (2 for bf16). Each layer
/// counts its own key/value width; KV-shared layers (Gemma 4) keep no cache and count nothing.
pub fn kv_cache_bytes(c: &Config, ctx: usize, elem: usize) -> (u64, u64, u64) {
    let caching = || c.attention_layers().filter(|l| l.kv_source.is_none());
    let per_token: u64 = caching().map(|l| (2 * l.kv_dim() * elem) as u64).sum();
    let windowed: u64 = caching()
        .map(|l| {
            let positions = match l.scope {
                AttentionScope::Global => ctx as u64,
                AttentionScope::Local { window } => window.min(ctx) as u64,
            };
            positions * (2 * l.kv_dim() * elem) as u64
        })
        .sum();
    (per_token, per_token * ctx as u64, windowed)
}

/// What `gemma inspect` prints under the module tree (Python's `Model.summary()`): the total parameter
/// count, a table of the modules `depth` levels down (path, class, parameters), and the KV cache in bf16 per
/// token and at the full context, with and without the sliding windows. Ends with a newline.
pub fn report(c: &Config, depth: usize) -> String {
    let tree = tree(c);
    let total = tree.params();
    let mut s = format!("Total parameters: {} ({})\n\n", thousands(total), human(total));
    let rows = tree.table(depth);
    let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(10).max(6);
    let wc = rows.iter().map(|r| r.1.len()).max().unwrap_or(10).max(6);
    let _ = writeln!(s, "{:<w$}  {:<wc$}  {:>16}", "module", "class", "parameters");
    for (path, class, n) in rows {
        let _ = writeln!(s, "{path:<w$}  {class:<wc$}  {:>16}", thousands(n));
    }
    let (tok, full, win) = kv_cache_bytes(c, c.context_len, 2);
    let _ = writeln!(
        s,
        "\nKV cache (bf16): {} per token; at the full context of {} tokens {} without sliding windows, {} with them.",
        bytes_human(tok as f64),
        c.context_len,
        bytes_human(full as f64),
        bytes_human(win as f64)
    );
    s
}

/// A model with recurrent layers: what one sequence's state costs in gemma-rs, next to Gemma 2B's KV cache at
/// the same length (the attention model of the same size class).
fn recurrent_state_line(c: &Config) -> String {
    let ctx = c.context_len;
    let n_att = c.attention_layers().count();
    let state = state_bytes(c, ctx, 1);
    let long = state_bytes(c, 1 << 20, 1);
    let attention_part = state - state_bytes(&Config { layers: c.layers.iter().filter(|l| l.recurrent().is_some()).copied().collect(), ..c.clone() }, ctx, 1);
    let gemma_2b = super::presets::preset_config("gemma-2b").and_then(|j| Config::from_hf_json(j, std::path::Path::new("gemma-2b")));
    let versus = match gemma_2b {
        Ok(g) => {
            let (_, f32_full, _) = kv_cache_bytes(&g, ctx, 4);
            let (_, bf16_full, _) = kv_cache_bytes(&g, ctx, 2);
            format!(" Gemma 2B's KV cache ({} layers, {}, 2 x {} numbers per layer per token) at {ctx} positions: {} in f32 ({} in bf16), and it grows with every token.", g.n_layers, g.attention_kind(), g.kv_dim(), bytes_human(f32_full as f64), bytes_human(bf16_full as f64))
        }
        Err(_) => String::new(),
    };
    format!(
        "state per sequence (f32, as gemma-rs keeps it, decoding one token at a time): {} at {ctx} positions ({} recurrent, {} in the {n_att} attention layers' rings of keys and values), and {} after a million positions; a prefill chunk of n tokens widens each ring by n - 1 positions.{versus}",
        bytes_human(state as f64),
        bytes_human((state - attention_part) as f64),
        bytes_human(attention_part as f64),
        bytes_human(long as f64),
    )
}

/// `--explain`: one line per hyper-parameter on what it controls and what it costs.
pub fn explain(c: &Config) -> String {
    let mut s = String::new();
    let d = c.d_model;
    let per_layer_attn = 2 * d * c.q_dim() + 2 * d * c.kv_dim();
    let per_layer_ffn = 3 * d * c.ffn_dim;
    let (kv_tok, kv_full, kv_win) = kv_cache_bytes(c, c.context_len, 2);
    let mha_tok = (2 * c.n_heads * c.head_dim * 2 * c.n_layers) as u64;
    let _ = writeln!(s, "d_model = {d}: width of the residual stream every token carries through every layer; matrices grow with its square, and the embedding table holds vocab x d_model = {} parameters.", thousands((c.vocab_size * d) as u64));
    let _ = writeln!(s, "layers = {}: depth; compute, weights and KV cache all grow linearly with it.", c.n_layers);
    let _ = writeln!(s, "ffn_dim = {} ({:.1} x d_model): width of the GeGLU MLP (gate, up, down = 3 x d_model x ffn_dim = {} parameters per layer); the MLP holds most of each layer's weights ({:.0}%).", c.ffn_dim, c.ffn_dim as f64 / d as f64, thousands(per_layer_ffn as u64), 100.0 * per_layer_ffn as f64 / (per_layer_ffn + per_layer_attn) as f64);
    let _ = writeln!(s, "heads = {}: query heads, each attending independently over head_dim = {} dimensions (q_proj: d_model -> heads x head_dim = {}).", c.n_heads, c.head_dim, c.q_dim());
    let kind = c.attention_kind();
    let _ = writeln!(
        s,
        "kv_heads = {} ({kind}{}): key/value heads shared by groups of {} query heads; the KV cache stores {} per token ({} in bf16 across all layers) instead of {} with one KV head per query head (MHA){}.",
        c.n_kv_heads,
        match kind {
            "MQA" => ", multi-query",
            "MHA" => ", multi-head",
            _ => ", grouped-query",
        },
        c.group_size(),
        format!("2 x {} numbers per layer", c.kv_dim()),
        bytes_human(kv_tok as f64),
        bytes_human(mha_tok as f64),
        if kind == "MHA" { String::new() } else { format!(": {:.0}x smaller", mha_tok as f64 / kv_tok as f64) }
    );
    let shared = c.attention_layers().filter(|l| l.kv_source.is_some()).count();
    if shared > 0 {
        let unshared: u64 = c.attention_layers().map(|l| (2 * l.kv_dim() * 2) as u64).sum();
        let _ = writeln!(
            s,
            "num_kv_shared_layers = {shared}: the last {shared} of {} layers compute no keys or values and attend over those of the last earlier layer of the same type, storing nothing; KV cache per token (bf16, every layer's own key/value width): {} with sharing, {} without ({:.0}% saved).",
            c.n_layers,
            bytes_human(kv_tok as f64),
            bytes_human(unshared as f64),
            100.0 * (1.0 - kv_tok as f64 / unshared as f64)
        );
    }
    let _ = writeln!(s, "head_dim = {}: size of each query/key/value head; attention scores are scaled by {:.5} (1/sqrt({})).", c.head_dim, c.query_scale, (1.0 / (c.query_scale * c.query_scale)).round());
    let _ = writeln!(s, "vocab = {}: tokens the tokenizer knows; the embedding (tied with the output projection) costs {} parameters, and every generated token reads the whole output matrix.", c.vocab_size, thousands((c.vocab_size * d) as u64));
    let _ = writeln!(s, "context = {}: longest sequence trained for; a full-context KV cache costs {} in bf16{}.", c.context_len, bytes_human(kv_full as f64), if kv_win < kv_full { format!(" without sliding windows, {} with them", bytes_human(kv_win as f64)) } else { String::new() });
    if let Some(r) = c.layers.iter().find_map(|l| l.recurrent()) {
        let n_recurrent = c.layers.iter().filter(|l| l.recurrent().is_some()).count();
        let per_layer = (r.lru_width * r.conv1d_width * 4) as f64;
        let _ = writeln!(s, "recurrent blocks: {n_recurrent} of {} layers mix positions with Griffin's RG-LRU instead of attention (lru_width = {}, causal conv1d of width {}, gates block-diagonal in {} blocks); each keeps a fixed state, h ({} numbers) and the last {} conv inputs ({} x {}) = {} in f32, however long the sequence, instead of a KV cache.", c.n_layers, r.lru_width, r.conv1d_width, r.n_blocks, r.lru_width, r.conv1d_width - 1, r.conv1d_width - 1, r.lru_width, bytes_human(per_layer));
        let _ = writeln!(s, "{}", recurrent_state_line(c));
    }
    let n_local = c.attention_layers().filter(|l| matches!(l.scope, AttentionScope::Local { .. })).count();
    if n_local > 0 {
        let w = c.attention_layers().find_map(|l| match l.scope {
            AttentionScope::Local { window } => Some(window),
            _ => None,
        });
        let n_global = c.attention_layers().count() - n_local;
        let rest = if n_global > 0 { format!("; the other {n_global} attention layers see everything") } else { String::new() };
        let _ = writeln!(s, "sliding_window = {}: {n_local} of {} layers attend only to the last {} positions, so their cache stops growing there (ring buffer){rest}.", w.unwrap_or(0), c.n_layers, w.unwrap_or(0));
    }
    if let Some(cap) = c.attn_softcap {
        let _ = writeln!(s, "attn_logit_softcapping = {cap}: attention scores pass through cap*tanh(s/cap), bounding them smoothly.");
    }
    if let Some(cap) = c.final_softcap {
        let _ = writeln!(s, "final_logit_softcapping = {cap}: output logits bounded the same way.");
    }
    if c.qk_norm {
        let _ = writeln!(s, "qk_norm: queries and keys are RMS-normalized per head before RoPE (replaces soft-capping in Gemma 3).");
    }
    let ropes: Vec<String> = {
        let mut v: Vec<String> = c.attention_layers().map(|l| format!("base {} x{}", l.rope.base, l.rope.linear_factor)).collect();
        v.dedup();
        v.sort();
        v.dedup();
        v
    };
    let _ = writeln!(s, "rope: rotary position embedding ({}); a larger base rotates slower and reaches further, a linear factor stretches positions to extend the context.", ropes.join("; "));
    if let Some(v) = &c.vision {
        vision_lines(c, v, &mut s);
    }
    s
}

/// `--explain` for the image side: patches, what one image costs the encoder, and how many positions of the
/// text stream (and of its KV cache) it takes.
fn vision_lines(c: &Config, v: &VisionConfig, s: &mut String) {
    let e = &v.encoder;
    let (side, n, t) = (e.patches_per_side(), e.n_patches(), v.tokens_per_image);
    let tower = siglip_tree(e);
    // Multiply-adds: every weight of the encoder layers once per patch, plus q.k and the weighted sum of v
    // over all pairs of patches in every layer (full attention); 2 FLOPs each.
    let layer_weights = tower.params() - (3 * e.patch_size * e.patch_size * e.d_model + e.d_model + n * e.d_model + 2 * e.d_model) as u64;
    let dense = 2.0 * layer_weights as f64 * n as f64;
    let attn = (e.n_layers * 4 * n * n * e.d_model) as f64;
    let _ = writeln!(
        s,
        "image_size = {} px, patch_size = {}: SigLIP cuts an image into {side} x {side} = {n} patches and runs its {} layers (d_model {}, {} parameters) over all of them with full attention; encoding one image costs about {:.2} TFLOP, {:.0}% of it attention between patches, which grows with the square of the patch count (twice the image side: 4x the patches, 16x the attention).",
        e.image_size,
        e.patch_size,
        e.n_layers,
        e.d_model,
        human(tower.params()),
        (dense + attn) / 1e12,
        100.0 * attn / (dense + attn)
    );
    let (_, _, kv_image) = kv_cache_bytes(c, t, 2);
    let share = 100.0 * t as f64 / c.context_len as f64;
    match v.projector {
        Projector::PaliGemma => {
            let _ = writeln!(
                s,
                "image tokens = {t}: every patch, projected to d_model ({} -> {}, with bias), is one position of the text stream, ahead of <bos> and the prompt; image and prompt form one prefix that attends to itself both ways. One image takes {t} of the {} positions ({share:.0}%) and {} of KV cache in bf16 before the prompt's first token.",
                e.d_model,
                v.projection_dim,
                c.context_len,
                bytes_human(kv_image as f64)
            );
        }
        Projector::Gemma3 => {
            let k = side / (t as f64).sqrt().round() as usize;
            let _ = writeln!(
                s,
                "image tokens = {t}: the {n} patch rows are average-pooled in {k} x {k} blocks, RMS-normalized and projected to d_model by mm_input_projection_weight ({} x {} = {} parameters, no bias; a bare parameter of the projector, which print(model) does not list); each image takes {t} positions of the text stream ({share:.1}% of {}), plus <start_of_image>, <end_of_image> and the newlines around them, and {} of KV cache in bf16; an image's rows attend to each other both ways.",
                e.d_model,
                v.projection_dim,
                thousands((e.d_model * v.projection_dim) as u64),
                c.context_len,
                bytes_human(kv_image as f64)
            );
        }
    }
    // A prefix (image, <bos>, prompt, "\n") at least as long as the local layers' window: the first token after
    // it, at index P >= window, sees keys j > P - window only, so the first image rows reach it through the
    // global layers alone (transformers ORs the prefix block onto the sliding mask: the prefix sees all of itself).
    let window = c.attention_layers().find_map(|l| match l.scope {
        AttentionScope::Local { window } => Some(window),
        AttentionScope::Global => None,
    });
    if let (Projector::PaliGemma, Some(w)) = (v.projector, window) {
        if t + 2 >= w {
            let n_global = c.attention_layers().filter(|l| l.scope == AttentionScope::Global).count();
            let _ = writeln!(
                s,
                "the {t} image tokens, with <bos> and the newline that closes the prompt, fill the local layers' sliding_window = {w}: the prefix still attends to all of itself, but text after it reaches the first image rows only through the {n_global} global layers."
            );
        }
    }
}

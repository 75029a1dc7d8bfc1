//! gemma-rs: a pure-Rust inference engine for Google's Gemma family.
//!
//! The modules are the layers of the engine, each depending only on those listed before it:
//! - [`quant`]: the weight data types (f32, bf16, f16, GGUF block quants) — block layouts, scalar reference
//!   dequantizers and activation quantizers. No model knowledge.
//! - [`formats`]: safetensors and GGUF readers; tensors stay memory-mapped in their stored type.
//! - [`tokenizer`]: SentencePiece-style BPE from `tokenizer.json`, `tokenizer.model` or GGUF metadata; chat templates.
//! - [`kernels`]: model-agnostic compute (matrix × activations per weight type, norms, RoPE, softmax), with
//!   scalar references and run-time-selected SIMD variants, and the thread pool.
//! - [`model`]: raw → validated config, presets, weights, the one config-driven Gemma decoder, per-sequence state.
//! - [`runtime`]: sampling and the generation loop on top of the decoder; image input for the vision models.

pub mod error;
pub mod formats;
pub mod kernels;
pub mod load;
pub mod model;
pub mod quant;
pub mod runtime;
pub mod tokenizer;

pub use error::{Error, Result};
pub use load::{load, load_config, load_tokenizer, load_with_mmproj, load_with_mmproj_and_tokenizer, load_with_tokenizer};

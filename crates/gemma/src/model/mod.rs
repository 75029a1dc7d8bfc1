//! Gemma models: configuration (raw → validated), presets of every released checkpoint, weights as stored,
//! the one config-driven decoder (with Griffin's recurrent mixer beside attention), per-sequence state, and
//! the architecture summary (`gemma inspect`); the SigLIP image tower of the vision-language members.

pub mod config;
pub mod decoder;
mod griffin;
pub mod presets;
pub mod siglip;
pub mod state;
pub mod summary;
pub mod weights;

pub use config::{AttentionScope, Config, Family, LayerSpec, Mixer, RawConfig};
pub use decoder::{Chunk, EmbeddingRows, LogitsWanted, Model, Scratch};
pub use state::{LayerState, SeqState};

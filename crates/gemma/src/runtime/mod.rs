//! Runtime: what turns logits into text — sampling, and the generation loop over a sequence's state.

pub mod generate;
pub mod sampler;

pub use generate::{FinishReason, Generation, GenerationEvent};
pub use sampler::{Sampler, SamplerConfig};

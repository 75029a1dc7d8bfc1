//! Runtime: what turns logits into text — sampling, stop conditions, and the generation loop over a
//! sequence's state.

pub mod generate;
pub mod sampler;
pub mod stop;
pub mod text;

pub use generate::Generation;
pub use sampler::{Sampler, SamplerConfig};
pub use stop::{stop_token_ids, StopMatcher};
pub use text::{FinishReason, Step, Stop, StreamEnd, TextStream};

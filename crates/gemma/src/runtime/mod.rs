//! Runtime: what turns logits into text — sampling, stop conditions, and the generation loop over a
//! sequence's state; reading PaliGemma's location tokens back as boxes, and turning an image file into a
//! vision model's input (`image`, `multimodal`).

pub mod annotate;
pub mod detect;
pub mod generate;
pub mod image;
pub mod multimodal;
pub mod sampler;
pub mod stop;
pub mod text;

pub use generate::Generation;
pub use self::image::{
    decode_image, load_image, preprocess, resize, resize_bicubic, resize_bilinear, Image, Resample, MAX_IMAGE_PIXELS,
};
pub use sampler::{Sampler, SamplerConfig};
pub use stop::{stop_token_ids, StopMatcher};
pub use text::{FinishReason, Step, Stop, StreamEnd, TextStream};

//! The generation loop for one sequence: prefill a prompt (in chunks), then sample and feed back one token
//! at a time. The server batches many sequences through `Model::forward` itself; this is the single-sequence
//! path the command line uses.

use super::sampler::{Sampler, SamplerConfig};
use crate::kernels::ThreadPool;
use crate::model::{Chunk, LogitsWanted, Model, Scratch, SeqState};
use crate::{Error, Result};

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-sequence token or a stop string.
    Stop,
    /// The token budget or the context ran out.
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// What one step produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenerationEvent {
    Token(u32),
    Finished(FinishReason),
}

/// Prompt chunk size: large enough for the matrix kernels to reuse each weight row, small enough to bound
/// activation memory.
pub const PREFILL_CHUNK: usize = 512;

/// One sequence being generated: its state, the logits of its last position, its sampler and history.
pub struct Generation<'m> {
    pub model: &'m Model,
    pub state: SeqState,
    scratch: Scratch,
    pub sampler: Sampler,
    /// Every token in the sequence so far (prompt and generated), for penalties and saving.
    pub history: Vec<u32>,
    last_logits: Vec<f32>,
}

impl<'m> Generation<'m> {
    /// A sequence of at most `ctx` positions.
    pub fn new(model: &'m Model, ctx: usize, sampler: SamplerConfig) -> Generation<'m> {
        Generation {
            model,
            state: model.new_state(ctx),
            scratch: Scratch::new(),
            sampler: Sampler::new(sampler),
            history: Vec::new(),
            last_logits: Vec::new(),
        }
    }

    /// Positions left in the context.
    pub fn remaining(&self) -> usize {
        self.state.max_pos - self.state.pos
    }

    /// Run `ids` through the model (appending to what is there), keeping the logits of the last one.
    /// `progress` is told how many tokens are done after each chunk.
    pub fn feed(&mut self, pool: &ThreadPool, ids: &[u32], mut progress: impl FnMut(usize)) -> Result<()> {
        if ids.len() > self.remaining() {
            return Err(Error::Invalid(format!(
                "{} tokens do not fit in the {} positions left of the context ({} in all)",
                ids.len(),
                self.remaining(),
                self.state.max_pos
            )));
        }
        let vocab = self.model.config.vocab_size;
        for (i, chunk) in ids.chunks(PREFILL_CHUNK).enumerate() {
            let mut chunks = [Chunk::new(chunk, &mut self.state, LogitsWanted::Last)];
            self.model.forward(pool, &mut chunks, &mut self.scratch)?;
            self.last_logits.clear();
            self.last_logits.extend_from_slice(self.scratch.logits(0, vocab));
            self.history.extend_from_slice(chunk);
            progress((i * PREFILL_CHUNK + chunk.len()).min(ids.len()));
        }
        Ok(())
    }

    /// The logits of the last position fed.
    pub fn logits(&self) -> &[f32] {
        &self.last_logits
    }

    /// Sample the next token from the last logits (does not feed it).
    pub fn sample(&mut self) -> u32 {
        self.sampler.sample(&self.last_logits, &self.history)
    }

    /// Sample, then feed the token back unless it ends the generation. `is_stop` says which ids end it.
    pub fn step(&mut self, pool: &ThreadPool, is_stop: impl Fn(u32) -> bool) -> Result<GenerationEvent> {
        if self.last_logits.is_empty() {
            return Err(Error::Invalid("nothing to continue: feed a prompt first".into()));
        }
        let tok = self.sample();
        if is_stop(tok) {
            return Ok(GenerationEvent::Finished(FinishReason::Stop));
        }
        if self.remaining() == 0 {
            return Ok(GenerationEvent::Finished(FinishReason::Length));
        }
        self.feed(pool, &[tok], |_| {})?;
        Ok(GenerationEvent::Token(tok))
    }
}

//! The generation loop for one sequence: prefill a prompt (in chunks), then sample one token at a time, turn
//! it into text with a [`TextStream`] and feed it back. The server batches many sequences through
//! `Model::forward` itself (with a `TextStream` each); this is the single-sequence path the command line uses.

use super::sampler::{Sampler, SamplerConfig};
use super::text::{FinishReason, Step, TextStream};
use crate::kernels::ThreadPool;
use std::ops::Range;

use crate::model::{Chunk, EmbeddingRows, LogitsWanted, Model, Scratch, SeqState};
use crate::{Error, Result};

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
            return Err(Error::ContextFull { needed: self.state.pos + ids.len(), max_pos: self.state.max_pos });
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
    /// Feed a prompt with images: `rows` replace the embeddings of their placeholder tokens (offsets into
    /// `ids`, see [`Model::embed_image`]) and the `bidirectional` spans (offsets into `ids`) attend both ways
    /// (PaliGemma's prefix, a Gemma 3 image). The prompt goes through in one pass, since a span must not
    /// be split and PaliGemma's spans the whole prefix. Errors: as [`Generation::feed`], and rows or spans
    /// that do not fit the prompt.
    pub fn feed_multimodal(
        &mut self,
        pool: &ThreadPool,
        ids: &[u32],
        rows: &[EmbeddingRows],
        bidirectional: &[Range<usize>],
    ) -> Result<()> {
        if ids.len() > self.remaining() {
            return Err(Error::ContextFull { needed: self.state.pos + ids.len(), max_pos: self.state.max_pos });
        }
        let mut chunk = Chunk::new(ids, &mut self.state, LogitsWanted::Last);
        chunk.rows = rows;
        chunk.bidirectional = bidirectional;
        self.model.forward(pool, &mut [chunk], &mut self.scratch)?;
        self.last_logits.clear();
        self.last_logits.extend_from_slice(self.scratch.logits(0, self.model.config.vocab_size));
        self.history.extend_from_slice(ids);
        Ok(())
    }

    pub fn logits(&self) -> &[f32] {
        &self.last_logits
    }

    /// Sample the next token from the last logits (does not feed it).
    pub fn sample(&mut self) -> u32 {
        self.sampler.sample(&self.last_logits, &self.history)
    }

    /// One token: sample it, push it into `text`, and feed it back unless `text` stopped with it. `None` when
    /// the context is full: the sampled token (unless a stop id, which `text` takes) has no position left, so
    /// it is dropped, `text` never sees it, and the generation has run to its length.
    pub fn step(&mut self, pool: &ThreadPool, text: &mut TextStream) -> Result<Option<Step>> {
        if self.last_logits.is_empty() {
            return Err(Error::Invalid("nothing to continue: feed a prompt first".into()));
        }
        let tok = self.sample();
        if self.remaining() == 0 && !text.is_stop_id(tok) {
            return Ok(None);
        }
        let step = text.push(tok);
        if step.stop.is_none() {
            self.feed(pool, &[tok], |_| {})?;
        }
        Ok(Some(step))
    }

    /// Generates into `text` until it stops (stop id or stop string), it holds `max_tokens` ids, the context
    /// is full, or `emit` returns `false` (an interruption); then finishes it. `emit` is given the text of
    /// every step (possibly empty), and last what [`TextStream::finish`] released. Returns why it ended.
    pub fn generate<E: From<Error>>(
        &mut self,
        pool: &ThreadPool,
        text: &mut TextStream,
        max_tokens: usize,
        mut emit: impl FnMut(&str) -> std::result::Result<bool, E>,
    ) -> std::result::Result<FinishReason, E> {
        self.generate_parts(pool, text, max_tokens, |answer, _| emit(answer))
    }

    /// As [`generate`](Self::generate), with the model's thoughts apart: `emit(answer, reasoning)` (see
    /// [`TextStream::split_thoughts`]; without it `reasoning` is always empty).
    pub fn generate_parts<E: From<Error>>(
        &mut self,
        pool: &ThreadPool,
        text: &mut TextStream,
        max_tokens: usize,
        mut emit: impl FnMut(&str, &str) -> std::result::Result<bool, E>,
    ) -> std::result::Result<FinishReason, E> {
        while text.ids().len() < max_tokens {
            let Some(step) = self.step(pool, text)? else { break };
            let go_on = emit(&step.text, &step.reasoning)?;
            if step.stop.is_some() || !go_on {
                break;
            }
        }
        let end = text.finish();
        emit(&end.text, &end.reasoning)?;
        Ok(end.reason)
    }
}

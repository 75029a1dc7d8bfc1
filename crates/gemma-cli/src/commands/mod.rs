//! One module per subcommand; `common` holds what the generating ones share.

pub mod bench;
pub mod chat;
pub mod common;
pub mod complete;
pub mod inspect;
pub mod logits;
pub mod models;
pub mod perplexity;
pub mod run;
pub mod serve;
pub mod tokenize;
pub mod vision;

/// All cores, as the machine reports them.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

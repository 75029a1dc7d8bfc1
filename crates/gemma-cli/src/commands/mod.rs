//! One module per subcommand.

pub mod inspect;
pub mod logits;

/// All cores, as the machine reports them.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

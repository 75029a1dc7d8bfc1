//! The `gemma` command line: argument parsing and glue. The engine lives in the `gemma` crate.

mod commands;

use clap::{Parser, Subcommand};

/// gemma-rs: run Google's Gemma models on your CPU.
#[derive(Parser)]
#[command(name = "gemma", version, about, long_about = None, after_help = "Examples:\n  gemma inspect --preset gemma-7b --explain\n  gemma logits --model ./gemma-2b --ids 2,651,6037 --top 5")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the logits a model computes for given token ids (for checking against other implementations).
    Logits(commands::logits::Args),
    /// Print a model's architecture: module tree, parameter counts, and what each hyper-parameter costs.
    Inspect(commands::inspect::Args),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Logits(a) => commands::logits::run(a),
        Command::Inspect(a) => commands::inspect::run(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

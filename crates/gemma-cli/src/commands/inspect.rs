//! `gemma inspect`: the architecture explorer.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use gemma::model::summary::{explain, human, kv_cache_bytes, thousands, bytes_human, Architecture};

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  gemma inspect --preset gemma-7b\n  gemma inspect --preset gemma3-1b --explain\n  gemma inspect --model ./my-checkpoint\n\nPresets: gemma-2b gemma-7b codegemma-2b codegemma-7b gemma2-2b gemma2-9b gemma2-27b gemma3-270m gemma3-1b\n         gemma3-4b gemma3-12b gemma3-27b recurrentgemma-2b recurrentgemma-9b paligemma-3b paligemma2-3b")]
pub struct Args {
    /// An official configuration by name (see the list below).
    #[arg(long, conflicts_with = "model")]
    preset: Option<String>,
    /// A checkpoint folder (config.json) or a .gguf file.
    #[arg(short, long)]
    model: Option<PathBuf>,
    /// Explain what each hyper-parameter controls and costs.
    #[arg(long)]
    explain: bool,
    /// Depth of the parameter table.
    #[arg(long, default_value_t = 3)]
    depth: usize,
}

pub fn run(a: Args) -> Result<()> {
    let arch = match (&a.preset, &a.model) {
        (Some(p), _) => Architecture::from_hf_json(gemma::model::presets::preset_config(p)?, std::path::Path::new(p))?,
        (None, Some(m)) => {
            let model = gemma::model::load::load(m).with_context(|| format!("loading {}", m.display()))?;
            Architecture::Decoder(model.config.clone())
        }
        (None, None) => bail!("give --preset NAME or --model PATH (see --help)"),
    };
    let tree = arch.tree();
    println!("{}", tree.repr());
    println!();
    let total = tree.params();
    println!("Total parameters: {} ({})", thousands(total), human(total));
    println!();
    let rows = tree.table(a.depth);
    let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(10).max(6);
    let wc = rows.iter().map(|r| r.1.len()).max().unwrap_or(10).max(6);
    println!("{:<w$}  {:<wc$}  {:>16}", "module", "class", "parameters");
    for (path, class, n) in rows {
        println!("{path:<w$}  {class:<wc$}  {:>16}", thousands(n));
    }
    if let Architecture::Decoder(c) = &arch {
        let (tok, full, win) = kv_cache_bytes(c, c.context_len, 2);
        println!();
        println!(
            "KV cache (bf16): {} per token; at the full context of {} tokens {} without sliding windows, {} with them.",
            bytes_human(tok as f64),
            c.context_len,
            bytes_human(full as f64),
            bytes_human(win as f64)
        );
        if a.explain {
            println!();
            print!("{}", explain(c));
        }
    } else if a.explain {
        println!("\n(--explain covers the Gemma decoders; this architecture is described by its tree above.)");
    }
    Ok(())
}

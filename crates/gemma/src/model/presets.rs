//! Presets: the official hyper-parameters of every released checkpoint of the family, as Hugging Face
//! `config.json` keys (legacy Hub spelling). The data (`presets.json`) was cross-checked against Google's
//! reference code; its `notes` record where sources disagree. `gemma inspect --preset NAME` reads them.

use serde_json::Value;

use crate::{Error, Result};

const PRESETS_JSON: &str = include_str!("presets.json");

/// (name we print, key in presets.json). Names follow the product names; the Hub-style names are accepted too.
pub const PRESETS: &[(&str, &str)] = &[
    ("gemma-2b", "gemma-2b"),
    ("gemma-7b", "gemma-7b"),
    ("codegemma-2b", "codegemma-2b"),
    ("codegemma-7b", "codegemma-7b"),
    ("gemma2-2b", "gemma-2-2b"),
    ("gemma2-9b", "gemma-2-9b"),
    ("gemma2-27b", "gemma-2-27b"),
    ("gemma3-270m", "gemma-3-270m"),
    ("gemma3-1b", "gemma-3-1b"),
    ("gemma3-4b", "gemma-3-4b"),
    ("gemma3-12b", "gemma-3-12b"),
    ("gemma3-27b", "gemma-3-27b"),
    ("gemma4-e2b", "gemma-4-e2b"),
    ("gemma4-e4b", "gemma-4-e4b"),
    ("gemma4-26b-a4b", "gemma-4-26b-a4b"),
    ("gemma4-31b", "gemma-4-31b"),
    ("recurrentgemma-2b", "recurrentgemma-2b"),
    ("recurrentgemma-9b", "recurrentgemma-9b"),
    ("paligemma-3b", "paligemma-3b-pt-224"),
    ("paligemma-3b-448", "paligemma-3b-pt-448"),
    ("paligemma-3b-896", "paligemma-3b-pt-896"),
    ("paligemma2-3b", "paligemma2-3b-pt-224"),
    ("paligemma2-3b-448", "paligemma2-3b-pt-448"),
    ("paligemma2-3b-896", "paligemma2-3b-pt-896"),
    ("paligemma2-10b", "paligemma2-10b-pt-224"),
    ("paligemma2-28b", "paligemma2-28b-pt-224"),
];

fn all() -> &'static Value {
    static PARSED: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    PARSED.get_or_init(|| serde_json::from_str(PRESETS_JSON).expect("presets.json is valid JSON (checked by a test)"))
}

/// The `config.json` of a preset, by either spelling of its name.
pub fn preset_config(name: &str) -> Result<&'static Value> {
    let key = PRESETS.iter().find(|(a, b)| *a == name || *b == name).map(|(_, b)| *b);
    key.and_then(|k| all()["models"].get(k)).ok_or_else(|| {
        let names: Vec<&str> = PRESETS.iter().map(|(a, _)| *a).collect();
        Error::Invalid(format!("unknown preset `{name}`; presets: {}", names.join(", ")))
    })
}

/// Where the sources disagree about some preset values (keyed notes from presets.json).
pub fn notes() -> Vec<(String, String)> {
    all()["notes"]
        .as_object()
        .map(|o| o.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
        .unwrap_or_default()
}

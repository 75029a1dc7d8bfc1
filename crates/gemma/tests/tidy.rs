//! The house rules that code review would otherwise have to remember (ARCHITECTURE.md, "Layers"):
//! - the engine's top-level modules form layers, and a module imports only from layers below it (no circle,
//!   no upward edge), checked on every `crate::…` path in the source;
//! - every source file of the workspace starts with a `//!` header saying what it is.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The layers, lowest first. A module may use modules of strictly lower rank (and `error`, which all share).
/// Modules of equal rank are peers and may not use each other.
const LAYERS: &[(&str, usize)] = &[
    ("error", 0),
    ("quant", 1),
    ("formats", 2),
    ("tokenizer", 3),
    ("kernels", 3),
    ("model", 4),
    ("runtime", 5),
    ("load", 5),
];

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, r)| *r)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level modules a source text names through `crate::`: `crate::model::X`, and each item of a
/// group `crate::{model::X, kernels::Y}`. Comments are skipped (`//` to the end of the line).
fn crate_modules(text: &str) -> BTreeSet<String> {
    let code: String = text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n");
    let mut found = BTreeSet::new();
    let ident = |s: &str| s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                found.insert(ident(item.trim()));
            }
        } else {
            found.insert(ident(rest));
        }
    }
    // Types and functions at the crate root (`crate::Error`, `crate::Result`) belong to `error`.
    found.into_iter().filter(|m| m.starts_with(|c: char| c.is_ascii_lowercase())).collect()
}

#[test]
fn the_layers_import_only_downward() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut bad = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let top = rel.components().next().unwrap().as_os_str().to_string_lossy().trim_end_matches(".rs").to_string();
        if top == "lib" {
            continue;
        }
        let Some(own) = rank(&top) else {
            bad.push(format!("{}: module `{top}` is not in tests/tidy.rs LAYERS (give it a layer)", rel.display()));
            continue;
        };
        for m in crate_modules(&std::fs::read_to_string(f).unwrap()) {
            if m == top {
                continue;
            }
            match rank(&m) {
                Some(r) if r < own => {}
                Some(r) => bad.push(format!("{}: `{top}` (layer {own}) uses `crate::{m}` (layer {r})", rel.display())),
                None => bad.push(format!("{}: uses `crate::{m}`, a module not in LAYERS", rel.display())),
            }
        }
    }
    assert!(bad.is_empty(), "imports against the layer order:\n{}", bad.join("\n"));
}

#[test]
fn the_checker_sees_grouped_and_plain_paths() {
    let m = crate_modules("use crate::{model::Config, kernels::ops, Error};\nlet x = crate::quant::DType::F32; // crate::runtime");
    assert_eq!(m.into_iter().collect::<Vec<_>>(), ["kernels", "model", "quant"]);
}

#[test]
fn every_source_file_has_a_header() {
    let crates = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for c in ["gemma", "gemma-cli", "gemma-server", "gemma-py"] {
        for sub in ["src", "tests"] {
            let d = crates.join(c).join(sub);
            if d.exists() {
                rust_files(&d, &mut files);
            }
        }
    }
    let missing: Vec<String> = files
        .iter()
        .filter(|f| !std::fs::read_to_string(f).unwrap().trim_start().starts_with("//!"))
        .map(|f| f.strip_prefix(&crates).unwrap().display().to_string())
        .collect();
    assert!(missing.is_empty(), "files without a `//!` header:\n{}", missing.join("\n"));
}

//! The `gemma` command line: argument parsing and glue; the engine lives in the `gemma` crate.

fn main() {
    println!("gemma");
}

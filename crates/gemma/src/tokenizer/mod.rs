//! The Gemma tokenizer (placeholder; see the tokenizer issue).

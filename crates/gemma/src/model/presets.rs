//! Presets: the official hyper-parameters of every released checkpoint (placeholder).

//! Architecture summary (placeholder).

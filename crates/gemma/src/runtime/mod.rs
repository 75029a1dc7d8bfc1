//! Runtime: sampling and the generation loop on top of the decoder (placeholder).

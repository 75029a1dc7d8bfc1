//! Weight data types and their block layouts: plain floats (f32, bf16, f16) and GGML block quants.
//!
//! Everything here is the *scalar reference*: bit-exact layouts as llama.cpp's `ggml-common.h` defines them,
//! dequantizers that follow the `gguf` Python package, and the activation quantizers that pair with each weight
//! type for integer dot products (as llama.cpp pairs them: Q8_0 activations for the 32-wide legacy quants,
//! Q8_K for the 256-wide k-quants). The SIMD kernels (the `kernels` module, which builds on this one) are tested
//! against these.

mod act;
mod float;
mod kquants;
mod legacy;

pub use act::{dequantize_act_row, ActFormat, QuantizedActs};
/// The scalar activation quantizers: the references for the SIMD variants that `kernels::quantize_acts` picks.
pub use act::{quantize_row_q8_0, quantize_row_q8_1, quantize_row_q8_k};

/// The stored type of a weight tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum DType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
}

impl DType {
    pub const ALL: [DType; 13] = [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q5_0,
        DType::Q5_1,
        DType::Q8_0,
        DType::Q2_K,
        DType::Q3_K,
        DType::Q4_K,
        DType::Q5_K,
        DType::Q6_K,
    ];

    /// The `ggml_type` number used in GGUF tensor infos.
    pub fn ggml_id(self) -> u32 {
        match self {
            DType::F32 => 0,
            DType::F16 => 1,
            DType::Q4_0 => 2,
            DType::Q4_1 => 3,
            DType::Q5_0 => 6,
            DType::Q5_1 => 7,
            DType::Q8_0 => 8,
            DType::Q2_K => 10,
            DType::Q3_K => 11,
            DType::Q4_K => 12,
            DType::Q5_K => 13,
            DType::Q6_K => 14,
            DType::BF16 => 30,
        }
    }

    pub fn from_ggml_id(id: u32) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.ggml_id() == id)
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::Q4_0 => "Q4_0",
            DType::Q4_1 => "Q4_1",
            DType::Q5_0 => "Q5_0",
            DType::Q5_1 => "Q5_1",
            DType::Q8_0 => "Q8_0",
            DType::Q2_K => "Q2_K",
            DType::Q3_K => "Q3_K",
            DType::Q4_K => "Q4_K",
            DType::Q5_K => "Q5_K",
            DType::Q6_K => "Q6_K",
        }
    }

    /// Elements per block (1 for the float types).
    pub fn block_len(self) -> usize {
        match self {
            DType::F32 | DType::F16 | DType::BF16 => 1,
            DType::Q4_0 | DType::Q4_1 | DType::Q5_0 | DType::Q5_1 | DType::Q8_0 => 32,
            DType::Q2_K | DType::Q3_K | DType::Q4_K | DType::Q5_K | DType::Q6_K => 256,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::Q4_0 => 2 + 16,
            DType::Q4_1 => 2 + 2 + 16,
            DType::Q5_0 => 2 + 4 + 16,
            DType::Q5_1 => 2 + 2 + 4 + 16,
            DType::Q8_0 => 2 + 32,
            DType::Q2_K => 16 + 64 + 2 + 2,
            DType::Q3_K => 32 + 64 + 12 + 2,
            DType::Q4_K => 2 + 2 + 12 + 128,
            DType::Q5_K => 2 + 2 + 12 + 32 + 128,
            DType::Q6_K => 128 + 64 + 16 + 2,
        }
    }

    /// Bytes of a row of `n` elements; `None` if `n` is not a whole number of blocks.
    pub fn row_bytes(self, n: usize) -> Option<usize> {
        (n % self.block_len() == 0).then(|| n / self.block_len() * self.block_bytes())
    }

    pub fn is_quantized(self) -> bool {
        self.block_len() > 1
    }

    /// The activation format this weight type's dot product consumes.
    pub fn act_format(self) -> ActFormat {
        match self {
            DType::F32 | DType::F16 | DType::BF16 => ActFormat::F32,
            DType::Q4_0 | DType::Q5_0 | DType::Q8_0 => ActFormat::Q8_0,
            DType::Q4_1 | DType::Q5_1 => ActFormat::Q8_1,
            DType::Q2_K | DType::Q3_K | DType::Q4_K | DType::Q5_K | DType::Q6_K => ActFormat::Q8_K,
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Dequantize one row: `src` holds `dst.len()` elements of type `dtype`.
///
/// Panics (debug) if the lengths disagree: callers validate shapes at load time.
pub fn dequantize_row(dtype: DType, src: &[u8], dst: &mut [f32]) {
    debug_assert_eq!(Some(src.len()), dtype.row_bytes(dst.len()));
    match dtype {
        DType::F32 | DType::F16 | DType::BF16 => float::dequantize_row(dtype, src, dst),
        DType::Q4_0 | DType::Q4_1 | DType::Q5_0 | DType::Q5_1 | DType::Q8_0 => legacy::dequantize_row(dtype, src, dst),
        DType::Q2_K | DType::Q3_K | DType::Q4_K | DType::Q5_K | DType::Q6_K => kquants::dequantize_row(dtype, src, dst),
    }
}

/// Scalar reference dot product of one weight row with one activation row (already in `dtype.act_format()`).
pub fn vec_dot(dtype: DType, w: &[u8], a: &[u8], n: usize) -> f32 {
    match dtype {
        DType::F32 | DType::F16 | DType::BF16 => float::vec_dot(dtype, w, a, n),
        DType::Q4_0 | DType::Q4_1 | DType::Q5_0 | DType::Q5_1 | DType::Q8_0 => legacy::vec_dot(dtype, w, a, n),
        DType::Q2_K | DType::Q3_K | DType::Q4_K | DType::Q5_K | DType::Q6_K => kquants::vec_dot(dtype, w, a, n),
    }
}

/// Quantize one row of `src.len()` values to `dtype` into `dst` (`dtype.row_bytes(src.len())` bytes), with the
/// simple round-to-nearest reference quantizers (llama.cpp's `quantize_row_*_ref`; no importance weighting).
/// For making test and benchmark weights, not for production-quality quantization.
///
/// Supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0. The k-quants' reference quantizers (a search over
/// scales per sub-block) are not implemented: asking for one, or passing mismatched lengths, is an error.
pub fn quantize_row(dtype: DType, src: &[f32], dst: &mut [u8]) -> crate::Result<()> {
    if dtype.row_bytes(src.len()) != Some(dst.len()) {
        return Err(crate::Error::Invalid(format!(
            "quantize_row: {} values do not fill {} bytes of {dtype} (blocks of {} values, {} bytes)",
            src.len(),
            dst.len(),
            dtype.block_len(),
            dtype.block_bytes()
        )));
    }
    match dtype {
        DType::F32 | DType::F16 | DType::BF16 => float::quantize_row(dtype, src, dst),
        DType::Q4_0 | DType::Q4_1 | DType::Q5_0 | DType::Q5_1 | DType::Q8_0 => legacy::quantize_row(dtype, src, dst),
        DType::Q2_K | DType::Q3_K | DType::Q4_K | DType::Q5_K | DType::Q6_K => {
            return Err(crate::Error::Invalid(format!("quantizing to {dtype} is not implemented")))
        }
    }
    Ok(())
}

#[inline]
pub fn f16_to_f32(b: [u8; 2]) -> f32 {
    half::f16::from_le_bytes(b).to_f32()
}

#[inline]
pub fn bf16_to_f32(b: [u8; 2]) -> f32 {
    f32::from_bits((u16::from_le_bytes(b) as u32) << 16)
}

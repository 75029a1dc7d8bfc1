//! Inner products, the heart of every matrix product, in one table of function pointers per instruction set.
//! The table is chosen once, at run time, from the CPU's features.

use std::sync::OnceLock;

use crate::quant::{self, DType};

/// The inner products one instruction set provides.
pub struct Kernels {
    /// "scalar", "avx2", "avx512", ...: printed by `--verbose` and `gemma bench`.
    pub name: &'static str,
    /// f32 weights × f32 activations.
    pub dot_f32: fn(&[f32], &[f32]) -> f32,
    /// bf16 weights (little-endian u16 bits) × f32 activations.
    pub dot_bf16: fn(&[u8], &[f32]) -> f32,
    /// f16 weights × f32 activations.
    pub dot_f16: fn(&[u8], &[f32]) -> f32,
    /// A block-quantized weight row × a row of activations in `dtype.act_format()`; `n` elements.
    pub dot_q: fn(DType, &[u8], &[u8], usize) -> f32,
    /// One weight row × four activation rows (prompt processing: each weight block is unpacked once).
    /// The `dot_RxT` names count weight rows × activation rows (tokens).
    pub dot_1x4: fn(DType, &[u8], [&[u8]; 4], usize) -> [f32; 4],
    /// Four weight rows × one activation row (decode: four independent weight streams, activations loaded once).
    pub dot_4x1: fn(DType, [&[u8]; 4], &[u8], usize) -> [f32; 4],
    /// Four weight rows × four activation rows (prompt processing): `[row][token]`.
    pub dot_4x4: fn(DType, [&[u8]; 4], [&[u8]; 4], usize) -> [[f32; 4]; 4],
    /// Four bf16/f16 weight rows × four f32 activation rows (prompt processing), `[row][token]`; None: one
    /// row × one token at a time.
    pub float_tile4: Option<fn(DType, [&[u8]; 4], [&[f32]; 4]) -> [[f32; 4]; 4]>,
    /// The weight types this variant reads in the 16-row packed layout ([`super::packed`]); the others stay
    /// row-major.
    pub packed_types: &'static [DType],
    /// A 16-row packed group × one activation row (packed Q8_0 rows for the legacy types, Q8_K rows for the
    /// k-quants), `nb` blocks: `[row]`.
    pub packed_tile1: Option<fn(DType, &[u8], &[u8], usize) -> [f32; 16]>,
    /// A 16-row packed group × four activation rows: `[token][row]`.
    pub packed_tile4: Option<fn(DType, &[u8], [&[u8]; 4], usize) -> [[f32; 16]; 4]>,
}

fn scalar_dot_1x4(dtype: DType, w: &[u8], a: [&[u8]; 4], n: usize) -> [f32; 4] {
    a.map(|a| quant::vec_dot(dtype, w, a, n))
}

fn scalar_dot_4x1(dtype: DType, w: [&[u8]; 4], a: &[u8], n: usize) -> [f32; 4] {
    w.map(|w| quant::vec_dot(dtype, w, a, n))
}

fn scalar_dot_4x4(dtype: DType, w: [&[u8]; 4], a: [&[u8]; 4], n: usize) -> [[f32; 4]; 4] {
    w.map(|w| scalar_dot_1x4(dtype, w, a, n))
}

static SCALAR: Kernels = Kernels {
    name: "scalar",
    dot_f32: scalar::dot_f32,
    dot_bf16: scalar::dot_bf16,
    dot_f16: scalar::dot_f16,
    dot_q: quant::vec_dot,
    dot_1x4: scalar_dot_1x4,
    dot_4x1: scalar_dot_4x1,
    dot_4x4: scalar_dot_4x4,
    float_tile4: None,
    packed_types: &[],
    packed_tile1: None,
    packed_tile4: None,
};

#[cfg(target_arch = "x86_64")]
static AVX2: Kernels = {
    use super::{x86::avx2 as float, x86_packed::avx2 as packed, x86_quant::avx2 as q};
    Kernels {
        name: "avx2",
        dot_f32: float::dot_f32,
        dot_bf16: float::dot_bf16,
        dot_f16: float::dot_f16,
        dot_q: q::dot_q,
        dot_1x4: q::dot_1x4,
        dot_4x1: q::dot_4x1,
        dot_4x4: q::dot_4x4,
        float_tile4: Some(float::float_tile4),
        packed_types: &[DType::Q8_0, DType::Q4_0, DType::Q5_0],
        packed_tile1: Some(packed::tile1),
        packed_tile4: Some(packed::tile4),
    }
};

#[cfg(target_arch = "x86_64")]
static AVX512: Kernels = {
    use super::{x86::avx512 as float, x86_packed::avx512 as packed, x86_quant::vnni as q};
    Kernels {
        name: "avx512",
        dot_f32: float::dot_f32,
        dot_bf16: float::dot_bf16,
        // No AVX-512 variant: the AVX2 one.
        dot_f16: super::x86::avx2::dot_f16,
        dot_q: q::dot_q,
        dot_1x4: q::dot_1x4,
        dot_4x1: q::dot_4x1,
        dot_4x4: q::dot_4x4,
        float_tile4: Some(float::float_tile4),
        packed_types: &[DType::Q8_0, DType::Q4_0, DType::Q5_0, DType::Q4_K, DType::Q6_K],
        packed_tile1: Some(packed::tile1),
        packed_tile4: Some(packed::tile4),
    }
};

impl Kernels {
    /// The best variant for this CPU; `GEMMA_KERNELS=scalar|avx2|avx512` picks another available one
    /// (for comparisons and benchmarks).
    pub fn get() -> &'static Kernels {
        static CHOSEN: OnceLock<&'static Kernels> = OnceLock::new();
        CHOSEN.get_or_init(|| {
            let avail = Self::available();
            if let Ok(want) = std::env::var("GEMMA_KERNELS") {
                if let Some(k) = avail.iter().find(|k| k.name == want) {
                    return k;
                }
            }
            avail.last().copied().unwrap_or(&SCALAR)
        })
    }

    /// Every variant this CPU can run, the scalar reference first, the fastest last.
    pub fn available() -> Vec<&'static Kernels> {
        #[allow(unused_mut)]
        let mut v: Vec<&'static Kernels> = vec![&SCALAR];
        #[cfg(target_arch = "x86_64")]
        {
            if super::x86::avx2::detected() {
                v.push(&AVX2);
            }
            if super::x86::avx512::detected() {
                v.push(&AVX512);
            }
        }
        v
    }

    pub fn scalar() -> &'static Kernels {
        &SCALAR
    }
}

pub mod scalar {
    //! Plain Rust references: the specification the SIMD variants are tested against.
    use crate::quant::{bf16_to_f32, f16_to_f32};

    pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
        // Eight independent partial sums: as accurate as a sequential sum and lets the compiler vectorize.
        let mut acc = [0f32; 8];
        let (ca, ra) = a.split_at(a.len() / 8 * 8);
        let (cb, rb) = b.split_at(ca.len());
        for (x, y) in ca.chunks_exact(8).zip(cb.chunks_exact(8)) {
            for i in 0..8 {
                acc[i] += x[i] * y[i];
            }
        }
        let mut s: f32 = acc.iter().sum();
        for (x, y) in ra.iter().zip(rb) {
            s += x * y;
        }
        s
    }

    pub fn dot_bf16(w: &[u8], x: &[f32]) -> f32 {
        let mut acc = [0f32; 8];
        let n8 = x.len() / 8 * 8;
        for (wc, xc) in w[..2 * n8].chunks_exact(16).zip(x[..n8].chunks_exact(8)) {
            for i in 0..8 {
                acc[i] += bf16_to_f32([wc[2 * i], wc[2 * i + 1]]) * xc[i];
            }
        }
        let mut s: f32 = acc.iter().sum();
        for i in n8..x.len() {
            s += bf16_to_f32([w[2 * i], w[2 * i + 1]]) * x[i];
        }
        s
    }

    pub fn dot_f16(w: &[u8], x: &[f32]) -> f32 {
        let mut s = 0f32;
        for (wc, xv) in w.chunks_exact(2).zip(x) {
            s += f16_to_f32([wc[0], wc[1]]) * xv;
        }
        s
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! Every available variant against the scalar reference, on lengths that exercise the vector tails.
    use super::*;
    use crate::kernels::quantize_acts;
    use crate::quant::{ActFormat, QuantizedActs};

    fn data(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Reductions in another order differ by rounding only: bound by n·eps·Σ|a·b|.
    fn close(a: f32, b: f32, scale: f32, n: usize) -> bool {
        (a - b).abs() <= 2.0 * n as f32 * f32::EPSILON * scale + 1e-6
    }

    /// The 4×4 half-float tile equals the scalar dot of each (row, token) pair, tails included.
    #[test]
    fn float_tiles_agree_with_scalar() {
        for n in [1, 15, 16, 17, 100, 640] {
            let xs: Vec<Vec<f32>> = (0..4).map(|t| data(n, 20 + t)).collect();
            for dtype in [DType::BF16, DType::F16] {
                let rows: Vec<Vec<u8>> = (0..4)
                    .map(|r| {
                        data(n, 40 + r).iter().flat_map(|&v| if dtype == DType::BF16 { half::bf16::from_f32(v).to_le_bytes() } else { half::f16::from_f32(v).to_le_bytes() }).collect()
                    })
                    .collect();
                for k in Kernels::available() {
                    let Some(tile) = k.float_tile4 else { continue };
                    let got = tile(dtype, std::array::from_fn(|r| &rows[r][..]), std::array::from_fn(|t| &xs[t][..]));
                    for r in 0..4 {
                        for t in 0..4 {
                            let want = if dtype == DType::BF16 { scalar::dot_bf16(&rows[r], &xs[t]) } else { scalar::dot_f16(&rows[r], &xs[t]) };
                            let scale: f32 = xs[t].iter().map(|v| v.abs()).sum::<f32>() * 4.0;
                            assert!(close(got[r][t], want, scale, n), "{} {dtype} n={n} r={r} t={t}: {} vs {want}", k.name, got[r][t]);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn float_dots_agree_with_scalar() {
        for n in [1, 7, 8, 15, 16, 31, 64, 100, 640, 2048 + 3] {
            let (a, b) = (data(n, 1), data(n, 2));
            let bf: Vec<u8> = a.iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect();
            let hf: Vec<u8> = a.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect();
            let scale: f32 = a.iter().zip(&b).map(|(x, y)| (x * y).abs()).sum();
            for k in Kernels::available() {
                assert!(close((k.dot_f32)(&a, &b), scalar::dot_f32(&a, &b), scale, n), "{} f32 n={n}", k.name);
                assert!(close((k.dot_bf16)(&bf, &b), scalar::dot_bf16(&bf, &b), scale, n), "{} bf16 n={n}", k.name);
                assert!(close((k.dot_f16)(&hf, &b), scalar::dot_f16(&hf, &b), scale, n), "{} f16 n={n}", k.name);
            }
        }
    }

    /// Random bytes are valid blocks of every type once their f16 scales are made finite and small.
    pub(crate) fn random_blocks(dtype: DType, n: usize, seed: u32) -> Vec<u8> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(7);
        let mut b: Vec<u8> = (0..dtype.row_bytes(n).unwrap())
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                s as u8
            })
            .collect();
        let bb = dtype.block_bytes();
        let scale_offsets: &[usize] = match dtype {
            DType::Q4_0 | DType::Q5_0 | DType::Q8_0 => &[0],
            DType::Q4_1 | DType::Q5_1 => &[0, 2],
            DType::Q4_K | DType::Q5_K => &[0, 2],
            DType::Q2_K => &[80, 82],
            DType::Q3_K => &[108],
            DType::Q6_K => &[208],
            _ => &[],
        };
        for blk in b.chunks_exact_mut(bb) {
            for &o in scale_offsets {
                let v = (blk[o] as f32 / 255.0 + 0.1) * 0.01;
                blk[o..o + 2].copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
            }
        }
        b
    }

    #[test]
    fn quant_dots_agree_with_scalar() {
        for dtype in DType::ALL.into_iter().filter(|d| d.is_quantized()) {
            for n in [256, 512, 2048] {
                let w = random_blocks(dtype, n, n as u32 + dtype.ggml_id());
                let x = data(n, 5);
                let mut xq = QuantizedActs::new();
                quantize_acts(dtype.act_format(), &x, n, &mut xq);
                let want = crate::quant::vec_dot(dtype, &w, xq.row(0), n);
                let mut wf = vec![0f32; n];
                crate::quant::dequantize_row(dtype, &w, &mut wf);
                let scale: f32 = wf.iter().zip(&x).map(|(a, b)| (a * b).abs()).sum();
                for k in Kernels::available() {
                    let got = (k.dot_q)(dtype, &w, xq.row(0), n);
                    // Exact integer sums per block; only the order of the f32 block sums differs.
                    assert!((got - want).abs() <= 1e-5 * scale + 1e-6, "{} {dtype} n={n}: {got} vs {want}", k.name);
                    // dot_1x4: this activation row in two lanes, another in the other two.
                    let other = {
                        let mut q = QuantizedActs::new();
                        quantize_acts(dtype.act_format(), &data(n, 9), n, &mut q);
                        q
                    };
                    let four = (k.dot_1x4)(dtype, &w, [other.row(0), xq.row(0), other.row(0), xq.row(0)], n);
                    assert!((four[1] - want).abs() <= 1e-5 * scale + 1e-6 && four[1] == four[3], "{} {dtype} 1x4", k.name);
                    assert_eq!(four[0], four[2]);
                    assert!((four[0] - crate::quant::vec_dot(dtype, &w, other.row(0), n)).abs() <= 1e-5 * scale + 1e-3, "{} {dtype} 1x4", k.name);
                    // dot_4x1: this weight row among three others, in every position.
                    let others: Vec<Vec<u8>> = (0..3).map(|j| random_blocks(dtype, n, 100 + j)).collect();
                    let want_o: Vec<f32> = others.iter().map(|o| crate::quant::vec_dot(dtype, o, xq.row(0), n)).collect();
                    for pos in 0..4 {
                        let mut rows: [&[u8]; 4] = [&others[0], &others[1], &others[2], &others[2]];
                        let mut wants = [want_o[0], want_o[1], want_o[2], want_o[2]];
                        rows[pos] = &w;
                        wants[pos] = want;
                        let got = (k.dot_4x1)(dtype, rows, xq.row(0), n);
                        for r in 0..4 {
                            // Scales of the other rows are of the same size, so `scale` bounds them too (loosely).
                            assert!((got[r] - wants[r]).abs() <= 1e-5 * scale + 1e-3, "{} {dtype} 4x1 pos={pos} r={r}: {} vs {}", k.name, got[r], wants[r]);
                        }
                        assert_eq!(got[pos], (k.dot_q)(dtype, &w, xq.row(0), n), "{} {dtype} 4x1 matches dot_q exactly", k.name);
                        // dot_4x4: the same rows × (this activation row among others), exactly dot_1x4 row by row.
                        let acts = [other.row(0), xq.row(0), other.row(0), xq.row(0)];
                        let tile = (k.dot_4x4)(dtype, rows, acts, n);
                        for r in 0..4 {
                            assert_eq!(tile[r], (k.dot_1x4)(dtype, rows[r], acts, n), "{} {dtype} 4x4 pos={pos} r={r}", k.name);
                            assert!((tile[r][1] - wants[r]).abs() <= 1e-5 * scale + 1e-3, "{} {dtype} 4x4 vs reference", k.name);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn q8_0_dot_agrees_with_scalar() {
        for n in [32, 64, 640, 2048] {
            let (w, x) = (data(n, 3), data(n, 4));
            let mut wq = QuantizedActs::new();
            let mut xq = QuantizedActs::new();
            quantize_acts(ActFormat::Q8_0, &w, n, &mut wq);
            quantize_acts(ActFormat::Q8_0, &x, n, &mut xq);
            let want = crate::quant::vec_dot(DType::Q8_0, wq.row(0), xq.row(0), n);
            for k in Kernels::available() {
                let got = (k.dot_q)(DType::Q8_0, wq.row(0), xq.row(0), n);
                // Integer sums per block are exact; only the f32 accumulation of blocks differs in order.
                assert!((got - want).abs() <= 1e-5 * (1.0 + want.abs()), "{} n={n}: {got} vs {want}", k.name);
            }
        }
    }
}

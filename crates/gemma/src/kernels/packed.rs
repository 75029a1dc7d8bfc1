//! The legacy block types (Q8_0, Q4_0, Q5_0) re-laid 16 rows at a time for SIMD integer dot products.
//!
//! In a GGUF file each row is a run of blocks (`f16 d`, 32 codes). A SIMD dot product of one row spends most
//! of its instructions on bookkeeping per block: converting the two scales, widening, reducing 8 lanes to one
//! sum. Interleaving 16 rows turns that around: one 512-bit register holds the same four values of 16 rows,
//! one broadcast activation word meets all 16 (`vpdpbusd`), each lane accumulates its own row, and the 16
//! scales of a block are one 32-byte load. Nothing is widened: the packed matrix has exactly the bytes of the
//! original (16 × the block size per 16-row block), and [`unpack_row`] gives back any original row bit for bit.
//!
//! Layout of one packed block (16 rows `j`, one block of 32 values `i` per row), `code` = unsigned code:
//! - bytes 0..32: the 16 row scales `d_j`, f16;
//! - Q8_0: 8 chunks of 64 bytes; byte `64k + 4j + e` = `q_j[4k + e] + 128` (so codes are unsigned, offset 128);
//! - Q4_0: 4 chunks of 64 bytes; byte `64c + 4j + e` = `code_j[4c + e] | code_j[4(c + 4) + e] << 4` (offset 8);
//! - Q5_0: the Q4_0 chunks of low nibbles, then 8 little-endian u64 bit planes: bit `4j + e` of plane `k` is
//!   the fifth bit of `code_j[4k + e]` (offset 16).
//!
//! With unsigned codes `c = q + offset`: Σ q·a = Σ c·a − offset·Σ a, and Σ a is computed once per activation
//! block ([`PackedActs`]), so the kernels need no sign tricks.

use crate::quant::{DType, QuantizedActs};

/// Rows per packed group: one 32-bit lane per row in a 512-bit register.
pub const GROUP: usize = 16;

/// Whether `dtype` has a packed layout.
pub fn packable(dtype: DType) -> bool {
    matches!(dtype, DType::Q8_0 | DType::Q4_0 | DType::Q5_0)
}

/// Bytes of one packed block (16 rows × 32 values).
pub fn block_bytes(dtype: DType) -> usize {
    GROUP * dtype.block_bytes()
}

/// The code offset of each type: stored value = code − offset.
pub fn offset(dtype: DType) -> i32 {
    match dtype {
        DType::Q8_0 => 128,
        DType::Q4_0 => 8,
        DType::Q5_0 => 16,
        _ => unreachable!("not a packed type: {dtype}"),
    }
}

/// The 32 unsigned codes of one original block.
fn codes_of(dtype: DType, blk: &[u8]) -> [u8; 32] {
    let mut c = [0u8; 32];
    match dtype {
        DType::Q8_0 => {
            for i in 0..32 {
                c[i] = blk[2 + i] ^ 0x80;
            }
        }
        DType::Q4_0 => {
            for i in 0..16 {
                c[i] = blk[2 + i] & 0x0F;
                c[i + 16] = blk[2 + i] >> 4;
            }
        }
        DType::Q5_0 => {
            let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
            for i in 0..16 {
                c[i] = (blk[6 + i] & 0x0F) | (((qh >> i) & 1) << 4) as u8;
                c[i + 16] = (blk[6 + i] >> 4) | (((qh >> (i + 16)) & 1) << 4) as u8;
            }
        }
        _ => unreachable!(),
    }
    c
}

/// One original block from its scale bytes and 32 codes.
fn block_of(dtype: DType, d: [u8; 2], c: &[u8; 32], out: &mut [u8]) {
    out[..2].copy_from_slice(&d);
    match dtype {
        DType::Q8_0 => {
            for i in 0..32 {
                out[2 + i] = c[i] ^ 0x80;
            }
        }
        DType::Q4_0 => {
            for i in 0..16 {
                out[2 + i] = c[i] | c[i + 16] << 4;
            }
        }
        DType::Q5_0 => {
            let mut qh = 0u32;
            for i in 0..32 {
                qh |= ((c[i] >> 4) as u32 & 1) << i;
            }
            out[2..6].copy_from_slice(&qh.to_le_bytes());
            for i in 0..16 {
                out[6 + i] = (c[i] & 0x0F) | (c[i + 16] & 0x0F) << 4;
            }
        }
        _ => unreachable!(),
    }
}

/// Pack `rows × cols` of `dtype` (rows a multiple of [`GROUP`]) into `out` (the same number of bytes).
pub fn pack(dtype: DType, rows: usize, cols: usize, src: &[u8], out: &mut [u8]) {
    assert!(packable(dtype) && rows % GROUP == 0);
    let (bb, nb) = (dtype.block_bytes(), cols / 32);
    let rb = nb * bb;
    assert!(src.len() == rows * rb && out.len() == src.len());
    let pb = block_bytes(dtype);
    for g in 0..rows / GROUP {
        for b in 0..nb {
            let dst = &mut out[(g * nb + b) * pb..(g * nb + b + 1) * pb];
            for j in 0..GROUP {
                let blk = &src[(g * GROUP + j) * rb + b * bb..][..bb];
                dst[2 * j..2 * j + 2].copy_from_slice(&blk[..2]);
                let c = codes_of(dtype, blk);
                put_codes(dtype, dst, j, &c);
            }
        }
    }
}

fn put_codes(dtype: DType, dst: &mut [u8], j: usize, c: &[u8; 32]) {
    let q = &mut dst[32..];
    for e in 0..4 {
        match dtype {
            DType::Q8_0 => {
                for k in 0..8 {
                    q[64 * k + 4 * j + e] = c[4 * k + e];
                }
            }
            _ => {
                for k in 0..4 {
                    q[64 * k + 4 * j + e] = (c[4 * k + e] & 0x0F) | (c[4 * (k + 4) + e] & 0x0F) << 4;
                }
                if dtype == DType::Q5_0 {
                    for k in 0..8 {
                        let bit = 4 * j + e;
                        let plane = &mut q[256 + 8 * k..256 + 8 * k + 8];
                        plane[bit / 8] |= ((c[4 * k + e] >> 4) & 1) << (bit % 8);
                    }
                }
            }
        }
    }
}

fn get_codes(dtype: DType, blk: &[u8], j: usize) -> [u8; 32] {
    let q = &blk[32..];
    let mut c = [0u8; 32];
    for e in 0..4 {
        match dtype {
            DType::Q8_0 => {
                for k in 0..8 {
                    c[4 * k + e] = q[64 * k + 4 * j + e];
                }
            }
            _ => {
                for k in 0..4 {
                    let b = q[64 * k + 4 * j + e];
                    c[4 * k + e] = b & 0x0F;
                    c[4 * (k + 4) + e] = b >> 4;
                }
                if dtype == DType::Q5_0 {
                    for k in 0..8 {
                        let bit = 4 * j + e;
                        c[4 * k + e] |= ((q[256 + 8 * k + bit / 8] >> (bit % 8)) & 1) << 4;
                    }
                }
            }
        }
    }
    c
}

/// Row `r` of a packed matrix in the original layout (embedding lookups; tests).
pub fn unpack_row(dtype: DType, cols: usize, packed: &[u8], r: usize, out: &mut [u8]) {
    let (bb, nb, pb) = (dtype.block_bytes(), cols / 32, block_bytes(dtype));
    let (g, j) = (r / GROUP, r % GROUP);
    for b in 0..nb {
        let blk = &packed[(g * nb + b) * pb..][..pb];
        let c = get_codes(dtype, blk, j);
        block_of(dtype, [blk[2 * j], blk[2 * j + 1]], &c, &mut out[b * bb..(b + 1) * bb]);
    }
}

/// Activation rows for the packed kernels: Q8_0 blocks (same scales and codes, so the integer sums equal
/// llama.cpp's) re-laid as `{f32 d, i32 Σq, i8 q[32]}`, 40 bytes per 32 values.
#[derive(Debug, Default, Clone)]
pub struct PackedActs {
    pub n: usize,
    pub n_rows: usize,
    pub data: Vec<u8>,
}

pub const ACT_BLOCK: usize = 40;

impl PackedActs {
    /// From Q8_0-quantized activations.
    pub fn fill_from(&mut self, q: &QuantizedActs) {
        debug_assert_eq!(q.format, crate::quant::ActFormat::Q8_0);
        let nb = q.n / 32;
        self.n = q.n;
        self.n_rows = q.n_rows;
        self.data.resize(q.n_rows * nb * ACT_BLOCK, 0);
        for (src, dst) in q.data.chunks_exact(34).zip(self.data.chunks_exact_mut(ACT_BLOCK)) {
            let d = half::f16::from_le_bytes([src[0], src[1]]).to_f32();
            let s: i32 = src[2..34].iter().map(|&v| v as i8 as i32).sum();
            dst[0..4].copy_from_slice(&d.to_le_bytes());
            dst[4..8].copy_from_slice(&s.to_le_bytes());
            dst[8..40].copy_from_slice(&src[2..34]);
        }
    }
    pub fn row(&self, t: usize) -> &[u8] {
        let rb = self.n / 32 * ACT_BLOCK;
        &self.data[t * rb..(t + 1) * rb]
    }
}

/// The reference: 16 rows of packed group `w` × N activation rows, `nb` blocks; `[token][row]`.
pub fn tile_scalar<const N: usize>(dtype: DType, w: &[u8], a: [&[u8]; N], nb: usize) -> [[f32; GROUP]; N] {
    let pb = block_bytes(dtype);
    let off = offset(dtype);
    let mut acc = [[0f32; GROUP]; N];
    for b in 0..nb {
        let blk = &w[b * pb..(b + 1) * pb];
        for j in 0..GROUP {
            let dw = half::f16::from_le_bytes([blk[2 * j], blk[2 * j + 1]]).to_f32();
            let c = get_codes(dtype, blk, j);
            for (t, a) in a.iter().enumerate() {
                let ab = &a[b * ACT_BLOCK..(b + 1) * ACT_BLOCK];
                let da = f32::from_le_bytes(ab[0..4].try_into().unwrap());
                let sa = i32::from_le_bytes(ab[4..8].try_into().unwrap());
                let isum: i32 = c.iter().zip(&ab[8..]).map(|(&c, &q)| c as i32 * q as i8 as i32).sum::<i32>() - off * sa;
                acc[t][j] += dw * da * isum as f32;
            }
        }
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{quantize_acts, ActFormat};

    fn random_matrix(dtype: DType, rows: usize, cols: usize, seed: u32) -> Vec<u8> {
        let mut s = seed.wrapping_mul(2654435761) | 1;
        let mut b: Vec<u8> = (0..rows * dtype.row_bytes(cols).unwrap())
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                s as u8
            })
            .collect();
        for blk in b.chunks_exact_mut(dtype.block_bytes()) {
            let v = (blk[0] as f32 / 255.0 + 0.1) * 0.01;
            blk[..2].copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
        }
        b
    }

    #[test]
    fn pack_then_unpack_gives_back_every_row() {
        for dtype in [DType::Q8_0, DType::Q4_0, DType::Q5_0] {
            let (rows, cols) = (48, 96);
            let src = random_matrix(dtype, rows, cols, 3);
            let mut p = vec![0u8; src.len()];
            pack(dtype, rows, cols, &src, &mut p);
            let rb = dtype.row_bytes(cols).unwrap();
            let mut row = vec![0u8; rb];
            for r in 0..rows {
                unpack_row(dtype, cols, &p, r, &mut row);
                assert_eq!(row, src[r * rb..(r + 1) * rb], "{dtype} row {r}");
            }
        }
    }

    /// Every available packed kernel (and the scalar one) equals the row-major reference `vec_dot` on every
    /// row, up to float summation order (the integer block sums are exact).
    #[test]
    fn packed_kernels_agree_with_vec_dot() {
        for dtype in [DType::Q8_0, DType::Q4_0, DType::Q5_0] {
            for cols in [32, 256, 640] {
                let rows = 32;
                let src = random_matrix(dtype, rows, cols, cols as u32);
                let mut p = vec![0u8; src.len()];
                pack(dtype, rows, cols, &src, &mut p);
                let x: Vec<f32> = (0..4 * cols).map(|i| ((i * 7919) % 1000) as f32 / 250.0 - 2.0).collect();
                let mut q = QuantizedActs::new();
                quantize_acts(ActFormat::Q8_0, &x, cols, &mut q);
                let mut pa = PackedActs::default();
                pa.fill_from(&q);
                let rb = dtype.row_bytes(cols).unwrap();
                let nb = cols / 32;
                let gb = nb * block_bytes(dtype);
                let want = |t: usize, r: usize| crate::quant::vec_dot(dtype, &src[r * rb..(r + 1) * rb], q.row(t), cols);
                let bound = |t: usize, r: usize| {
                    let mut wf = vec![0f32; cols];
                    crate::quant::dequantize_row(dtype, &src[r * rb..(r + 1) * rb], &mut wf);
                    1e-5 * wf.iter().zip(&x[t * cols..]).map(|(a, b)| (a * b).abs()).sum::<f32>() + 1e-6
                };
                let acts = [pa.row(0), pa.row(1), pa.row(2), pa.row(3)];
                let mut variants: Vec<(&str, [[f32; GROUP]; 4], [f32; GROUP])> = Vec::new();
                for g in 0..rows / GROUP {
                    let w = &p[g * gb..(g + 1) * gb];
                    variants.clear();
                    variants.push(("scalar", tile_scalar(dtype, w, acts, nb), tile_scalar(dtype, w, [acts[2]], nb)[0]));
                    for k in super::super::dot::Kernels::available() {
                        if let (Some(t4), Some(t1)) = (k.packed_tile4, k.packed_tile1) {
                            variants.push((k.name, t4(dtype, w, acts, nb), t1(dtype, w, acts[2], nb)));
                        }
                    }
                    for (name, t4, t1) in &variants {
                        for j in 0..GROUP {
                            let r = g * GROUP + j;
                            for t in 0..4 {
                                let (got, w) = (t4[t][j], want(t, r));
                                assert!((got - w).abs() <= bound(t, r), "{name} {dtype} cols={cols} r={r} t={t}: {got} vs {w}");
                            }
                            assert!((t1[j] - want(2, r)).abs() <= bound(2, r), "{name} {dtype} one token, r={r}");
                        }
                    }
                }
            }
        }
    }
}

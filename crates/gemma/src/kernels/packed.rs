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
//!
//! The k-quants Q4_K and Q6_K (256-value super-blocks, llama.cpp's `Q4_K_M` mix) get the same treatment, one
//! super-block of 16 rows at a time, and meet the Q8_K activation rows as they are:
//! - Q4_K: `d[16]`, `dmin[16]` (f16), then the 6-bit scales `sc[s][j]` and mins `m[s][j]` unpacked to bytes
//!   (128 + 128 bytes, where the file packs them in 12 per row: 4 bytes more per row and super-block), then
//!   per sub-block `s` of 32 values 256 bytes of nibbles laid as Q4_0's;
//! - Q6_K: `d[16]`, the signed scales of sub-block pairs `sc[p][j][2]` (256 bytes), per 32 values (`u`) 256
//!   bytes of low nibbles laid as Q4_0's, then per `u` 128 bytes of top bit pairs: bits `2i..2i+2` of byte
//!   `64h + 4j + e` = top bits of value `32u + 4(h + 2i) + e` (the code is stored + 32, as in the file).

use crate::quant::{DType, QuantizedActs};

/// Rows per packed group: one 32-bit lane per row in a 512-bit register.
pub const GROUP: usize = 16;

/// Whether `dtype` has a packed layout.
pub fn packable(dtype: DType) -> bool {
    matches!(dtype, DType::Q8_0 | DType::Q4_0 | DType::Q5_0 | DType::Q4_K | DType::Q6_K)
}

/// Whether `dtype` is a k-quant (256-value super-blocks, Q8_K activations).
pub fn is_k(dtype: DType) -> bool {
    matches!(dtype, DType::Q4_K | DType::Q6_K)
}

/// Bytes of one packed block (16 rows × one block of `dtype`).
pub fn block_bytes(dtype: DType) -> usize {
    match dtype {
        DType::Q4_K => GROUP * (dtype.block_bytes() + 4),
        _ => GROUP * dtype.block_bytes(),
    }
}

/// Bytes of a packed `rows × cols` matrix.
pub fn packed_len(dtype: DType, rows: usize, cols: usize) -> usize {
    rows / GROUP * (cols / dtype.block_len()) * block_bytes(dtype)
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

/// Pack `rows × cols` of `dtype` (rows a multiple of [`GROUP`]) into `out` ([`packed_len`] bytes).
pub fn pack(dtype: DType, rows: usize, cols: usize, src: &[u8], out: &mut [u8]) {
    assert!(packable(dtype) && rows % GROUP == 0);
    let (bb, nb) = (dtype.block_bytes(), cols / dtype.block_len());
    let rb = nb * bb;
    assert!(src.len() == rows * rb && out.len() == packed_len(dtype, rows, cols));
    let pb = block_bytes(dtype);
    for g in 0..rows / GROUP {
        for b in 0..nb {
            let dst = &mut out[(g * nb + b) * pb..(g * nb + b + 1) * pb];
            for j in 0..GROUP {
                let blk = &src[(g * GROUP + j) * rb + b * bb..][..bb];
                match dtype {
                    DType::Q4_K => put_q4_k(dst, j, blk),
                    DType::Q6_K => put_q6_k(dst, j, blk),
                    DType::Q8_0 => {
                        // The common case (every tied output matrix), a word at a time: 9 GB for a 7B model.
                        dst[2 * j..2 * j + 2].copy_from_slice(&blk[..2]);
                        for (k, w) in blk[2..34].chunks_exact(4).enumerate() {
                            let v = u32::from_le_bytes([w[0], w[1], w[2], w[3]]) ^ 0x8080_8080;
                            dst[32 + 64 * k + 4 * j..32 + 64 * k + 4 * j + 4].copy_from_slice(&v.to_le_bytes());
                        }
                    }
                    _ => {
                        dst[2 * j..2 * j + 2].copy_from_slice(&blk[..2]);
                        put_codes(dtype, dst, j, &codes_of(dtype, blk));
                    }
                }
            }
        }
    }
}

/// Nibbles of 32 codes at `q` in Q4_0's packed order (lane `j`): byte `64c + 4j + e` = code `4c + e` | code `4(c + 4) + e` << 4.
fn put_nibbles(q: &mut [u8], j: usize, c: &[u8]) {
    for c4 in 0..4 {
        for e in 0..4 {
            q[64 * c4 + 4 * j + e] = (c[4 * c4 + e] & 0x0F) | (c[4 * (c4 + 4) + e] & 0x0F) << 4;
        }
    }
}

fn get_nibbles(q: &[u8], j: usize, c: &mut [u8]) {
    for c4 in 0..4 {
        for e in 0..4 {
            let b = q[64 * c4 + 4 * j + e];
            c[4 * c4 + e] = b & 0x0F;
            c[4 * (c4 + 4) + e] = b >> 4;
        }
    }
}

/// Q4_K's 8 scales and 8 mins from their 12 packed bytes, and back.
fn q4_k_scales(s: &[u8]) -> ([u8; 8], [u8; 8]) {
    let (mut sc, mut m) = ([0u8; 8], [0u8; 8]);
    for j in 0..8 {
        (sc[j], m[j]) = if j < 4 { (s[j] & 63, s[j + 4] & 63) } else { ((s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4)) };
    }
    (sc, m)
}

fn q4_k_scales_bytes(sc: &[u8; 8], m: &[u8; 8]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for j in 0..4 {
        s[j] = sc[j] | (sc[j + 4] >> 4) << 6;
        s[j + 4] = m[j] | (m[j + 4] >> 4) << 6;
        s[j + 8] = (sc[j + 4] & 0x0F) | (m[j + 4] & 0x0F) << 4;
    }
    s
}

fn put_q4_k(dst: &mut [u8], j: usize, blk: &[u8]) {
    dst[2 * j..2 * j + 2].copy_from_slice(&blk[0..2]);
    dst[32 + 2 * j..32 + 2 * j + 2].copy_from_slice(&blk[2..4]);
    let (sc, m) = q4_k_scales(&blk[4..16]);
    for s in 0..8 {
        dst[64 + 16 * s + j] = sc[s];
        dst[192 + 16 * s + j] = m[s];
        // Sub-block s: values 32s..32s+32, the low (s even) or high (s odd) nibbles of qs[32(s/2)..].
        let mut c = [0u8; 32];
        for (l, c) in c.iter_mut().enumerate() {
            let b = blk[16 + 32 * (s / 2) + l];
            *c = if s % 2 == 0 { b & 0x0F } else { b >> 4 };
        }
        put_nibbles(&mut dst[320 + 256 * s..], j, &c);
    }
}

fn get_q4_k(src: &[u8], j: usize, blk: &mut [u8]) {
    blk[0..2].copy_from_slice(&src[2 * j..2 * j + 2]);
    blk[2..4].copy_from_slice(&src[32 + 2 * j..32 + 2 * j + 2]);
    let (mut sc, mut m) = ([0u8; 8], [0u8; 8]);
    for s in 0..8 {
        sc[s] = src[64 + 16 * s + j];
        m[s] = src[192 + 16 * s + j];
        let mut c = [0u8; 32];
        get_nibbles(&src[320 + 256 * s..], j, &mut c);
        for (l, &c) in c.iter().enumerate() {
            let b = &mut blk[16 + 32 * (s / 2) + l];
            *b = if s % 2 == 0 { (*b & 0xF0) | c } else { (*b & 0x0F) | c << 4 };
        }
    }
    blk[4..16].copy_from_slice(&q4_k_scales_bytes(&sc, &m));
}

/// Q6_K's 256 six-bit codes (stored + 32) in value order.
fn q6_k_codes(blk: &[u8]) -> [u8; 256] {
    let (ql, qh) = (&blk[..128], &blk[128..192]);
    let mut c = [0u8; 256];
    for h in 0..2 {
        for j in 0..4 {
            for l in 0..32 {
                let lo = ql[64 * h + l + 32 * (j % 2)];
                let lo = if j < 2 { lo & 0x0F } else { lo >> 4 };
                c[128 * h + 32 * j + l] = lo | ((qh[32 * h + l] >> (2 * j)) & 3) << 4;
            }
        }
    }
    c
}

fn put_q6_k(dst: &mut [u8], j: usize, blk: &[u8]) {
    dst[2 * j..2 * j + 2].copy_from_slice(&blk[208..210]);
    for p in 0..8 {
        dst[32 + 32 * p + 2 * j] = blk[192 + 2 * p];
        dst[32 + 32 * p + 2 * j + 1] = blk[192 + 2 * p + 1];
    }
    let c = q6_k_codes(blk);
    for u in 0..8 {
        let cu = &c[32 * u..32 * u + 32];
        put_nibbles(&mut dst[288 + 256 * u..], j, cu);
        let hb = &mut dst[2336 + 128 * u..2336 + 128 * u + 128];
        for h in 0..2 {
            for e in 0..4 {
                let mut v = 0u8;
                for i in 0..4 {
                    v |= (cu[4 * (h + 2 * i) + e] >> 4) << (2 * i);
                }
                hb[64 * h + 4 * j + e] = v;
            }
        }
    }
}

fn get_q6_k(src: &[u8], j: usize, blk: &mut [u8]) {
    blk[208..210].copy_from_slice(&src[2 * j..2 * j + 2]);
    for p in 0..8 {
        blk[192 + 2 * p] = src[32 + 32 * p + 2 * j];
        blk[192 + 2 * p + 1] = src[32 + 32 * p + 2 * j + 1];
    }
    let mut c = [0u8; 256];
    for u in 0..8 {
        let cu = &mut c[32 * u..32 * u + 32];
        get_nibbles(&src[288 + 256 * u..], j, cu);
        let hb = &src[2336 + 128 * u..];
        for h in 0..2 {
            for e in 0..4 {
                let v = hb[64 * h + 4 * j + e];
                for i in 0..4 {
                    cu[4 * (h + 2 * i) + e] |= ((v >> (2 * i)) & 3) << 4;
                }
            }
        }
    }
    let (ql, qh) = blk[..192].split_at_mut(128);
    ql.fill(0);
    qh.fill(0);
    for h in 0..2 {
        for jj in 0..4 {
            for l in 0..32 {
                let v = c[128 * h + 32 * jj + l];
                let b = &mut ql[64 * h + l + 32 * (jj % 2)];
                *b |= if jj < 2 { v & 0x0F } else { (v & 0x0F) << 4 };
                qh[32 * h + l] |= (v >> 4) << (2 * jj);
            }
        }
    }
}

/// The 32 codes of row `j` into a legacy packed block (after its 32 bytes of scales).
fn put_codes(dtype: DType, dst: &mut [u8], j: usize, c: &[u8; 32]) {
    let q = &mut dst[32..];
    if dtype == DType::Q8_0 {
        for k in 0..8 {
            q[64 * k + 4 * j..64 * k + 4 * j + 4].copy_from_slice(&c[4 * k..4 * k + 4]);
        }
        return;
    }
    put_nibbles(q, j, c);
    if dtype == DType::Q5_0 {
        for i in 0..32 {
            let (k, bit) = (i / 4, 4 * j + i % 4);
            q[256 + 8 * k + bit / 8] |= ((c[i] >> 4) & 1) << (bit % 8);
        }
    }
}

fn get_codes(dtype: DType, blk: &[u8], j: usize) -> [u8; 32] {
    let q = &blk[32..];
    let mut c = [0u8; 32];
    if dtype == DType::Q8_0 {
        for k in 0..8 {
            c[4 * k..4 * k + 4].copy_from_slice(&q[64 * k + 4 * j..64 * k + 4 * j + 4]);
        }
        return c;
    }
    get_nibbles(q, j, &mut c);
    if dtype == DType::Q5_0 {
        for i in 0..32 {
            let (k, bit) = (i / 4, 4 * j + i % 4);
            c[i] |= ((q[256 + 8 * k + bit / 8] >> (bit % 8)) & 1) << 4;
        }
    }
    c
}

/// Block `b` of row `r` of a packed matrix, in the file's layout.
fn unpack_block(dtype: DType, cols: usize, packed: &[u8], r: usize, b: usize, dst: &mut [u8]) {
    let (nb, pb) = (cols / dtype.block_len(), block_bytes(dtype));
    let (g, j) = (r / GROUP, r % GROUP);
    let src = &packed[(g * nb + b) * pb..][..pb];
    match dtype {
        DType::Q4_K => get_q4_k(src, j, dst),
        DType::Q6_K => get_q6_k(src, j, dst),
        _ => block_of(dtype, [src[2 * j], src[2 * j + 1]], &get_codes(dtype, src, j), dst),
    }
}

/// Row `r` of a packed matrix in the original layout (tests; the scalar reference of the k-quant tiles).
pub fn unpack_row(dtype: DType, cols: usize, packed: &[u8], r: usize, out: &mut [u8]) {
    let bb = dtype.block_bytes();
    for (b, dst) in out[..cols / dtype.block_len() * bb].chunks_exact_mut(bb).enumerate() {
        unpack_block(dtype, cols, packed, r, b, dst);
    }
}

/// Row `r` of a packed matrix widened to f32, a block at a time (no allocation: embedding lookups in decode).
pub fn dequantize_row(dtype: DType, cols: usize, packed: &[u8], r: usize, out: &mut [f32]) {
    let (bb, bl) = (dtype.block_bytes(), dtype.block_len());
    let mut blk = [0u8; 256];
    for (b, y) in out[..cols].chunks_exact_mut(bl).enumerate() {
        unpack_block(dtype, cols, packed, r, b, &mut blk[..bb]);
        crate::quant::dequantize_row(dtype, &blk[..bb], y);
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
/// For the k-quants, `a` are Q8_K rows and each row is unpacked and handed to `vec_dot`.
pub fn tile_scalar<const N: usize>(dtype: DType, w: &[u8], a: [&[u8]; N], nb: usize) -> [[f32; GROUP]; N] {
    let pb = block_bytes(dtype);
    if is_k(dtype) {
        let n = nb * 256;
        let mut row = vec![0u8; nb * dtype.block_bytes()];
        let mut acc = [[0f32; GROUP]; N];
        for j in 0..GROUP {
            unpack_row(dtype, n, w, j, &mut row);
            for t in 0..N {
                acc[t][j] = crate::quant::vec_dot(dtype, &row, a[t], n);
            }
        }
        return acc;
    }
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
pub(crate) mod tests {
    use super::*;
    use crate::kernels::quantize_acts;

    /// `rows` rows of random blocks with small finite scales (rows are back to back, so this is one long row).
    pub(crate) fn random_matrix(dtype: DType, rows: usize, cols: usize, seed: u32) -> Vec<u8> {
        super::super::dot::tests::random_blocks(dtype, rows * cols, seed)
    }

    const TYPES: [DType; 5] = [DType::Q8_0, DType::Q4_0, DType::Q5_0, DType::Q4_K, DType::Q6_K];

    #[test]
    fn pack_then_unpack_gives_back_every_row() {
        for dtype in TYPES {
            let (rows, cols) = (48, 512);
            let src = random_matrix(dtype, rows, cols, 3);
            let mut p = vec![0u8; packed_len(dtype, rows, cols)];
            pack(dtype, rows, cols, &src, &mut p);
            let rb = dtype.row_bytes(cols).unwrap();
            let mut row = vec![0u8; rb];
            let (mut want, mut got) = (vec![0f32; cols], vec![0f32; cols]);
            for r in 0..rows {
                unpack_row(dtype, cols, &p, r, &mut row);
                assert_eq!(row, src[r * rb..(r + 1) * rb], "{dtype} row {r}");
                crate::quant::dequantize_row(dtype, &src[r * rb..(r + 1) * rb], &mut want);
                dequantize_row(dtype, cols, &p, r, &mut got);
                assert_eq!(want, got, "{dtype} row {r} dequantized");
            }
        }
    }

    /// Every available packed kernel (and the scalar one) equals the row-major reference `vec_dot` on every
    /// row, up to float summation order (the integer block sums are exact).
    #[test]
    fn packed_kernels_agree_with_vec_dot() {
        for dtype in TYPES {
            for cols in [256, 512, 2048] {
                let rows = 32;
                let src = random_matrix(dtype, rows, cols, cols as u32);
                let mut p = vec![0u8; packed_len(dtype, rows, cols)];
                pack(dtype, rows, cols, &src, &mut p);
                // Tokens of very different magnitudes, as real activations are (outliers included).
                let x: Vec<f32> = (0..4 * cols)
                    .map(|i| {
                        let v = ((i * 7919 + i / 7 * 31) % 1000) as f32 / 250.0 - 2.0;
                        let t = i / cols;
                        let outlier = if (i * 13) % 97 == 0 { 40.0 } else { 1.0 };
                        v * [1.0, 30.0, 0.05, 7.0][t] * outlier
                    })
                    .collect();
                let mut q = QuantizedActs::new();
                quantize_acts(dtype.act_format(), &x, cols, &mut q);
                let mut pa = PackedActs::default();
                let acts: [&[u8]; 4] = if is_k(dtype) {
                    [q.row(0), q.row(1), q.row(2), q.row(3)]
                } else {
                    pa.fill_from(&q);
                    [pa.row(0), pa.row(1), pa.row(2), pa.row(3)]
                };
                let rb = dtype.row_bytes(cols).unwrap();
                let nb = cols / dtype.block_len();
                let gb = nb * block_bytes(dtype);
                let want = |t: usize, r: usize| crate::quant::vec_dot(dtype, &src[r * rb..(r + 1) * rb], q.row(t), cols);
                let bound = |t: usize, r: usize| {
                    let mut wf = vec![0f32; cols];
                    crate::quant::dequantize_row(dtype, &src[r * rb..(r + 1) * rb], &mut wf);
                    1e-5 * wf.iter().zip(&x[t * cols..]).map(|(a, b)| (a * b).abs()).sum::<f32>() + 1e-6
                };
                let mut variants: Vec<(&str, [[f32; GROUP]; 4], [f32; GROUP])> = Vec::new();
                for g in 0..rows / GROUP {
                    let w = &p[g * gb..(g + 1) * gb];
                    variants.clear();
                    variants.push(("scalar", tile_scalar(dtype, w, acts, nb), tile_scalar(dtype, w, [acts[2]], nb)[0]));
                    for k in super::super::dot::Kernels::available() {
                        if let (true, Some(t4), Some(t1)) = (k.packed_types.contains(&dtype), k.packed_tile4, k.packed_tile1) {
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

//! The block-quant scalar references against an independent implementation: the `gguf` Python package
//! (llama.cpp's numpy dequantizers and reference quantizers), through the fixtures that
//! `tools/fixtures/make_quant_fixtures.py` writes to `tests/fixtures/quant/`.
//!
//! - dequantization: every value equal to the package's (same float operations in the same order);
//! - weight quantizers and activation quantizers: byte-identical output;
//! - `vec_dot` against f64 sums, with the error budgets stated at [`rounding_budget`] and [`act_budget`].

use std::path::PathBuf;

use gemma::quant::{dequantize_act_row, dequantize_row, quantize_row, quantize_row_q8_0, quantize_row_q8_1, quantize_row_q8_k, vec_dot, ActFormat, DType};

/// One activation row in `fmt` through the scalar reference quantizers: the specification these tests check
/// (the SIMD variants are checked against them byte for byte in the library's `kernels::ops` tests).
fn quantize_act_row(fmt: ActFormat, x: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; fmt.row_bytes(x.len())];
    match fmt {
        ActFormat::F32 => out = x.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ActFormat::Q8_0 => quantize_row_q8_0(x, &mut out),
        ActFormat::Q8_1 => quantize_row_q8_1(x, &mut out),
        ActFormat::Q8_K => quantize_row_q8_k(x, &mut out),
    }
    out
}

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/quant")
}

fn read(name: &str) -> Vec<u8> {
    let p = fixture_dir().join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e} (regenerate with tools/fixtures/make_quant_fixtures.py)", p.display()))
}

fn read_f32(name: &str) -> Vec<f32> {
    read(name).chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn dtype(name: &str) -> DType {
    DType::ALL.into_iter().find(|d| d.name() == name).unwrap_or_else(|| panic!("unknown type {name}"))
}

/// The weight fixtures listed in the manifest: (type, n_blocks).
fn weight_fixtures() -> Vec<(DType, usize)> {
    let m: serde_json::Value = serde_json::from_slice(&read("manifest.json")).unwrap();
    m["weights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            let d = dtype(w["type"].as_str().unwrap());
            assert_eq!(w["ggml_id"].as_u64().unwrap() as u32, d.ggml_id());
            assert_eq!(w["block_bytes"].as_u64().unwrap() as usize, d.block_bytes());
            assert_eq!(w["block_len"].as_u64().unwrap() as usize, d.block_len());
            (d, w["n_blocks"].as_u64().unwrap() as usize)
        })
        .collect()
}

#[test]
fn dequantize_matches_gguf_package() {
    let fixtures = weight_fixtures();
    assert_eq!(fixtures.len(), 12, "every quant type and f16/bf16");
    for (dt, nb) in fixtures {
        let blocks = read(&format!("{dt}.blocks"));
        let want = read_f32(&format!("{dt}.dequant.f32"));
        let n = nb * dt.block_len();
        assert_eq!((blocks.len(), want.len()), (nb * dt.block_bytes(), n), "{dt}");
        let mut got = vec![0f32; n];
        dequantize_row(dt, &blocks, &mut got);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            // Same operations in the same order as numpy: exactly equal (±0 compare equal).
            assert!(g == w, "{dt} element {i} (block {}): got {g:e}, gguf package {w:e}", i / dt.block_len());
        }
    }
}

#[test]
fn weight_quantizers_match_gguf_package() {
    let x = read_f32("quantize.input.f32");
    for name in ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "F16", "BF16"] {
        let dt = dtype(name);
        let want = read(&format!("{name}.quantized"));
        let mut got = vec![0u8; dt.row_bytes(x.len()).unwrap()];
        quantize_row(dt, &x, &mut got).unwrap();
        for (b, (g, w)) in got.chunks(dt.block_bytes()).zip(want.chunks(dt.block_bytes())).enumerate() {
            assert_eq!(g, w, "{name} block {b}");
        }
    }
}

#[test]
fn quantize_row_rejects_what_it_cannot_do() {
    let x = vec![0.5f32; 256];
    let mut out = vec![0u8; DType::Q4_K.block_bytes()];
    assert!(quantize_row(DType::Q4_K, &x, &mut out).is_err());
    let mut short = vec![0u8; 10];
    assert!(quantize_row(DType::Q8_0, &x, &mut short).is_err());
}

#[test]
fn activation_quantizers_match_reference() {
    let a = read_f32("act.input.f32");
    for (fmt, file) in [(ActFormat::Q8_1, "act.Q8_1.quantized"), (ActFormat::Q8_K, "act.Q8_K.quantized")] {
        let qa = quantize_act_row(fmt, &a);
        let want = read(file);
        for (b, (g, w)) in qa.chunks(fmt.block_bytes()).zip(want.chunks(fmt.block_bytes())).enumerate() {
            assert_eq!(g, w, "{fmt:?} block {b}");
        }
    }
    // Q8_0 activations are quantize_row_q8_0_ref, the Q8_0 weight quantizer.
    let x = read_f32("quantize.input.f32");
    assert_eq!(quantize_act_row(ActFormat::Q8_0, &x), read("Q8_0.quantized"));
}

// ---------------------------------------------------------------------------------------------------------
// vec_dot error budgets.

/// 2^-24: the unit roundoff of f32.
const U: f64 = 1.0 / 16_777_216.0;

/// Byte offsets of a block's f16 scale `d` and, for the types with an offset, its `m` / `dmin` (ggml-common.h).
fn scale_fields(dt: DType) -> (usize, Option<usize>) {
    match dt {
        DType::Q4_0 | DType::Q5_0 | DType::Q8_0 => (0, None),
        DType::Q4_1 | DType::Q5_1 | DType::Q4_K | DType::Q5_K => (0, Some(2)),
        DType::Q2_K => (80, Some(82)),
        DType::Q3_K => (108, None),
        DType::Q6_K => (208, None),
        _ => unreachable!(),
    }
}

/// The two parts of each weight, `w = scale_part + offset_part` (`d·q` and `m`, or `d·sc·q` and `-dmin·m`),
/// obtained by dequantizing copies of the row with the offset scale, respectively the main scale, zeroed.
fn weight_parts(dt: DType, row: &[u8], n: usize) -> (Vec<f32>, Vec<f32>) {
    if !dt.is_quantized() {
        let mut w = vec![0f32; n];
        dequantize_row(dt, row, &mut w);
        return (w, vec![0f32; n]);
    }
    let (d_at, m_at) = scale_fields(dt);
    let zeroed = |at: usize| {
        let mut r = row.to_vec();
        for b in r.chunks_exact_mut(dt.block_bytes()) {
            b[at..at + 2].fill(0);
        }
        let mut w = vec![0f32; n];
        dequantize_row(dt, &r, &mut w);
        w
    };
    match m_at {
        Some(m_at) => (zeroed(m_at), zeroed(d_at)),
        None => {
            let mut w = vec![0f32; n];
            dequantize_row(dt, row, &mut w);
            (w, vec![0f32; n])
        }
    }
}

/// Budget for `|vec_dot − Σ w_i·â_i|`, the f64 dot product of the dequantized weight and the dequantized
/// quantized activations. Both sides see the same integers, so only float rounding separates them:
/// - each super-block's products `d·d_y`, `(d·d_y)·isum` (and `isum` itself when it passes 2^24) and
///   `dmin·d_y·msum` round once each (≤ 3u of the scale part, 2u of the offset part), and the running f32 sum
///   adds ≤ u of the total per addition, two additions per block: ≤ 2·nb·u;
/// - the reference's weights are themselves rounded by the dequantizer (`d·sc·q - dmin·m` in f32: ≤ 2u).
///
/// So `(2·nb + 8)·u·M` with `M = Σ (|scale part_i| + |offset part_i|)·|â_i|` covers both, 8 for slack.
/// For Q4_1/Q5_1 the activation's `s = d_y·Σq_y` is stored as f16, so `m·s` carries up to 2^-11 relative
/// error (half an f16 ulp) plus 2^-25 absolute when `s` is an f16 subnormal: `Σ_blocks |m|·(2^-11·Σ|â| + 2^-25)`.
fn rounding_budget(dt: DType, scale: &[f32], offset: &[f32], a_hat: &[f32]) -> f64 {
    let nb = (scale.len() / dt.block_len().max(32)) as f64;
    let m: f64 = scale.iter().zip(offset).zip(a_hat).map(|((s, o), a)| (s.abs() as f64 + o.abs() as f64) * a.abs() as f64).sum();
    let mut budget = (2.0 * nb + 8.0) * U * m;
    if matches!(dt, DType::Q4_1 | DType::Q5_1) {
        for (o, a) in offset.chunks(32).zip(a_hat.chunks(32)) {
            let abs_a: f64 = a.iter().map(|v| v.abs() as f64).sum();
            budget += o[0].abs() as f64 * (abs_a / 2048.0 + 1.0 / 33_554_432.0);
        }
    }
    budget
}

/// Budget for the activation quantization error `|a_i − â_i|` of block-wise 8-bit quantization, per element,
/// from the original block alone:
/// - Q8_0/Q8_1: `d = amax/127` (f32) rounds q = x/d to nearest (≤ d/2) but stores `d` as f16 `d'`, so
///   `|x − d'·q| ≤ d/2 + 127·|d' − d|`, plus 2^-20·amax for the f32 products;
/// - Q8_K: `d = max/-127` kept in f32, so `|x − d·q| ≤ |d|/2`, plus 2^-20·amax.
fn act_budget(fmt: ActFormat, a: &[f32]) -> Vec<f64> {
    let bl = fmt.block_len();
    let mut out = Vec::with_capacity(a.len());
    for b in a.chunks(bl) {
        let amax = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        let e = match fmt {
            ActFormat::F32 => 0.0,
            ActFormat::Q8_0 | ActFormat::Q8_1 => {
                let d = amax / 127.0;
                let d16 = half::f16::from_f32(d).to_f32();
                d as f64 / 2.0 + 127.0 * (d16 as f64 - d as f64).abs() + amax as f64 / 1_048_576.0
            }
            ActFormat::Q8_K => amax as f64 / 127.0 / 2.0 + amax as f64 / 1_048_576.0,
        };
        out.resize(out.len() + b.len(), e);
    }
    out
}

/// SplitMix64: a small deterministic generator for test activations.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.uniform().max(1e-300), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// Activation rows of several shapes: plain normal, per-32 scales over four decades, sparse with outliers,
/// and one with an all-zero stretch.
fn activation_rows(n: usize, rng: &mut Rng) -> Vec<Vec<f32>> {
    let normal: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
    let mut scaled = Vec::with_capacity(n);
    for _ in 0..n / 32 {
        let s = 10f64.powf(rng.uniform() * 4.0 - 2.0);
        scaled.extend((0..32).map(|_| (rng.normal() * s) as f32));
    }
    let sparse: Vec<f32> = (0..n).map(|_| if rng.uniform() < 0.05 { (rng.normal() * 50.0) as f32 } else { (rng.normal() * 0.01) as f32 }).collect();
    let mut gap = normal.iter().map(|v| v * 3.0).collect::<Vec<f32>>();
    gap[..n / 2].fill(0.0);
    vec![normal, scaled, sparse, gap]
}

#[test]
fn vec_dot_within_budget_of_f64_references() {
    let mut rng = Rng(0x5EED);
    let mut report = Vec::new();
    for (dt, nb) in weight_fixtures() {
        let row = read(&format!("{dt}.blocks"));
        let n = nb * dt.block_len();
        let (scale, offset) = weight_parts(dt, &row, n);
        let mut w = vec![0f32; n];
        dequantize_row(dt, &row, &mut w);
        let fmt = dt.act_format();
        let (mut worst_q, mut worst_f) = (0f64, 0f64);
        for a in activation_rows(n, &mut rng) {
            let qa = quantize_act_row(fmt, &a);
            let got = vec_dot(dt, &row, &qa, n) as f64;
            let mut a_hat = vec![0f32; n];
            dequantize_act_row(fmt, &qa, &mut a_hat);

            // 1. Against the dequantized operands: float rounding only.
            let want_q: f64 = w.iter().zip(&a_hat).map(|(x, y)| *x as f64 * *y as f64).sum();
            let budget_q = rounding_budget(dt, &scale, &offset, &a_hat);
            let err_q = (got - want_q).abs();
            assert!(err_q <= budget_q, "{dt}: vec_dot {got} vs f64 {want_q}: error {err_q:e} > budget {budget_q:e}");

            // 2. Against the original f32 activations: plus the activation quantization error.
            let want_f: f64 = w.iter().zip(&a).map(|(x, y)| *x as f64 * *y as f64).sum();
            let e = act_budget(fmt, &a);
            let budget_f = budget_q + w.iter().zip(&e).map(|(x, e)| x.abs() as f64 * e).sum::<f64>();
            let err_f = (got - want_f).abs();
            assert!(err_f <= budget_f, "{dt}: vec_dot {got} vs f32-activation f64 {want_f}: error {err_f:e} > budget {budget_f:e}");
            if budget_q > 0.0 {
                worst_q = worst_q.max(err_q / budget_q);
            }
            if budget_f > 0.0 {
                worst_f = worst_f.max(err_f / budget_f);
            }
        }
        report.push(format!("{dt}: worst error / budget: {worst_q:.3} (quantized acts), {worst_f:.3} (f32 acts)"));
    }
    println!("{}", report.join("\n"));
}

#[test]
fn activation_quantization_error_within_budget() {
    let mut rng = Rng(7);
    for fmt in [ActFormat::Q8_0, ActFormat::Q8_1, ActFormat::Q8_K] {
        for a in activation_rows(1024, &mut rng) {
            let qa = quantize_act_row(fmt, &a);
            let mut a_hat = vec![0f32; a.len()];
            dequantize_act_row(fmt, &qa, &mut a_hat);
            for (i, ((x, y), e)) in a.iter().zip(&a_hat).zip(act_budget(fmt, &a)).enumerate() {
                let err = (*x as f64 - *y as f64).abs();
                assert!(err <= e, "{fmt:?} element {i}: {x} → {y}, error {err:e} > {e:e}");
            }
        }
    }
}

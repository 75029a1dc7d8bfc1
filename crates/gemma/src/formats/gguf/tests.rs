//! GGUF images built in memory with [`GgufWriter`]: a round trip of every value type, and the reader's
//! answer to each way a file can be broken.

use std::path::Path;

use super::*;
use crate::quant::DType;

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A small file with one value of every type and two tensors whose data ends the file exactly (sizes are
/// multiples of the alignment, so there is no trailing padding: any truncation cuts into something).
fn sample() -> GgufWriter {
    let mut w = GgufWriter::new();
    w.add("general.architecture", Value::String("gemma3".into()))
        .add("u8", Value::U8(200))
        .add("i8", Value::I8(-5))
        .add("u16", Value::U16(65000))
        .add("i16", Value::I16(-30000))
        .add("u32", Value::U32(4_000_000_000))
        .add("i32", Value::I32(-2_000_000_000))
        .add("u64", Value::U64(u64::MAX))
        .add("i64", Value::I64(i64::MIN))
        .add("f32", Value::F32(1.5))
        .add("f64", Value::F64(-2.25))
        .add("bool", Value::Bool(true))
        .add("str", Value::String("héllo".into()))
        .add("empty", Value::Array(vec![]))
        .add("tokens", Value::Array(vec![Value::String("<pad>".into()), Value::String("▁a".into())]))
        .add("nested", Value::Array(vec![Value::Array(vec![Value::I32(1), Value::I32(2)]), Value::Array(vec![Value::F32(0.5)])]));
    let m: Vec<f32> = (0..16).map(|i| i as f32).collect();
    w.add_tensor("m", DType::F32, &[2, 8], f32_bytes(&m));
    // 64 bytes of F32 and a [1, 512] Q8_0 row of 544 = 17·32 bytes.
    let big: Vec<f32> = (0..512).map(|i| ((i * 7) % 23) as f32 - 11.0).collect();
    let mut bb = vec![0u8; DType::Q8_0.row_bytes(512).unwrap()];
    crate::quant::quantize_row(DType::Q8_0, &big, &mut bb).unwrap();
    w.add_tensor("q", DType::Q8_0, &[1, 512], bb);
    w
}

fn parse_vec(img: Vec<u8>) -> Result<GgufFile> {
    parse(Path::new("t.gguf"), Bytes::from_vec(img))
}

fn err_of(img: Vec<u8>) -> String {
    match parse_vec(img) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn round_trip_every_value_type() {
    let w = sample();
    let f = parse_vec(w.to_bytes().unwrap()).unwrap();
    assert_eq!(f.version, 3);
    let get = |k: &str| f.get(k).unwrap().clone();
    assert_eq!(get("u8"), Value::U8(200));
    assert_eq!(get("i8"), Value::I8(-5));
    assert_eq!(get("u16"), Value::U16(65000));
    assert_eq!(get("i16"), Value::I16(-30000));
    assert_eq!(get("u32"), Value::U32(4_000_000_000));
    assert_eq!(get("i32"), Value::I32(-2_000_000_000));
    assert_eq!(get("u64"), Value::U64(u64::MAX));
    assert_eq!(get("i64"), Value::I64(i64::MIN));
    assert_eq!(get("f32"), Value::F32(1.5));
    assert_eq!(get("f64"), Value::F64(-2.25));
    assert_eq!(get("bool"), Value::Bool(true));
    assert_eq!(get("str"), Value::String("héllo".into()));
    assert_eq!(get("empty"), Value::Array(vec![]));
    assert_eq!(f.get_arr("tokens").unwrap().unwrap()[1].as_str(), Some("▁a"));
    assert_eq!(get("nested"), Value::Array(vec![Value::Array(vec![Value::I32(1), Value::I32(2)]), Value::Array(vec![Value::F32(0.5)])]));
    assert_eq!(f.architecture().unwrap(), "gemma3");

    let m = f.tensors.get("m").unwrap();
    assert_eq!((m.dtype, m.shape.clone()), (DType::F32, vec![2, 8]));
    assert_eq!(m.to_f32_vec(), (0..16).map(|i| i as f32).collect::<Vec<_>>());
    let q = f.tensors.get("q").unwrap();
    assert_eq!((q.dtype, q.shape.clone(), q.data.len()), (DType::Q8_0, vec![1, 512], 544));
}

#[test]
fn typed_getters() {
    let f = parse_vec(sample().to_bytes().unwrap()).unwrap();
    assert_eq!(f.get_u32("u32").unwrap(), Some(4_000_000_000));
    assert_eq!(f.get_u32("u8").unwrap(), Some(200));
    assert_eq!(f.get_u32("absent").unwrap(), None);
    assert_eq!(f.get_f32("f64").unwrap(), Some(-2.25));
    assert_eq!(f.get_str("str").unwrap(), Some("héllo"));
    assert_eq!(f.get_bool("bool").unwrap(), Some(true));
    let e = f.get_u32("i8").unwrap_err().to_string();
    assert!(e.contains("`i8`") && e.contains("i8 -5"), "{e}");
    let e = f.get_u32("u64").unwrap_err().to_string();
    assert!(e.contains("u32 range"), "{e}");
    let e = f.get_str("tokens").unwrap_err().to_string();
    assert!(e.contains("array of 2 values"), "{e}");
}

#[test]
fn version_2_and_custom_alignment() {
    let mut w = sample();
    w.version = 2;
    w.add("general.alignment", Value::U32(64));
    let img = w.to_bytes().unwrap();
    let f = parse_vec(img).unwrap();
    assert_eq!(f.version, 2);
    let m = f.tensors.get("m").unwrap();
    assert_eq!(m.to_f32_vec()[15], 15.0);
    // Data offsets are multiples of 64 from a 64-aligned data section.
    assert_eq!(f.tensors.get("q").unwrap().data.len(), 544);
}

#[test]
fn every_truncation_is_an_error() {
    let img = sample().to_bytes().unwrap();
    assert!(parse_vec(img.clone()).is_ok());
    for cut in 0..img.len() {
        let r = parse_vec(img[..cut].to_vec());
        match r {
            Ok(_) => panic!("a file cut at byte {cut} of {} parsed", img.len()),
            Err(Error::Format { .. }) => {}
            Err(e) => panic!("cut at {cut}: not a format error: {e}"),
        }
    }
}

#[test]
fn every_single_byte_corruption_is_handled() {
    // Not every corruption is detectable (a changed value is still a value), but none may panic.
    let img = sample().to_bytes().unwrap();
    let header_len = img.len() - 64 - 544;
    for at in 0..header_len {
        for x in [0xFF, 0x80, 0x7F, 0x01] {
            let mut bad = img.clone();
            bad[at] ^= x;
            let _ = parse_vec(bad);
        }
    }
    // And a few thousand random multi-byte corruptions (a fixed xorshift sequence).
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    for _ in 0..3000 {
        let mut bad = img.clone();
        for _ in 0..1 + next() % 4 {
            let at = (next() % header_len as u64) as usize;
            bad[at] = next() as u8;
        }
        let _ = parse_vec(bad);
    }
}

/// Byte offset of the first occurrence of `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).position(|w| w == needle).expect("needle")
}

#[test]
fn bad_magic_and_versions() {
    let img = sample().to_bytes().unwrap();
    let mut bad = img.clone();
    bad[..4].copy_from_slice(b"GGML");
    let e = err_of(bad);
    assert!(e.contains("not a GGUF file") && e.contains("byte 0"), "{e}");
    for (v, want) in [(1u32, "version 1"), (7, "unknown GGUF version 7"), (3u32.swap_bytes(), "big-endian")] {
        let mut bad = img.clone();
        bad[4..8].copy_from_slice(&v.to_le_bytes());
        let e = err_of(bad);
        assert!(e.contains(want) && e.contains("byte 4"), "{e}");
    }
}

#[test]
fn absurd_counts_are_rejected_before_allocating() {
    let img = sample().to_bytes().unwrap();
    // Tensor count and key count (bytes 8..16 and 16..24).
    for (at, what) in [(8, "tensor count"), (16, "metadata key count")] {
        let mut bad = img.clone();
        bad[at..at + 8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
        let e = err_of(bad);
        assert!(e.contains(what) && e.contains(&format!("byte {at}")), "{e}");
    }
    // The length of the string value of `str`.
    let at = find(&img, b"str") + 3 + 4;
    let mut bad = img.clone();
    bad[at..at + 8].copy_from_slice(&(1u64 << 60).to_le_bytes());
    let e = err_of(bad);
    assert!(e.contains("metadata key `str`") && e.contains(&format!("byte {at}")) && e.contains("length"), "{e}");
    // The element count of `tokens`.
    let at = find(&img, b"tokens") + 6 + 4 + 4;
    let mut bad = img.clone();
    bad[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    let e = err_of(bad);
    assert!(e.contains("metadata key `tokens`") && e.contains("array's length"), "{e}");
    // A key's own length.
    let at = find(&img, b"u16") - 8;
    let mut bad = img.clone();
    bad[at..at + 8].copy_from_slice(&(u64::MAX - 3).to_le_bytes());
    let e = err_of(bad);
    assert!(e.contains("metadata entry") && e.contains(&format!("byte {at}")), "{e}");
}

#[test]
fn bad_values() {
    let img = sample().to_bytes().unwrap();
    // Unknown value type for key `u8`.
    let at = find(&img, b"u8\x00") + 2;
    let mut bad = img.clone();
    bad[at..at + 4].copy_from_slice(&99u32.to_le_bytes());
    let e = err_of(bad);
    assert!(e.contains("`u8`") && e.contains("unknown value type 99"), "{e}");
    // A bool that is neither 0 nor 1.
    let at = find(&img, b"bool") + 4 + 4;
    let mut bad = img.clone();
    bad[at] = 7;
    let e = err_of(bad);
    assert!(e.contains("`bool`") && e.contains("not 0 or 1"), "{e}");
    // Invalid UTF-8 in a string.
    let at = find(&img, "héllo".as_bytes());
    let mut bad = img.clone();
    bad[at + 1] = 0xFF;
    let e = err_of(bad);
    assert!(e.contains("`str`") && e.contains("UTF-8"), "{e}");
}

#[test]
fn duplicates_and_alignment() {
    let mut w = sample();
    w.add("u8", Value::U8(1));
    assert!(err_of(w.to_bytes().unwrap()).contains("`u8` appears twice"));

    let mut w = sample();
    w.add_tensor("m", DType::F32, &[8], f32_bytes(&[0.0; 8]));
    assert!(err_of(w.to_bytes().unwrap()).contains("tensor `m` is listed twice"));

    for v in [Value::U32(48), Value::U32(0), Value::U64(32)] {
        let mut w = sample();
        w.add("general.alignment", v);
        let e = err_of(w.to_bytes().unwrap());
        assert!(e.contains("general.alignment"), "{e}");
    }
}

#[test]
fn deep_nesting_is_refused() {
    let mut v = Value::Array(vec![Value::U8(1)]);
    for _ in 0..20 {
        v = Value::Array(vec![v]);
    }
    let mut w = GgufWriter::new();
    w.add("deep", v);
    let e = err_of(w.to_bytes().unwrap());
    assert!(e.contains("`deep`") && e.contains("nested"), "{e}");
}

/// Offset of tensor entry `name`'s fields: (n_dims, first dim, type, offset) in a `sample()` image.
fn tensor_fields(img: &[u8], name: &str, n_dims: usize) -> (usize, usize, usize, usize) {
    let at = find(img, &[&(name.len() as u64).to_le_bytes()[..], name.as_bytes(), &(n_dims as u32).to_le_bytes()].concat()) + 8 + name.len();
    (at, at + 4, at + 4 + 8 * n_dims, at + 8 + 8 * n_dims)
}

#[test]
fn bad_tensor_entries() {
    let img = sample().to_bytes().unwrap();
    let (nd, dim0, ty, off) = tensor_fields(&img, "m", 2);

    let mut bad = img.clone();
    bad[nd..nd + 4].copy_from_slice(&5u32.to_le_bytes());
    let e = err_of(bad);
    assert!(e.contains("tensor `m`") && e.contains("5 dimensions"), "{e}");

    let mut bad = img.clone();
    bad[ty..ty + 4].copy_from_slice(&77u32.to_le_bytes());
    let e = err_of(bad);
    assert!(e.contains("tensor `m`") && e.contains("unknown ggml tensor type 77") && e.contains(&format!("byte {ty}")), "{e}");

    let mut bad = img.clone();
    bad[ty..ty + 4].copy_from_slice(&23u32.to_le_bytes());
    match parse_vec(bad) {
        Err(Error::UnsupportedDType { name, dtype, .. }) => assert_eq!((name.as_str(), dtype.as_str()), ("m", "IQ4_XS")),
        other => panic!("{other:?}"),
    }

    let mut bad = img.clone();
    bad[off..off + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let e = err_of(bad);
    assert!(e.contains("tensor `m`") && e.contains("past the end"), "{e}");

    let mut bad = img.clone();
    bad[off..off + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    let e = err_of(bad);
    assert!(e.contains("tensor `m`"), "{e}");

    let mut bad = img.clone();
    bad[off..off + 8].copy_from_slice(&4u64.to_le_bytes());
    let e = err_of(bad);
    assert!(e.contains("tensor `m`") && e.contains("alignment"), "{e}");

    let mut bad = img.clone();
    bad[dim0..dim0 + 8].copy_from_slice(&(u64::MAX / 3).to_le_bytes());
    let e = err_of(bad);
    assert!(e.contains("tensor `m`"), "{e}");

    // A Q8_0 row that is not a whole number of blocks.
    let (_, dim0, _, _) = tensor_fields(&img, "q", 2);
    let mut bad = img.clone();
    bad[dim0..dim0 + 8].copy_from_slice(&500u64.to_le_bytes());
    let e = err_of(bad);
    assert!(e.contains("tensor `q`") && e.contains("blocks"), "{e}");

    // A dimension product that overflows.
    let mut bad = img.clone();
    bad[dim0 + 8..dim0 + 16].copy_from_slice(&(1u64 << 62).to_le_bytes());
    let e = err_of(bad);
    assert!(e.contains("tensor `q`"), "{e}");
}

#[test]
fn writer_refuses_inconsistent_input() {
    let mut w = GgufWriter::new();
    w.add_tensor("x", DType::F32, &[3], vec![0u8; 8]);
    assert!(w.to_bytes().is_err());
    let mut w = GgufWriter::new();
    w.add("mixed", Value::Array(vec![Value::U8(1), Value::I8(1)]));
    assert!(w.to_bytes().is_err());
}

#[test]
fn file_without_tensors() {
    let mut w = GgufWriter::new();
    w.add("general.architecture", Value::String("gemma".into()));
    let f = parse_vec(w.to_bytes().unwrap()).unwrap();
    assert!(f.tensors.tensors.is_empty());
    // Without the trailing padding too.
    let img = w.to_bytes().unwrap();
    let end = find(&img, b"gemma") + 5;
    assert!(parse_vec(img[..end].to_vec()).is_ok());
}

//! The GGUF parser: a bounds-checked cursor over the file's bytes. Every length or count read from the file
//! is compared with the bytes that remain before it is used to allocate or to slice.

use std::collections::BTreeMap;
use std::path::Path;

use super::{GgufFile, Value};
use crate::formats::{Bytes, Tensor, TensorStore};
use crate::quant::DType;
use crate::{Error, Result};

const MAGIC: &[u8; 4] = b"GGUF";
/// `general.alignment` when the file does not set it (the format's default).
pub(super) const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml tensors have at most 4 dimensions (`GGML_MAX_DIMS`).
const MAX_DIMS: u32 = 4;
/// Arrays of arrays are legal; a file nesting them deeper than this is hostile (each level would otherwise
/// cost a stack frame).
const MAX_NESTING: u32 = 8;

/// The value type numbers of GGUF metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl Kind {
    fn from_u32(t: u32) -> Option<Kind> {
        use Kind::*;
        [U8, I8, U16, I16, U32, I32, F32, Bool, String, Array, U64, I64, F64].into_iter().find(|k| *k as u32 == t)
    }
    /// The fewest bytes one value of this kind occupies (a string: its length; an array: type and count).
    fn min_size(self) -> u64 {
        use Kind::*;
        match self {
            U8 | I8 | Bool => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 | String => 8,
            Array => 12,
        }
    }
    pub(super) fn of(v: &Value) -> Kind {
        match v {
            Value::U8(_) => Kind::U8,
            Value::I8(_) => Kind::I8,
            Value::U16(_) => Kind::U16,
            Value::I16(_) => Kind::I16,
            Value::U32(_) => Kind::U32,
            Value::I32(_) => Kind::I32,
            Value::U64(_) => Kind::U64,
            Value::I64(_) => Kind::I64,
            Value::F32(_) => Kind::F32,
            Value::F64(_) => Kind::F64,
            Value::Bool(_) => Kind::Bool,
            Value::String(_) => Kind::String,
            Value::Array(_) => Kind::Array,
        }
    }
}

/// A parse failure before it is given its context: the byte offset and what was wrong there.
struct Bad {
    at: usize,
    what: String,
}

type Parsed<T> = std::result::Result<T, Bad>;

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn bad<T>(&self, at: usize, what: impl Into<String>) -> Parsed<T> {
        Err(Bad { at, what: what.into() })
    }

    fn take(&mut self, n: u64, what: &str) -> Parsed<&'a [u8]> {
        if n > self.remaining() as u64 {
            return self.bad(self.pos, format!("{what} needs {n} bytes but the file ends {} bytes later (truncated?)", self.remaining()));
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Parsed<[u8; N]> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Parsed<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Parsed<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count of items of at least `min_size` bytes each, checked against what remains of the file.
    fn count(&mut self, min_size: u64, what: &str) -> Parsed<usize> {
        let at = self.pos;
        let n = self.u64(what)?;
        let fits = n.checked_mul(min_size).is_some_and(|b| b <= self.remaining() as u64);
        if !fits {
            return self.bad(
                at,
                format!("{what} is {n}, but {n} items of at least {min_size} bytes cannot fit in the {} bytes left", self.remaining()),
            );
        }
        Ok(n as usize)
    }

    fn string(&mut self, what: &str) -> Parsed<String> {
        let at = self.pos;
        let n = self.u64(&format!("the length of {what}"))?;
        let bytes = self.take(n, what).map_err(|_| Bad {
            at,
            what: format!("{what} has length {n}, more than the {} bytes left (truncated or corrupt)", self.remaining()),
        })?;
        String::from_utf8(bytes.to_vec()).map_err(|e| Bad { at: at + 8 + e.utf8_error().valid_up_to(), what: format!("{what} is not valid UTF-8") })
    }

    fn value(&mut self, kind: Kind, depth: u32) -> Parsed<Value> {
        Ok(match kind {
            Kind::U8 => Value::U8(self.array::<1>("a u8")?[0]),
            Kind::I8 => Value::I8(self.array::<1>("an i8")?[0] as i8),
            Kind::U16 => Value::U16(u16::from_le_bytes(self.array("a u16")?)),
            Kind::I16 => Value::I16(i16::from_le_bytes(self.array("an i16")?)),
            Kind::U32 => Value::U32(self.u32("a u32")?),
            Kind::I32 => Value::I32(i32::from_le_bytes(self.array("an i32")?)),
            Kind::U64 => Value::U64(self.u64("a u64")?),
            Kind::I64 => Value::I64(i64::from_le_bytes(self.array("an i64")?)),
            Kind::F32 => Value::F32(f32::from_le_bytes(self.array("an f32")?)),
            Kind::F64 => Value::F64(f64::from_le_bytes(self.array("an f64")?)),
            Kind::Bool => {
                let at = self.pos;
                match self.array::<1>("a bool")?[0] {
                    0 => Value::Bool(false),
                    1 => Value::Bool(true),
                    b => return self.bad(at, format!("bool byte is {b}, not 0 or 1")),
                }
            }
            Kind::String => Value::String(self.string("the string")?),
            Kind::Array => self.array_value(depth)?,
        })
    }

    fn array_value(&mut self, depth: u32) -> Parsed<Value> {
        let at = self.pos;
        if depth >= MAX_NESTING {
            return self.bad(at, format!("arrays nested more than {MAX_NESTING} deep"));
        }
        let t = self.u32("the array's element type")?;
        let Some(kind) = Kind::from_u32(t) else {
            return self.bad(at, format!("unknown array element type {t}"));
        };
        let n = self.count(kind.min_size(), "the array's length")?;
        let mut items = Vec::with_capacity(n);
        for i in 0..n {
            let item = self.value(kind, depth + 1).map_err(|b| Bad { at: b.at, what: format!("element {i}: {}", b.what) })?;
            items.push(item);
        }
        Ok(Value::Array(items))
    }
}

/// One tensor's header entry.
struct TensorInfo {
    name: String,
    /// As stored: innermost (contiguous) dimension first.
    dims: Vec<u64>,
    dtype: DType,
    offset: u64,
    /// Where the entry starts, for error messages.
    at: usize,
}

/// Parse a GGUF image held in `bytes`; `path` only names it in errors. Tensor data stays in `bytes`.
pub fn parse(path: &Path, bytes: Bytes) -> Result<GgufFile> {
    let fail = |b: Bad| Error::format(path, format!("{} (at byte {})", b.what, b.at));
    let mut c = Cursor { buf: bytes.as_slice(), pos: 0 };
    let version = header(&mut c).map_err(fail)?;
    let n_tensors = c.count(24, "the tensor count").map_err(fail)?;
    let n_kv = c.count(13, "the metadata key count").map_err(fail)?;

    let mut metadata = BTreeMap::new();
    for i in 0..n_kv {
        let (key, value) = key_value(&mut c, i).map_err(fail)?;
        if metadata.contains_key(&key) {
            return Err(Error::format(path, format!("metadata key `{key}` appears twice (before byte {})", c.pos)));
        }
        metadata.insert(key, value);
    }
    let alignment = alignment(path, &metadata)?;

    let mut infos = Vec::with_capacity(n_tensors);
    for i in 0..n_tensors {
        infos.push(tensor_info(path, &mut c, i)?);
    }
    // The data section starts at the next multiple of the alignment (it may be absent if there are no tensors).
    let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
    let mut tensors = BTreeMap::new();
    for info in infos {
        let name = info.name.clone();
        let tensor = place(path, &bytes, info, data_start, alignment)?;
        if tensors.insert(name.clone(), tensor).is_some() {
            return Err(Error::format(path, format!("tensor `{name}` is listed twice")));
        }
    }
    Ok(GgufFile { version, metadata, tensors: TensorStore { path: path.to_path_buf(), tensors } })
}

fn header(c: &mut Cursor) -> Parsed<u32> {
    let magic = c.array::<4>("the magic number").map_err(|b| Bad { at: 0, what: format!("not a GGUF file: {}", b.what) })?;
    if &magic != MAGIC {
        return c.bad(0, format!("not a GGUF file: starts with {magic:02x?}, not \"GGUF\""));
    }
    let version = c.u32("the version")?;
    match version {
        2 | 3 => Ok(version),
        1 => c.bad(4, "GGUF version 1 (32-bit lengths, 2023) is not supported; re-convert the model (versions 2 and 3 are read)"),
        v if (1..=3).contains(&v.swap_bytes()) => c.bad(4, "this is a big-endian GGUF file; only little-endian files are supported"),
        v => c.bad(4, format!("unknown GGUF version {v} (versions 2 and 3 are read)")),
    }
}

fn key_value(c: &mut Cursor, i: usize) -> Parsed<(String, Value)> {
    let key = c.string("a metadata key").map_err(|b| Bad { at: b.at, what: format!("metadata entry {i}: {}", b.what) })?;
    let ctx = |b: Bad| Bad { at: b.at, what: format!("metadata key `{key}`: {}", b.what) };
    let t_at = c.pos;
    let t = c.u32("the value type").map_err(ctx)?;
    let kind = match Kind::from_u32(t) {
        Some(k) => k,
        None => return Err(ctx(Bad { at: t_at, what: format!("unknown value type {t}") })),
    };
    let value = c.value(kind, 0).map_err(ctx)?;
    Ok((key, value))
}

/// `general.alignment`: a power of two, 32 when absent (llama.cpp requires it to be a u32).
fn alignment(path: &Path, metadata: &BTreeMap<String, Value>) -> Result<u64> {
    match metadata.get("general.alignment") {
        None => Ok(DEFAULT_ALIGNMENT),
        Some(Value::U32(a)) if a.is_power_of_two() => Ok(*a as u64),
        Some(v) => Err(Error::format(path, format!("metadata key `general.alignment` is {v:?}; expected a u32 power of two"))),
    }
}

fn tensor_info(path: &Path, c: &mut Cursor, i: usize) -> Result<TensorInfo> {
    let at = c.pos;
    let fail = |b: Bad| Error::format(path, format!("{} (at byte {})", b.what, b.at));
    let name = c.string("a tensor name").map_err(|b| Bad { at: b.at, what: format!("tensor entry {i}: {}", b.what) }).map_err(fail)?;
    let ctx = |b: Bad| fail(Bad { at: b.at, what: format!("tensor `{name}`: {}", b.what) });
    let n_dims = c.u32("the dimension count").map_err(ctx)?;
    if n_dims > MAX_DIMS {
        return Err(ctx(Bad { at: c.pos - 4, what: format!("{n_dims} dimensions (at most {MAX_DIMS})") }));
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    for _ in 0..n_dims {
        let d_at = c.pos;
        let d = c.u64("a dimension").map_err(ctx)?;
        // ggml stores dimensions as int64.
        if d > i64::MAX as u64 {
            return Err(ctx(Bad { at: d_at, what: format!("dimension {d} is negative as an int64") }));
        }
        dims.push(d);
    }
    let t_at = c.pos;
    let t = c.u32("the tensor type").map_err(ctx)?;
    let dtype = match DType::from_ggml_id(t) {
        Some(d) => d,
        None => {
            return Err(match ggml_type_name(t) {
                Some(known) => Error::UnsupportedDType {
                    file: path.into(),
                    name: name.clone(),
                    dtype: known.into(),
                    what: "is not supported (gemma-rs reads F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and Q2_K..Q6_K)".into(),
                },
                None => ctx(Bad { at: t_at, what: format!("unknown ggml tensor type {t}") }),
            })
        }
    };
    let offset = c.u64("the data offset").map_err(ctx)?;
    Ok(TensorInfo { name, dims, dtype, offset, at })
}

/// Check that a tensor's data lies within the data section and slice it out of the file (no copy).
fn place(path: &Path, bytes: &Bytes, t: TensorInfo, data_start: u64, alignment: u64) -> Result<Tensor> {
    let err = |what: String| Error::format(path, format!("tensor `{}` (entry at byte {}): {what}", t.name, t.at));
    let row = t.dims.first().copied().unwrap_or(1);
    if row % t.dtype.block_len() as u64 != 0 {
        return Err(err(format!("rows of {row} elements are not a whole number of {} blocks of {}", t.dtype, t.dtype.block_len())));
    }
    let row_bytes = (row / t.dtype.block_len() as u64).checked_mul(t.dtype.block_bytes() as u64);
    let n_bytes = row_bytes
        .and_then(|rb| t.dims.iter().skip(1).try_fold(rb, |acc, &d| acc.checked_mul(d)))
        .ok_or_else(|| err(format!("dimensions {:?} (innermost first) overflow", t.dims)))?;
    if t.offset % alignment != 0 {
        return Err(err(format!("data offset {} is not a multiple of the alignment {alignment}", t.offset)));
    }
    let end = data_start.checked_add(t.offset).and_then(|s| s.checked_add(n_bytes));
    match end {
        Some(end) if end <= bytes.len() as u64 => {}
        _ => {
            let shape: Vec<u64> = t.dims.iter().rev().copied().collect();
            return Err(err(format!(
                "{} of shape {shape:?} needs {n_bytes} bytes at data offset {} (file byte {}), past the end of the {}-byte file",
                t.dtype,
                t.offset,
                data_start.saturating_add(t.offset),
                bytes.len()
            )))
        }
    }
    let shape = t.dims.iter().rev().map(|&d| d as usize).collect();
    Ok(Tensor { dtype: t.dtype, shape, data: bytes.slice((data_start + t.offset) as usize, n_bytes as usize) })
}

/// Names of the ggml types gemma-rs does not read, so that an error can say which one a file uses.
fn ggml_type_name(t: u32) -> Option<&'static str> {
    Some(match t {
        4 => "Q4_2 (removed from ggml)",
        5 => "Q4_3 (removed from ggml)",
        9 => "Q8_1",
        15 => "Q8_K",
        16 => "IQ2_XXS",
        17 => "IQ2_XS",
        18 => "IQ3_XXS",
        19 => "IQ1_S",
        20 => "IQ4_NL",
        21 => "IQ3_S",
        22 => "IQ2_S",
        23 => "IQ4_XS",
        24 => "I8",
        25 => "I16",
        26 => "I32",
        27 => "I64",
        28 => "F64",
        29 => "IQ1_M",
        34 => "TQ1_0",
        35 => "TQ2_0",
        39 => "MXFP4",
        _ => return None,
    })
}

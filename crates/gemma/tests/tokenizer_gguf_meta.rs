//! A minimal GGUF metadata reader for the tokenizer tests and the tokenizer benchmark, so that they do not
//! wait on the full GGUF parser (`gemma::formats::gguf`); it stops before the tensor infos. Included with
//! `#[path]` by `tokenizer_parity.rs` and `examples/tokenize_bench.rs`; on its own it is an empty test crate.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufReader, Read};
use std::path::Path;

use gemma::formats::gguf::Value;

/// Reads the key/value metadata of a GGUF (v2 or v3) file.
pub fn read_metadata(path: &Path) -> Result<BTreeMap<String, Value>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut r = Reader(BufReader::with_capacity(1 << 20, file));
    let err = |e: String| format!("{}: {e}", path.display());
    if &r.bytes(4).map_err(err)? != b"GGUF" {
        return Err(err("not a GGUF file".into()));
    }
    let version = r.u32().map_err(err)?;
    if !(2..=3).contains(&version) {
        return Err(err(format!("GGUF version {version} (2 or 3 expected)")));
    }
    let _tensors = r.u64().map_err(err)?;
    let n = r.u64().map_err(err)?;
    let mut meta = BTreeMap::new();
    for _ in 0..n {
        let key = r.string().map_err(err)?;
        let ty = r.u32().map_err(err)?;
        let value = r.value(ty).map_err(|e| err(format!("{key}: {e}")))?;
        meta.insert(key, value);
    }
    Ok(meta)
}

struct Reader<R>(R);

impl<R: Read> Reader<R> {
    fn bytes(&mut self, n: usize) -> Result<Vec<u8>, String> {
        let mut b = vec![0; n];
        self.0.read_exact(&mut b).map_err(|e| e.to_string())?;
        Ok(b)
    }
    fn arr<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut b = [0; N];
        self.0.read_exact(&mut b).map_err(|e| e.to_string())?;
        Ok(b)
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.arr()?))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.arr()?))
    }
    fn string(&mut self) -> Result<String, String> {
        let n = self.u64()?;
        if n > 1 << 30 {
            return Err(format!("string of {n} bytes"));
        }
        String::from_utf8(self.bytes(n as usize)?).map_err(|e| e.to_string())
    }
    fn value(&mut self, ty: u32) -> Result<Value, String> {
        Ok(match ty {
            0 => Value::U8(self.arr::<1>()?[0]),
            1 => Value::I8(self.arr::<1>()?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.arr()?)),
            3 => Value::I16(i16::from_le_bytes(self.arr()?)),
            4 => Value::U32(self.u32()?),
            5 => Value::I32(i32::from_le_bytes(self.arr()?)),
            6 => Value::F32(f32::from_le_bytes(self.arr()?)),
            7 => Value::Bool(self.arr::<1>()?[0] != 0),
            8 => Value::String(self.string()?),
            9 => {
                let elem = self.u32()?;
                let n = self.u64()?;
                if n > 1 << 28 {
                    return Err(format!("array of {n} elements"));
                }
                let mut v = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    v.push(self.value(elem)?);
                }
                Value::Array(v)
            }
            10 => Value::U64(self.u64()?),
            11 => Value::I64(i64::from_le_bytes(self.arr()?)),
            12 => Value::F64(f64::from_le_bytes(self.arr()?)),
            t => return Err(format!("unknown value type {t}")),
        })
    }
}

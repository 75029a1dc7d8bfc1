//! safetensors: an 8-byte little-endian header length, a JSON header mapping each tensor name to
//! `{dtype, shape, data_offsets: [begin, end]}` (offsets relative to the end of the header), then the data.
//! A checkpoint is one file or several shards listed by `model.safetensors.index.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Bytes, Tensor, TensorStore};
use crate::quant::DType;
use crate::{Error, Result};

/// Headers larger than this are rejected before anything is allocated for them (the format's own limit is 100 MB).
const MAX_HEADER_BYTES: u64 = 100_000_000;

#[derive(Deserialize)]
struct Entry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [u64; 2],
}

/// Load every safetensors file of a checkpoint folder: `model.safetensors.index.json` if present, else all
/// `*.safetensors` files in it.
pub fn load_dir(dir: &Path) -> Result<TensorStore> {
    let index = dir.join("model.safetensors.index.json");
    let files: Vec<PathBuf> = if index.exists() {
        let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
        #[derive(Deserialize)]
        struct Index {
            weight_map: BTreeMap<String, String>,
        }
        let idx: Index = serde_json::from_str(&text).map_err(|e| Error::format(&index, format!("not a safetensors index: {e}")))?;
        let mut files: Vec<String> = idx.weight_map.into_values().collect();
        files.sort();
        files.dedup();
        files.into_iter().map(|f| dir.join(f)).collect()
    } else {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        files.sort();
        files
    };
    if files.is_empty() {
        return Err(Error::format(dir, "no *.safetensors file in this folder"));
    }
    let mut store = TensorStore { path: dir.to_path_buf(), tensors: BTreeMap::new() };
    for f in files {
        let one = load_file(&f)?;
        store.tensors.extend(one.tensors);
    }
    Ok(store)
}

/// Load one safetensors file, memory-mapped.
pub fn load_file(path: &Path) -> Result<TensorStore> {
    let bytes = Bytes::map_file(path)?;
    parse(path, bytes)
}

/// Parse a safetensors image held in `bytes`; `path` only names it in errors.
pub fn parse(path: &Path, bytes: Bytes) -> Result<TensorStore> {
    let buf = bytes.as_slice();
    if buf.len() < 8 {
        return Err(Error::format(path, format!("truncated: {} bytes, a safetensors file starts with an 8-byte header length", buf.len())));
    }
    let n = u64::from_le_bytes(buf[..8].try_into().unwrap());
    if n > MAX_HEADER_BYTES || n > (buf.len() - 8) as u64 {
        return Err(Error::format(path, format!("header length {n} at byte 0 exceeds the file ({} bytes): truncated or not safetensors", buf.len())));
    }
    let header = &buf[8..8 + n as usize];
    let data_start = 8 + n as usize;
    let data_len = buf.len() - data_start;
    let raw: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(header).map_err(|e| Error::format(path, format!("header is not valid JSON: {e}")))?;
    let mut tensors = BTreeMap::new();
    for (name, value) in raw {
        if name == "__metadata__" {
            continue;
        }
        let e: Entry = serde_json::from_value(value).map_err(|err| Error::format(path, format!("tensor `{name}`: bad header entry: {err}")))?;
        let dtype = match e.dtype.as_str() {
            "F32" => DType::F32,
            "F16" => DType::F16,
            "BF16" => DType::BF16,
            other => {
                return Err(Error::UnsupportedDType {
                    file: path.into(),
                    name,
                    dtype: other.into(),
                    what: "is not supported (expected F32, F16 or BF16)".into(),
                })
            }
        };
        let [begin, end] = e.data_offsets;
        let numel = e.shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d as u64));
        let want = numel.and_then(|n| n.checked_mul(dtype.block_bytes() as u64));
        if end < begin || end > data_len as u64 || want != Some(end - begin) {
            return Err(Error::format(
                path,
                format!(
                    "tensor `{name}`: data_offsets [{begin}, {end}] do not hold a {} tensor of shape {:?} within the {data_len} data bytes",
                    e.dtype, e.shape
                ),
            ));
        }
        let data = bytes.slice(data_start + begin as usize, (end - begin) as usize);
        tensors.insert(name, Tensor { dtype, shape: e.shape, data });
    }
    Ok(TensorStore { path: path.into(), tensors })
}

/// Serialize tensors to a safetensors image (for tests and tools).
pub fn serialize(tensors: &[(&str, DType, &[usize], &[u8])]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, dtype, shape, data) in tensors {
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": dtype.name(), "shape": shape, "data_offsets": [offset, offset + data.len()]}),
        );
        offset += data.len();
    }
    let mut h = serde_json::to_vec(&header).unwrap();
    while h.len() % 8 != 0 {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    for (_, _, _, data) in tensors {
        out.extend_from_slice(data);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> Vec<u8> {
        let data: Vec<u8> = [1f32, 2., 3., 4., 5., 6.].iter().flat_map(|v| v.to_le_bytes()).collect();
        serialize(&[("w", DType::F32, &[2, 3], &data)])
    }

    #[test]
    fn round_trip() {
        let s = parse(Path::new("t.safetensors"), Bytes::from_vec(image())).unwrap();
        let t = s.get("w").unwrap();
        assert_eq!(t.shape, vec![2, 3]);
        assert_eq!(t.to_f32_vec(), vec![1., 2., 3., 4., 5., 6.]);
    }

    #[test]
    fn truncated_file_is_an_error() {
        let img = image();
        for cut in [0, 5, 12, img.len() - 1] {
            let err = parse(Path::new("t.safetensors"), Bytes::from_vec(img[..cut].to_vec())).unwrap_err().to_string();
            assert!(err.starts_with("t.safetensors: "), "{err}");
        }
    }

    #[test]
    fn lying_offsets_are_an_error() {
        let data = vec![0u8; 8];
        let img = serialize(&[("w", DType::F32, &[2, 3], &data)]);
        let err = parse(Path::new("x.safetensors"), Bytes::from_vec(img)).unwrap_err().to_string();
        assert!(err.contains("tensor `w`") && err.contains("data_offsets"), "{err}");
    }
}

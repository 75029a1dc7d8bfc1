//! Byte ranges of a memory-mapped file (or of an owned buffer, for tests and synthesized tensors),
//! cheap to clone: the file stays mapped while any tensor refers to it.

use std::sync::Arc;

enum Backing {
    Mmap(memmap2::Mmap),
    Owned(Vec<u8>),
    /// 8-byte aligned owned bytes (a copy of misaligned float data).
    Words(Vec<u64>, usize),
}

impl Backing {
    fn as_slice(&self) -> &[u8] {
        match self {
            Backing::Mmap(m) => m,
            Backing::Owned(v) => v,
            // SAFETY: u64 storage viewed as bytes; `n` ≤ 8·len by construction in `copy_aligned`.
            Backing::Words(w, n) => unsafe { std::slice::from_raw_parts(w.as_ptr() as *const u8, *n) },
        }
    }
}

#[derive(Clone)]
pub struct Bytes {
    backing: Arc<Backing>,
    start: usize,
    len: usize,
}

impl Bytes {
    pub fn from_mmap(map: memmap2::Mmap) -> Self {
        let len = map.len();
        Bytes { backing: Arc::new(Backing::Mmap(map)), start: 0, len }
    }
    pub fn from_vec(v: Vec<u8>) -> Self {
        let len = v.len();
        Bytes { backing: Arc::new(Backing::Owned(v)), start: 0, len }
    }
    /// Memory-map a whole file read-only.
    pub fn map_file(path: &std::path::Path) -> crate::Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| crate::Error::io(path, e))?;
        // SAFETY: the map is read-only; like every mmap-based loader we rely on the file not being truncated
        // or rewritten while the model runs (a changed file is the user's doing, not a memory-safety hole we can close).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| crate::Error::io(path, e))?;
        Ok(Bytes::from_mmap(map))
    }
    /// A sub-range; the caller has checked that it lies within `self`.
    pub fn slice(&self, start: usize, len: usize) -> Bytes {
        assert!(start + len <= self.len, "slice out of range");
        Bytes { backing: self.backing.clone(), start: self.start + start, len }
    }
    pub fn as_slice(&self) -> &[u8] {
        &self.backing.as_slice()[self.start..self.start + self.len]
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The same bytes in an 8-byte aligned buffer of our own (for float tensors a file left misaligned).
    pub fn copy_aligned(&self) -> Bytes {
        let src = self.as_slice();
        let mut words = vec![0u64; src.len().div_ceil(8)];
        // SAFETY: `words` holds at least `src.len()` bytes; u64 has no invalid bit patterns.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), words.as_mut_ptr() as *mut u8, src.len()) };
        Bytes { backing: Arc::new(Backing::Words(words, src.len())), start: 0, len: src.len() }
    }
    pub fn is_aligned(&self, align: usize) -> bool {
        (self.as_slice().as_ptr() as usize) % align == 0
    }
    /// Drop this range's pages of a mapped file from our resident set (after copying it elsewhere): a later
    /// read faults them back in from the file. No-op for owned bytes.
    pub fn release_pages(&self) {
        if let Backing::Mmap(m) = &*self.backing {
            // Whole pages inside the range only, so neighbouring tensors keep theirs.
            let page = 4096;
            let (a, b) = (self.start.next_multiple_of(page), (self.start + self.len) / page * page);
            if b > a {
                // SAFETY: DONTNEED on a read-only, private file mapping only discards our copies of clean pages;
                // their contents are unchanged on the next access (re-read from the file), so no reference into
                // the map observes a difference.
                let _ = unsafe { m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, a, b - a) };
            }
        }
    }
    pub fn is_mapped(&self) -> bool {
        matches!(*self.backing, Backing::Mmap(_))
    }
}

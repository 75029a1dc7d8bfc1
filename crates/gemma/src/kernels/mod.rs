//! Model-agnostic compute: matrix × activations for every weight type, attention under a mask, norms, RoPE,
//! softmax, activations, and the recurrent mixers' convolution, block-diagonal gates and linear-recurrence scan.
//!
//! Kernels never name Gemma. Each inner product has a scalar reference (in [`crate::quant`]) and SIMD variants
//! chosen once at run time by [`isa::Kernels::get`]; tests compare every available variant with the reference.

pub mod attention;
pub mod bandwidth;
pub mod dot;
pub mod matmul;
pub mod ops;
pub mod packed;
pub mod pool;
pub mod recurrence;
#[cfg(target_arch = "x86_64")]
mod x86;
#[cfg(target_arch = "x86_64")]
mod x86_quant;
#[cfg(target_arch = "x86_64")]
mod x86_packed;
#[cfg(target_arch = "x86_64")]
mod x86_ops;

pub use matmul::{matmul, matmul_many, quantize_acts, ActCache, Matrix};
pub use pool::ThreadPool;

/// A raw pointer that may be shared between the pool's threads, for kernels whose tasks write disjoint parts
/// of one output buffer (rows of a matrix product, heads of an attention). The kernel that creates it states
/// why the parts are disjoint.
#[derive(Clone, Copy)]
pub(crate) struct SyncPtr<T>(pub *mut T);
// SAFETY: only used for writes to disjoint index sets, each owned by one task (see each use).
unsafe impl<T> Send for SyncPtr<T> {}
unsafe impl<T> Sync for SyncPtr<T> {}

impl<T> SyncPtr<T> {
    /// The pointer (a method, so that closures capture the whole `Sync` wrapper, not its raw field).
    #[inline]
    pub(crate) fn get(self) -> *mut T {
        self.0
    }
}

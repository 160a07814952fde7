//! The key/value cache: per layer, the keys and values of every position seen so far.
//!
//! Storage is f16 by default (llama.cpp's default `type_k = type_v = f16`) or f32. Rows are kept
//! in position order, one row per token: `k[layer]: [n_ctx, n_head_kv · head_dim]`,
//! `v[layer]: [n_ctx, n_head_kv · head_dim_v]`.

use half::f16;
use half::slice::HalfBitsSliceExt;

use crate::attention::KvRows;
use crate::config::ModelConfig;
use crate::error::EngineError;

/// Element type of the KV cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KvType {
    /// Half precision (llama.cpp's default): Q is rounded to f16 before `q·k`, attention
    /// probabilities are rounded to f16 before weighting V.
    #[default]
    F16,
    /// Single precision.
    F32,
}

impl std::str::FromStr for KvType {
    type Err = EngineError;
    fn from_str(s: &str) -> Result<KvType, EngineError> {
        match s.to_ascii_lowercase().as_str() {
            "f16" => Ok(KvType::F16),
            "f32" => Ok(KvType::F32),
            other => Err(EngineError::InvalidSetting {
                what: format!("KV cache type `{other}` (expected f16 or f32)"),
            }),
        }
    }
}

/// One layer's key or value rows.
enum Rows {
    /// f16 bit patterns (zero-initialized memory is +0.0).
    F16(Vec<u16>),
    F32(Vec<f32>),
}

/// `n` zeros, or `None` when the memory cannot be had. Like `vec![0; n]` the memory comes
/// zeroed from the allocator (`calloc`: untouched pages cost nothing until written), but a
/// failed allocation is an error for the caller instead of an abort.
fn try_zeroed<T: Zeroed>(n: usize) -> Option<Vec<T>> {
    if n == 0 {
        return Some(Vec::new());
    }
    let layout = std::alloc::Layout::array::<T>(n).ok()?;
    // SAFETY: `layout` has a non-zero size (n > 0 and T is not zero-sized).
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<T>();
    if ptr.is_null() {
        return None;
    }
    // SAFETY: `ptr` was allocated by the global allocator with the layout of `[T; n]`, which is
    // what a `Vec<T>` of capacity `n` owns; all `n` elements are initialized, because the
    // all-zero bit pattern is a valid `T` (the `Zeroed` contract).
    Some(unsafe { Vec::from_raw_parts(ptr, n, n) })
}

/// Types whose all-zero bit pattern is a valid value (0 / +0.0).
trait Zeroed {}
impl Zeroed for u16 {}
impl Zeroed for f32 {}

impl Rows {
    fn new(ty: KvType, n: usize) -> Option<Rows> {
        Some(match ty {
            KvType::F16 => Rows::F16(try_zeroed(n)?),
            KvType::F32 => Rows::F32(try_zeroed(n)?),
        })
    }

    /// Writes `src` at element offset `at`, rounding to f16 if the storage is f16.
    fn write(&mut self, at: usize, src: &[f32]) {
        match self {
            Rows::F16(bits) => {
                crate::ops::f32_to_f16(src, bits[at..at + src.len()].reinterpret_cast_mut())
            }
            Rows::F32(v) => v[at..at + src.len()].copy_from_slice(src),
        }
    }

    /// The first `n` elements, in the storage type.
    fn view(&self, n: usize) -> KvRows<'_> {
        match self {
            Rows::F16(bits) => KvRows::F16(bits[..n].reinterpret_cast::<f16>()),
            Rows::F32(v) => KvRows::F32(&v[..n]),
        }
    }
}

/// Keys and values of every layer for one sequence.
pub struct KvCache {
    ty: KvType,
    n_ctx: usize,
    k_dim: usize,
    v_dim: usize,
    k: Vec<Rows>,
    v: Vec<Rows>,
}

impl KvCache {
    /// Allocates a cache of `n_ctx` positions for a model with configuration `cfg`.
    pub fn new(cfg: &ModelConfig, n_ctx: usize, ty: KvType) -> Result<KvCache, EngineError> {
        if n_ctx == 0 {
            return Err(EngineError::InvalidSetting {
                what: "context length 0".into(),
            });
        }
        let (k_dim, v_dim) = (cfg.k_dim(), cfg.v_dim());
        let elem = match ty {
            KvType::F16 => 2,
            KvType::F32 => 4,
        };
        let too_big = || EngineError::KvAlloc {
            n_ctx,
            bytes: (n_ctx as u128) * (cfg.n_layer as u128) * ((k_dim + v_dim) as u128) * elem,
        };
        let per_layer = |dim: usize| {
            n_ctx
                .checked_mul(dim)
                .filter(|n| {
                    n.checked_mul(elem as usize)
                        .is_some_and(|b| b <= isize::MAX as usize)
                })
                .ok_or_else(too_big)
        };
        let (nk, nv) = (per_layer(k_dim)?, per_layer(v_dim)?);
        let mut k = Vec::with_capacity(cfg.n_layer);
        let mut v = Vec::with_capacity(cfg.n_layer);
        for _ in 0..cfg.n_layer {
            k.push(Rows::new(ty, nk).ok_or_else(too_big)?);
            v.push(Rows::new(ty, nv).ok_or_else(too_big)?);
        }
        Ok(KvCache {
            ty,
            n_ctx,
            k_dim,
            v_dim,
            k,
            v,
        })
    }

    /// Positions the cache holds.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// The element type.
    pub fn kv_type(&self) -> KvType {
        self.ty
    }

    /// Bytes held by the cache.
    pub fn size_bytes(&self) -> usize {
        let elem = match self.ty {
            KvType::F16 => 2,
            KvType::F32 => 4,
        };
        self.k.len() * self.n_ctx * (self.k_dim + self.v_dim) * elem
    }

    /// Stores the keys and values of `n` consecutive positions starting at `pos0` in `layer`.
    /// Shapes: `k`: `[n, k_dim]`, `v`: `[n, v_dim]`. The caller checked `pos0 + n <= n_ctx`.
    pub(crate) fn store(&mut self, layer: usize, pos0: usize, k: &[f32], v: &[f32]) {
        debug_assert!(pos0 + k.len() / self.k_dim <= self.n_ctx);
        self.k[layer].write(pos0 * self.k_dim, k);
        self.v[layer].write(pos0 * self.v_dim, v);
    }

    /// Keys of positions `0..n_pos` of `layer`: `[n_pos, k_dim]`, in the storage type.
    pub(crate) fn keys(&self, layer: usize, n_pos: usize) -> KvRows<'_> {
        self.k[layer].view(n_pos * self.k_dim)
    }

    /// Values of positions `0..n_pos` of `layer`: `[n_pos, v_dim]`, in the storage type.
    pub(crate) fn values(&self, layer: usize, n_pos: usize) -> KvRows<'_> {
        self.v[layer].view(n_pos * self.v_dim)
    }
}

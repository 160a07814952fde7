//! x86-64 avx2 kernels.

use strata_gguf::GgmlType;

use super::RowsFn;

/// The avx2 kernel for weight type `ty`, where one exists.
pub(super) fn kernel(ty: GgmlType) -> Option<RowsFn> {
    let _ = ty;
    None
}

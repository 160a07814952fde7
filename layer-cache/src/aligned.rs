//! [`AlignedBuf`]: one zeroed heap allocation aligned to [`READ_ALIGN`].

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ptr::NonNull;

use crate::{Error, READ_ALIGN};

/// An owned, zero-initialised byte buffer whose start is aligned to [`READ_ALIGN`], as O_DIRECT
/// reads require. Zeroed allocation lets the OS hand out untouched pages lazily, so a large
/// arena costs nothing until it is written: the allocation asks for the allocator's own small
/// alignment (which `alloc_zeroed` serves with `calloc`, hence fresh zero pages from the OS for
/// large sizes) and [`READ_ALIGN`] more bytes, and the buffer starts at the first aligned byte.
/// (Asking `alloc_zeroed` for a 4096-byte alignment instead makes the system allocator
/// `memset` the whole region: seconds, and every page committed, for a multi-GiB arena.)
pub(crate) struct AlignedBuf {
    /// The first aligned byte.
    ptr: NonNull<u8>,
    len: usize,
    /// What was allocated: its start and layout (`None` for an empty buffer).
    raw: Option<(NonNull<u8>, Layout)>,
}

/// A type aligned like a read, for the dangling start of an empty buffer.
#[repr(align(4096))]
struct Page;
const _: () = assert!(std::mem::align_of::<Page>() == READ_ALIGN as usize);

/// Alignment asked of the allocator (what `calloc` guarantees on every platform we build for).
const ALLOC_ALIGN: usize = 16;

// SAFETY: AlignedBuf owns its allocation exclusively (like a Box<[u8]>); moving it to another
// thread moves that ownership.
unsafe impl Send for AlignedBuf {}
// SAFETY: `&AlignedBuf` only hands out `&[u8]` or raw pointers. Writes through the raw pointers
// from several threads are the cache's, made under its slot protocol (`cache::Status`): one
// writer per slot while no `&[u8]` covers it, published to readers through the cache's mutex.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// Allocate `len` zeroed bytes aligned to [`READ_ALIGN`]; `what` names the use in errors.
    pub fn new(len: u64, what: &'static str) -> Result<AlignedBuf, Error> {
        let len_usize = usize::try_from(len).map_err(|_| Error::TooLarge { what, value: len })?;
        if len_usize == 0 {
            return Ok(AlignedBuf {
                ptr: NonNull::<Page>::dangling().cast(),
                len: 0,
                raw: None,
            });
        }
        let layout = len_usize
            .checked_add(READ_ALIGN as usize)
            .and_then(|size| Layout::from_size_align(size, ALLOC_ALIGN).ok())
            .ok_or(Error::TooLarge { what, value: len })?;
        // SAFETY: the layout has a non-zero size (at least READ_ALIGN bytes).
        let raw = unsafe { alloc_zeroed(layout) };
        let raw = NonNull::new(raw).ok_or(Error::Alloc { what, bytes: len })?;
        let skip = raw.as_ptr().align_offset(READ_ALIGN as usize);
        if skip >= READ_ALIGN as usize {
            // align_offset may refuse (usize::MAX); never for u8 on real targets, but then we
            // cannot promise alignment.
            // SAFETY: allocated just above with exactly this layout.
            unsafe { dealloc(raw.as_ptr(), layout) };
            return Err(Error::Alloc { what, bytes: len });
        }
        // SAFETY: skip < READ_ALIGN, so raw + skip + len_usize <= raw + layout.size(): the
        // aligned start and the whole buffer lie inside the allocation.
        let ptr = unsafe { NonNull::new_unchecked(raw.as_ptr().add(skip)) };
        Ok(AlignedBuf {
            ptr,
            len: len_usize,
            raw: Some((raw, layout)),
        })
    }

    /// Pointer to the first byte, writable although `self` is shared: the layer cache writes
    /// a slot's region through it while the slot is claimed by one loader (status `Loading`,
    /// no pins, so no `LayerRef` and no slice covers that region) and publishes the bytes by
    /// setting the status to `Ready` under the cache's mutex, which orders the writes before
    /// any reader that later takes the mutex to pin the slot. Crate-private for that reason.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The bytes, for exclusive use.
    #[cfg_attr(not(feature = "file"), allow(dead_code))] // the O_DIRECT bounce buffer
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: ptr is valid for len initialised (zeroed) bytes and `&mut self` is exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// The bytes. Only for a buffer nobody writes through [`AlignedBuf::as_ptr`] (the O_DIRECT
    /// bounce buffer), never for the cache's slots or arena: a slice of the whole buffer would
    /// cover regions that loaders write.
    #[cfg_attr(not(feature = "file"), allow(dead_code))]
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr is valid for len initialised (zeroed, then written) bytes; the callers
        // (above) are buffers no one writes through `as_ptr` while the slice lives.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if let Some((raw, layout)) = self.raw.take() {
            // SAFETY: allocated in `new` with exactly this layout, freed only here.
            unsafe { dealloc(raw.as_ptr(), layout) }
        }
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_aligned_zeroed_and_writable() {
        for len in [0u64, 1, 4095, 4096, 4097, 1 << 20, (64 << 20) + 3] {
            let mut b = AlignedBuf::new(len, "test").unwrap();
            assert_eq!(b.as_slice().len() as u64, len);
            assert_eq!(b.as_ptr() as usize % READ_ALIGN as usize, 0, "len {len}");
            assert!(b.as_slice().iter().all(|&x| x == 0));
            b.as_mut_slice().fill(0xA5);
            assert!(b.as_slice().iter().all(|&x| x == 0xA5));
        }
    }
}

//! [`AlignedBuf`]: one zeroed heap allocation aligned to [`READ_ALIGN`](crate::READ_ALIGN).

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ptr::NonNull;

use crate::{Error, READ_ALIGN};

/// An owned, zero-initialised byte buffer whose start is aligned to [`READ_ALIGN`], as O_DIRECT
/// reads require. Zeroed allocation lets the OS hand out untouched pages lazily, so a large
/// arena costs nothing until it is written.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: AlignedBuf owns its allocation exclusively (like a Box<[u8]>); moving it to another
// thread moves that ownership.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared access only hands out `&[u8]` or raw pointers; writes through raw pointers are
// synchronised by the cache's slot protocol (a slot is written only while no reader can see it).
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// Allocate `len` zeroed bytes aligned to [`READ_ALIGN`]; `what` names the use in errors.
    pub fn new(len: u64, what: &'static str) -> Result<AlignedBuf, Error> {
        let len_usize = usize::try_from(len).map_err(|_| Error::TooLarge { what, value: len })?;
        if len_usize == 0 {
            return Ok(AlignedBuf {
                ptr: NonNull::dangling(),
                len: 0,
            });
        }
        let layout = Layout::from_size_align(len_usize, READ_ALIGN as usize)
            .map_err(|_| Error::TooLarge { what, value: len })?;
        // SAFETY: the layout has a non-zero size (checked above).
        let raw = unsafe { alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).ok_or(Error::Alloc { what, bytes: len })?;
        Ok(AlignedBuf {
            ptr,
            len: len_usize,
        })
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Pointer to the first byte.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The bytes, for exclusive use.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: ptr is valid for len initialised (zeroed) bytes and `&mut self` is exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr is valid for len initialised bytes; callers that write through `as_ptr`
        // do so only for regions no shared slice covers (the cache's slot protocol).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.len == 0 {
            return;
        }
        // SAFETY: allocated in `new` with exactly this size and alignment (validated there).
        unsafe {
            dealloc(
                self.ptr.as_ptr(),
                Layout::from_size_align_unchecked(self.len, READ_ALIGN as usize),
            )
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

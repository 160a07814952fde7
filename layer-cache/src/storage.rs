//! The [`Storage`] trait: where a model's bytes come from.
//!
//! A storage is a read-only byte array of known length, addressed with `u64` offsets. The cache
//! copies byte ranges out of it into memory it owns ([`read_at`](Storage::read_at)), or, for
//! backends that can lend bytes without copying (a memory map), borrows them
//! ([`bytes`](Storage::bytes)) and only tells the storage which ranges are about to be used or
//! dropped ([`will_need`](Storage::will_need) / [`dont_need`](Storage::dont_need)).

use crate::Error;

/// A read-only, positioned byte source shared by the cache and its prefetch threads.
///
/// # Contract
/// - `len` is the number of readable bytes; it may shrink if the underlying file is truncated,
///   in which case reads past the new end return [`Error::OutOfBounds`] or [`Error::Io`] —
///   never short data, never zeros.
/// - `read_at` fills *all* of `buf` with the bytes at `offset..offset + buf.len()` or returns an
///   error; it may be called concurrently from several threads.
/// - `bytes` lends a slice without copying when the backend can (memory maps); the slice stays
///   valid as long as `self` lives.
/// - The advise hooks are hints; their default does nothing.
///
/// The trait is object safe: the cache holds an `Arc<dyn Storage>`.
pub trait Storage: Send + Sync {
    /// Number of bytes in the storage.
    fn len(&self) -> u64;

    /// Whether the storage holds no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fill `buf` with the bytes at `offset..offset + buf.len()`.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error>;

    /// Lend `offset..offset + len` without copying, if this backend can.
    fn bytes(&self, offset: u64, len: u64) -> Option<&[u8]> {
        let _ = (offset, len);
        None
    }

    /// Hint: `offset..offset + len` will be used soon (mmap: `madvise(WILLNEED)`).
    fn will_need(&self, offset: u64, len: u64) {
        let _ = (offset, len);
    }

    /// Hint: `offset..offset + len` is not needed any more (mmap: `madvise(DONTNEED)`).
    fn dont_need(&self, offset: u64, len: u64) {
        let _ = (offset, len);
    }

    /// A short description for error messages (a path, "memory", ...).
    fn describe(&self) -> String {
        String::from("storage")
    }
}

#[cfg(feature = "mmap")]
/// Bounds check shared by the backends: `offset + len <= available`, without overflow.
pub(crate) fn check_range(
    what: &dyn Fn() -> String,
    offset: u64,
    len: u64,
    available: u64,
) -> Result<(), Error> {
    match offset.checked_add(len) {
        Some(end) if end <= available => Ok(()),
        _ => Err(Error::OutOfBounds {
            what: what(),
            offset,
            len,
            available,
        }),
    }
}

/// A storage over bytes already in memory: tests, and hosts (such as a wasm module) that fill a
/// buffer themselves. Needs no filesystem.
#[derive(Debug, Clone, Default)]
pub struct MemStorage {
    bytes: Vec<u8>,
}

impl MemStorage {
    /// Wrap `bytes`.
    pub fn new(bytes: Vec<u8>) -> MemStorage {
        MemStorage { bytes }
    }

    /// The wrapped bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes
    }
}

impl Storage for MemStorage {
    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        let src = self
            .bytes(offset, buf.len() as u64)
            .ok_or_else(|| Error::OutOfBounds {
                what: self.describe(),
                offset,
                len: buf.len() as u64,
                available: self.len(),
            })?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn bytes(&self, offset: u64, len: u64) -> Option<&[u8]> {
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        self.bytes.get(start..end)
    }

    fn describe(&self) -> String {
        String::from("in-memory storage")
    }
}

/// Read `buf.len()` bytes at `offset`, split into up to `threads` pieces read concurrently
/// (pieces are multiples of [`READ_ALIGN`](crate::READ_ALIGN) so O_DIRECT alignment survives the
/// split). With the `threads` feature off, or `threads <= 1`, one read.
pub(crate) fn read_split(
    storage: &dyn Storage,
    offset: u64,
    buf: &mut [u8],
    threads: usize,
) -> Result<(), Error> {
    const MIN_PIECE: usize = 1 << 20;
    #[cfg(feature = "threads")]
    {
        let align = crate::READ_ALIGN as usize;
        let pieces = threads.min(buf.len() / MIN_PIECE).max(1);
        if pieces > 1 {
            let piece = buf.len().div_ceil(pieces).div_ceil(align) * align;
            return std::thread::scope(|scope| {
                let handles: Vec<_> = buf
                    .chunks_mut(piece)
                    .enumerate()
                    .map(|(i, chunk)| {
                        let off = offset + (i * piece) as u64;
                        scope.spawn(move || storage.read_at(off, chunk))
                    })
                    .collect();
                // Join all before returning so no thread outlives the buffer; keep the first error.
                let mut result = Ok(());
                for handle in handles {
                    let r = handle.join().unwrap_or_else(|_| {
                        Err(Error::Layout(String::from("a read thread panicked")))
                    });
                    if result.is_ok() {
                        result = r;
                    }
                }
                result
            });
        }
    }
    let _ = (threads, MIN_PIECE);
    storage.read_at(offset, buf)
}

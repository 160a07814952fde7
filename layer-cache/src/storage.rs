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

    /// Make `offset..offset + len` of a lent range resident now, reading it from the device
    /// (mmap: `madvise(MADV_POPULATE_READ)`). `None` when the backend cannot; then the cache
    /// touches one byte per page instead. An I/O error (or a range past a truncated end) is
    /// returned, not raised as a signal.
    fn populate(&self, offset: u64, len: u64) -> Option<Result<(), Error>> {
        let _ = (offset, len);
        None
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

/// `read_at` for backends that lend their bytes ([`Storage::bytes`]): copies the lent range
/// `offset..offset + buf.len()` into `buf`, or [`Error::OutOfBounds`] where it cannot be lent.
pub(crate) fn copy_lent<S: Storage + ?Sized>(
    storage: &S,
    offset: u64,
    buf: &mut [u8],
) -> Result<(), Error> {
    let src = storage
        .bytes(offset, buf.len() as u64)
        .ok_or_else(|| Error::OutOfBounds {
            what: storage.describe(),
            offset,
            len: buf.len() as u64,
            available: storage.len(),
        })?;
    buf.copy_from_slice(src);
    Ok(())
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
        copy_lent(self, offset, buf)
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

/// A buffered [`std::io::Read`] + [`std::io::Seek`] cursor over a [`Storage`], for parsers that
/// read a stream (the GGUF header: `Gguf::read(StorageReader::new(&storage))`) from a storage
/// that has no file behind it. Reads go to the storage in blocks of [`StorageReader::BLOCK`]
/// bytes, so a header of many small fields costs a few large reads.
#[derive(Debug)]
pub struct StorageReader<'a, S: Storage + ?Sized> {
    storage: &'a S,
    /// Absolute position of the cursor.
    pos: u64,
    /// Bytes of the storage at `buf_start..buf_start + buf.len()`.
    buf: Vec<u8>,
    buf_start: u64,
}

impl<'a, S: Storage + ?Sized> StorageReader<'a, S> {
    /// Bytes read from the storage at a time.
    pub const BLOCK: usize = 1 << 20;

    /// A cursor at offset 0 of `storage`.
    pub fn new(storage: &'a S) -> StorageReader<'a, S> {
        StorageReader {
            storage,
            pos: 0,
            buf: Vec::new(),
            buf_start: 0,
        }
    }
}

impl<S: Storage + ?Sized> std::io::Read for StorageReader<'_, S> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let end = self.buf_start + self.buf.len() as u64;
        if self.pos < self.buf_start || self.pos >= end {
            let len = self.storage.len();
            if self.pos >= len || out.is_empty() {
                return Ok(0);
            }
            let n = (len - self.pos).min(Self::BLOCK as u64) as usize;
            self.buf.resize(n, 0);
            self.storage
                .read_at(self.pos, &mut self.buf)
                .map_err(std::io::Error::other)?;
            self.buf_start = self.pos;
        }
        let at = (self.pos - self.buf_start) as usize;
        let n = out.len().min(self.buf.len() - at);
        out[..n].copy_from_slice(&self.buf[at..at + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl<S: Storage + ?Sized> std::io::Seek for StorageReader<'_, S> {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        let target = match to {
            std::io::SeekFrom::Start(p) => Some(p),
            std::io::SeekFrom::End(d) => self.storage.len().checked_add_signed(d),
            std::io::SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = target.ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("seek to {to:?} from {} leaves the u64 range", self.pos),
            )
        })?;
        Ok(self.pos)
    }
}

/// Size of one read when a load is split between threads (layer loads, the preload, experts). One page under Miri, so that its
/// small test models still take the split paths (several threads writing disjoint pieces of
/// one slot) that it checks for data races.
pub(crate) const PIECE: usize = if cfg!(miri) {
    crate::READ_ALIGN as usize
} else {
    8 << 20
};

/// Read `buf.len()` bytes at `offset` with up to `threads` reads in flight: the range is cut
/// into `PIECE`-sized pieces (multiples of [`READ_ALIGN`](crate::READ_ALIGN), so O_DIRECT
/// alignment survives the split) that the threads take in order, so no thread idles while
/// another still has a long tail. With the `threads` feature off, or `threads <= 1`, one read.
/// The first error wins; every thread is joined before returning.
pub(crate) fn read_split(
    storage: &dyn Storage,
    offset: u64,
    buf: &mut [u8],
    threads: usize,
) -> Result<(), Error> {
    #[cfg(feature = "threads")]
    {
        let n_pieces = buf.len().div_ceil(PIECE);
        let workers = threads.min(n_pieces);
        if workers > 1 {
            let queue = std::sync::Mutex::new(buf.chunks_mut(PIECE).enumerate());
            let failed = std::sync::atomic::AtomicBool::new(false);
            let worker = || -> Result<(), Error> {
                loop {
                    if failed.load(std::sync::atomic::Ordering::Relaxed) {
                        return Ok(());
                    }
                    let next = queue.lock().unwrap_or_else(|e| e.into_inner()).next();
                    let Some((i, piece)) = next else {
                        return Ok(());
                    };
                    if let Err(e) = storage.read_at(offset + (i * PIECE) as u64, piece) {
                        failed.store(true, std::sync::atomic::Ordering::Relaxed);
                        return Err(e);
                    }
                }
            };
            return std::thread::scope(|scope| {
                let handles: Vec<_> = (0..workers).map(|_| scope.spawn(worker)).collect();
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
    let _ = threads;
    storage.read_at(offset, buf)
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Seek, SeekFrom};

    use super::*;

    #[test]
    fn storage_reader_reads_and_seeks_across_blocks() {
        let block = StorageReader::<MemStorage>::BLOCK;
        let bytes: Vec<u8> = (0..3 * block + 123).map(|i| (i * 7 % 251) as u8).collect();
        let storage = MemStorage::new(bytes.clone());
        let mut r = StorageReader::new(&storage);
        let mut all = Vec::new();
        r.read_to_end(&mut all).unwrap();
        assert_eq!(all, bytes);

        // Straddling a block boundary, after seeking backwards and relative to the end.
        let at = r.seek(SeekFrom::Start(block as u64 - 5)).unwrap();
        assert_eq!(at, block as u64 - 5);
        let mut ten = [0u8; 10];
        r.read_exact(&mut ten).unwrap();
        assert_eq!(ten[..], bytes[block - 5..block + 5]);
        r.seek(SeekFrom::End(-3)).unwrap();
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, bytes[bytes.len() - 3..]);
        assert!(r
            .seek(SeekFrom::Current(-(bytes.len() as i64) - 1))
            .is_err());
        // Past the end reads nothing.
        r.seek(SeekFrom::Start(bytes.len() as u64 + 10)).unwrap();
        assert_eq!(r.read(&mut ten).unwrap(), 0);
    }
}

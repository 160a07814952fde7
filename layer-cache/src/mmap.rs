//! [`MmapStorage`]: a read-only memory map that lends bytes without copying.
//!
//! # What the budget means with this backend
//! Bytes are never copied: a layer's tensors point straight into the mapping. The cache still
//! does its bookkeeping per layer — "loading" a layer is `madvise(WILLNEED)` followed by
//! `madvise(MADV_POPULATE_READ)` so the pages are really resident (an I/O error or a truncated
//! file then comes back as an error, not SIGBUS; kernels before 5.14 touch one byte per page
//! instead), and evicting it is
//! `madvise(DONTNEED)` on the layer's range, followed by `posix_fadvise(DONTNEED)` so the kernel
//! also drops the now-unmapped clean pages from its page cache. So the pages *mapped into this
//! process* for layer data (its RSS from the model file) stay within the budget, up to page
//! granularity at layer boundaries (pages shared with a neighbouring layer are kept). What the
//! budget cannot bound exactly is the kernel's page cache: its readahead may bring in more than
//! was asked, and pages another process maps stay cached. Use the `file` backend with
//! `direct_io = true`, or `arena`, when memory must be bounded exactly.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use memmap2::{Advice, Mmap, UncheckedAdvice};

use crate::storage::{check_range, copy_lent, Storage};
use crate::Error;

/// A whole file mapped read-only.
#[derive(Debug)]
pub struct MmapStorage {
    map: Mmap,
    file: File,
    path: PathBuf,
}

impl MmapStorage {
    /// Map `path` read-only.
    ///
    /// # Safety
    /// The file must not be modified or truncated while the mapping lives: the mapping's bytes
    /// would change under `&[u8]` borrows, and touching pages past a truncated end raises
    /// SIGBUS. Model files are treated as immutable while open.
    pub unsafe fn open(path: impl AsRef<Path>) -> Result<MmapStorage, Error> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|source| Error::Open {
            path: path.clone(),
            source,
        })?;
        // SAFETY: the caller guarantees the file is not modified while mapped (see # Safety).
        let map = unsafe { Mmap::map(&file) }.map_err(|source| Error::Open {
            path: path.clone(),
            source,
        })?;
        Ok(MmapStorage { map, file, path })
    }

    /// The mapped file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn range(&self, offset: u64, len: u64) -> Option<(usize, usize)> {
        let start = usize::try_from(offset).ok()?;
        let len = usize::try_from(len).ok()?;
        let end = start.checked_add(len)?;
        (end <= self.map.len()).then_some((start, len))
    }
}

impl Storage for MmapStorage {
    fn len(&self) -> u64 {
        self.map.len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        check_range(&|| self.describe(), offset, buf.len() as u64, self.len())?;
        copy_lent(self, offset, buf)
    }

    fn bytes(&self, offset: u64, len: u64) -> Option<&[u8]> {
        let (start, len) = self.range(offset, len)?;
        Some(&self.map[start..start + len])
    }

    fn will_need(&self, offset: u64, len: u64) {
        if let Some((start, len)) = self.range(offset, len) {
            // A hint: failure only loses the readahead; the populate that follows still loads.
            let _ = self.map.advise_range(Advice::WillNeed, start, len);
        }
    }

    fn populate(&self, offset: u64, len: u64) -> Option<Result<(), Error>> {
        let Some((start, n)) = self.range(offset, len) else {
            return Some(Err(Error::OutOfBounds {
                what: self.describe(),
                offset,
                len,
                available: self.len(),
            }));
        };
        match self.map.advise_range(Advice::PopulateRead, start, n) {
            Ok(()) => Some(Ok(())),
            // Kernels before 5.14 do not know the advice: let the cache touch pages instead.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => None,
            Err(source) => Some(Err(Error::Io {
                what: self.describe(),
                offset,
                len,
                source,
            })),
        }
    }

    fn dont_need(&self, offset: u64, len: u64) {
        if let Some((start, len)) = self.range(offset, len) {
            // SAFETY: the mapping is private and read-only, so DONTNEED only drops this
            // process's page mappings; the next access refaults the same file bytes. No Rust
            // reference observes a change of contents.
            let _ = unsafe {
                self.map
                    .unchecked_advise_range(UncheckedAdvice::DontNeed, start, len)
            };
            // Then drop the clean pages from the page cache too (a hint; pages still mapped
            // elsewhere stay).
            // SAFETY: posix_fadvise only reads its integer arguments; the fd is open for the
            // lifetime of `self`.
            let _ = unsafe {
                libc::posix_fadvise(
                    self.file.as_raw_fd(),
                    offset as libc::off_t,
                    len as libc::off_t,
                    libc::POSIX_FADV_DONTNEED,
                )
            };
        }
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

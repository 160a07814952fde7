//! [`FileStorage`]: positioned reads (`pread`) from a file, optionally with O_DIRECT.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::aligned::AlignedBuf;
use crate::storage::Storage;
use crate::{Error, READ_ALIGN};

/// A file read with positioned reads (`FileExt::read_at`), safe to share between threads.
///
/// With `direct` set the file is opened with `O_DIRECT`: reads bypass the page cache, so
/// streaming a model larger than memory does not grow it. O_DIRECT needs the file offset, the
/// length and the destination address aligned to [`READ_ALIGN`]; [`read_at`](Storage::read_at)
/// reads aligned requests straight into the caller's buffer and goes through a small aligned
/// bounce buffer for an unaligned head or tail (the cache always asks for aligned ranges, so
/// only the file's last, partial block takes that path).
#[derive(Debug)]
pub struct FileStorage {
    file: File,
    path: PathBuf,
    direct: bool,
}

impl FileStorage {
    /// Open `path` for reading; `direct` adds O_DIRECT (an error where the filesystem refuses it).
    pub fn open(path: impl AsRef<Path>, direct: bool) -> Result<FileStorage, Error> {
        let path = path.as_ref().to_path_buf();
        let mut options = std::fs::OpenOptions::new();
        options.read(true);
        if direct {
            use std::os::unix::fs::OpenOptionsExt;
            options.custom_flags(libc::O_DIRECT);
        }
        let file = options.open(&path).map_err(|source| Error::Open {
            path: path.clone(),
            source,
        })?;
        Ok(FileStorage { file, path, direct })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether O_DIRECT is on.
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    fn io_error(&self, offset: u64, len: usize, source: std::io::Error) -> Error {
        Error::Io {
            what: self.describe(),
            offset,
            len: len as u64,
            source,
        }
    }

    fn eof_error(&self, offset: u64, len: usize) -> Error {
        Error::OutOfBounds {
            what: self.describe(),
            offset,
            len: len as u64,
            available: self.len(),
        }
    }

    /// `pread` until `buf` is full; end of file first is an [`Error::OutOfBounds`].
    fn read_full(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => return Err(self.eof_error(offset, buf.len())),
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_error(offset, buf.len(), e)),
            }
        }
        Ok(())
    }

    /// `pread` as much as is there (up to `buf.len()`), stopping at end of file.
    fn read_some(&self, offset: u64, buf: &mut [u8]) -> Result<usize, Error> {
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_error(offset, buf.len(), e)),
            }
        }
        Ok(done)
    }

    /// O_DIRECT read of any range: aligned middle straight into `buf`, unaligned pieces through
    /// an aligned bounce buffer of at most 256 KiB, sized to the aligned blocks the range
    /// covers (a small read, such as one embedding row, reads one or two blocks).
    fn read_direct(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        const BOUNCE: usize = 256 << 10;
        let align = READ_ALIGN as usize;
        let mut bounce: Option<AlignedBuf> = None;
        let mut pos = offset;
        let mut out = 0;
        while out < buf.len() {
            let rest = &mut buf[out..];
            let aligned_ok = pos % READ_ALIGN == 0 && (rest.as_ptr() as usize) % align == 0;
            if aligned_ok && rest.len() >= align {
                let n = rest.len() / align * align;
                self.read_full(pos, &mut rest[..n])?;
                pos += n as u64;
                out += n;
                continue;
            }
            let block = pos / READ_ALIGN * READ_ALIGN;
            let skip = (pos - block) as usize;
            let cover = (skip + rest.len()).div_ceil(align) * align;
            let bounce = match &mut bounce {
                Some(b) => b,
                None => bounce.insert(AlignedBuf::new(
                    cover.min(BOUNCE) as u64,
                    "O_DIRECT bounce buffer",
                )?),
            };
            let want = cover.min(bounce.as_slice().len());
            let got = self.read_some(block, &mut bounce.as_mut_slice()[..want])?;
            if got <= skip {
                return Err(self.eof_error(offset, buf.len()));
            }
            let n = (got - skip).min(rest.len());
            rest[..n].copy_from_slice(&bounce.as_slice()[skip..skip + n]);
            pos += n as u64;
            out += n;
        }
        Ok(())
    }
}

impl Storage for FileStorage {
    fn len(&self) -> u64 {
        self.file.metadata().map(|m| m.len()).unwrap_or(0)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        if offset.checked_add(buf.len() as u64).is_none() {
            return Err(self.eof_error(offset, buf.len()));
        }
        if self.direct {
            self.read_direct(offset, buf)
        } else {
            self.read_full(offset, buf)
        }
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

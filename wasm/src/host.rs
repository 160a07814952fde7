//! [`HostStorage`]: the model's bytes, read from the embedder through the module's imports.

use strata_layer_cache::{Error, Storage};

#[link(wasm_import_module = "strata_host")]
extern "C" {
    /// The model file's length in bytes.
    fn host_len() -> u64;
    /// Copies `len` bytes of the file at `offset` to `dst`; 0 on success, else an error code.
    fn host_read(offset: u64, len: u64, dst: *mut u8) -> i32;
}

/// The host's model file (imports `strata_host.host_len` and `strata_host.host_read`).
#[derive(Debug, Clone, Copy)]
pub struct HostStorage;

impl Storage for HostStorage {
    fn len(&self) -> u64 {
        // SAFETY: an import without arguments or memory access.
        unsafe { host_len() }
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        let len = buf.len() as u64;
        let end = offset.checked_add(len);
        if end.is_none_or(|end| end > self.len()) {
            return Err(Error::OutOfBounds {
                what: self.describe(),
                offset,
                len,
                available: self.len().saturating_sub(offset),
            });
        }
        // SAFETY: `buf` is `len` writable bytes of this module's memory; the host writes at
        // most `len` bytes at `dst` and keeps no reference after returning.
        let code = unsafe { host_read(offset, len, buf.as_mut_ptr()) };
        if code != 0 {
            return Err(Error::Io {
                what: self.describe(),
                offset,
                len,
                source: std::io::Error::other(format!("host_read returned error code {code}")),
            });
        }
        Ok(())
    }

    fn describe(&self) -> String {
        "the host's model file".into()
    }
}

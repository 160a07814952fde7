//! `strata tensor MODEL NAME --out FILE.npy`: one tensor, dequantized to a float32 `.npy`.
//!
//! Reads the header, then only the named tensor's bytes (one positioned read), dequantizes them
//! with `strata_quant::dequantize` (bit-identical to gguf-py's `gguf.quants.dequantize`) and
//! writes a NumPy v1.0 array. The shape is the ggml dims reversed into NumPy's row-major order:
//! dims `[ne0, ne1]` (ne0 = row length) become shape `(ne1, ne0)`.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use strata_gguf::Gguf;

/// Flags of `strata tensor`.
#[derive(clap::Args)]
pub struct Args {
    /// The GGUF model file.
    pub model: PathBuf,
    /// Tensor name, e.g. `blk.0.attn_q.weight` (`strata inspect MODEL --tensors` lists them).
    pub name: String,
    /// Output `.npy` file (float32, little-endian).
    #[arg(long, short)]
    pub out: PathBuf,
}

/// Runs `strata tensor`.
pub fn run(args: Args) -> Result<()> {
    let g = Gguf::open(&args.model).with_context(|| args.model.display().to_string())?;
    let t = g
        .tensor(&args.name)
        .with_context(|| format!("{}: no tensor named {:?}", args.model.display(), args.name))?;
    let n = usize::try_from(t.n_elements()).context("tensor too large for this platform")?;
    let expected = t.ty.row_size(t.n_elements());
    if expected != Some(t.n_bytes) {
        bail!(
            "{}: tensor {} ({}, dims {:?}) has {} bytes, expected {:?}",
            args.model.display(),
            t.name,
            t.ty,
            t.dims,
            t.n_bytes,
            expected
        );
    }
    let mut bytes = vec![0u8; t.n_bytes as usize];
    let mut f = File::open(&args.model).with_context(|| args.model.display().to_string())?;
    let start = t.abs_offset(g.data_offset());
    f.seek(SeekFrom::Start(start))
        .and_then(|_| f.read_exact(&mut bytes))
        .with_context(|| {
            format!(
                "{}: reading tensor {} at offset {start}",
                args.model.display(),
                t.name
            )
        })?;
    let mut out = vec![0f32; n];
    strata_quant::dequantize(t.ty, &bytes, &mut out)
        .with_context(|| format!("tensor {}", t.name))?;
    let shape: Vec<u64> = t.dims.iter().rev().copied().collect();
    write_npy(&args.out, &shape, &out).with_context(|| args.out.display().to_string())?;
    eprintln!(
        "{}: {} {:?} -> {} shape {:?} float32",
        t.name,
        t.ty,
        t.dims,
        args.out.display(),
        shape
    );
    Ok(())
}

/// Writes a NumPy v1.0 `.npy` file of little-endian float32 in C order.
fn write_npy(path: &Path, shape: &[u64], data: &[f32]) -> Result<()> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    // Magic (6) + version (2) + length (2) + header + '\n' must be a multiple of 64.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat(total.next_multiple_of(64) - total));
    header.push('\n');
    let len = u16::try_from(header.len()).context("npy header too long")?;
    let mut w = BufWriter::new(File::create(path)?);
    w.write_all(b"\x93NUMPY\x01\x00")?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(header.as_bytes())?;
    for v in data {
        w.write_all(&v.to_le_bytes())?;
    }
    w.flush()?;
    Ok(())
}

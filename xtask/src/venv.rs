//! Python virtual environments under `target/` for tools from PyPI (the `openai` client, the
//! `wasmtime` runtime): created with `python3 -m venv`, filled from a requirements file that
//! pins the package, and reused while the pinned version imports.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{ensure, Context, Result};

/// The `PACKAGE==X` pin of a requirements file.
pub(crate) fn pinned(requirements: &str, package: &str) -> Option<String> {
    let prefix = format!("{package}==");
    requirements
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .find_map(|l| {
            l.strip_prefix(prefix.as_str())
                .map(|v| v.trim().to_string())
        })
}

/// Makes sure the venv at `venv` exists and holds `package` at the version `requirements`
/// pins; returns its python.
pub(crate) fn ensure(venv: &Path, requirements: &Path, package: &str) -> Result<PathBuf> {
    let text = std::fs::read_to_string(requirements)
        .with_context(|| format!("reading {}", requirements.display()))?;
    let pin = pinned(&text, package)
        .with_context(|| format!("{} pins no {package}==VERSION", requirements.display()))?;
    let python = venv.join("bin/python");
    // Reuse only a venv whose python runs and has the pinned version installed.
    let check =
        format!("import importlib.metadata as m, sys; sys.exit(m.version({package:?}) != {pin:?})");
    let ok = |python: &Path| {
        Command::new(python)
            .args(["-c", &check])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if python.is_file() && ok(&python) {
        return Ok(python);
    }
    if !python.is_file() {
        println!("$ python3 -m venv {}", venv.display());
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(venv)
            .status()
            .context("running `python3 -m venv` (is python3 installed?)")?;
        ensure!(
            status.success(),
            "`python3 -m venv {}` failed ({status}); on Debian: apt-get install python3-venv",
            venv.display()
        );
    }
    println!(
        "$ {} -m pip install -r {}",
        python.display(),
        requirements.display()
    );
    let status = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(requirements)
        .status()
        .context("running pip in the venv")?;
    ensure!(
        status.success(),
        "pip install -r {} failed ({status}); is PyPI reachable?",
        requirements.display()
    );
    ensure!(
        ok(&python),
        "the venv at {} still does not have {package} {pin}",
        venv.display()
    );
    Ok(python)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_pin() {
        let text = "# comment\nopenai==1.2.3  # why\nwasmtime==50.0.1\nhttpx\n";
        assert_eq!(pinned(text, "openai").as_deref(), Some("1.2.3"));
        assert_eq!(pinned(text, "wasmtime").as_deref(), Some("50.0.1"));
        assert_eq!(pinned(text, "httpx"), None);
        assert_eq!(pinned("openai>=1\n", "openai"), None);
    }
}

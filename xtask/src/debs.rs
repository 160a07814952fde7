//! Debian packages unpacked into a cache folder, nothing installed system-wide: the wasm
//! toolchain (`rustc-web` and its standard-library source, see ../shared/WASM.md) and the
//! Chromium that tests the web page.
//!
//! [`ensure`] resolves the packages' `Depends` recursively (the first of each group of
//! alternatives; virtual packages skipped) against what `dpkg` says is installed, downloads the
//! missing ones with `apt-get download` (versions are whatever the package lists hold, so
//! security updates are followed rather than hard-coded), and unpacks them with `dpkg -x` into
//! `DIR/root`. A stamp file records the package set; a later call with the same roots reuses the
//! folder.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, ensure as check, Context, Result};

/// The unpacked packages: `root` is the prefix (`root/usr/bin/…`).
pub(crate) struct Unpacked {
    pub root: PathBuf,
}

/// Forgets what was unpacked under `dir`, so that the next [`ensure`] resolves, downloads and
/// unpacks again (after [`apt_update`], to pick up newer versions).
pub(crate) fn forget(dir: &Path) -> Result<()> {
    let stamp = stamp(dir);
    match std::fs::remove_file(&stamp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", stamp.display()))
        }
        _ => Ok(()),
    }
}

/// The file under `dir` that records what was unpacked there.
fn stamp(dir: &Path) -> PathBuf {
    dir.join("unpacked.txt")
}

/// Makes sure the `roots` packages and their missing dependencies are unpacked under `dir`.
pub(crate) fn ensure(dir: &Path, roots: &[&str]) -> Result<Unpacked> {
    let root = dir.join("root");
    let stamp = stamp(dir);
    let wanted = roots.join(" ");
    if let Ok(text) = std::fs::read_to_string(&stamp) {
        if text.lines().next() == Some(wanted.as_str()) {
            return Ok(Unpacked { root });
        }
    }
    let packages = match resolve(roots) {
        Ok(p) => p,
        Err(_) => {
            apt_update()?;
            resolve(roots)?
        }
    };
    let debs = dir.join("debs");
    if debs.exists() {
        std::fs::remove_dir_all(&debs).with_context(|| format!("clearing {}", debs.display()))?;
    }
    std::fs::create_dir_all(&debs).with_context(|| format!("creating {}", debs.display()))?;
    println!(
        "debs: downloading {} packages into {}: {}",
        packages.len(),
        debs.display(),
        packages.join(" ")
    );
    if download(&debs, &packages).is_err() {
        apt_update()?;
        download(&debs, &packages)?;
    }
    if root.exists() {
        std::fs::remove_dir_all(&root).with_context(|| format!("clearing {}", root.display()))?;
    }
    std::fs::create_dir_all(&root)?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(&debs)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    files.sort();
    check!(
        files.len() == packages.len(),
        "apt-get download left {} .deb files for {} packages in {}",
        files.len(),
        packages.len(),
        debs.display()
    );
    for f in &files {
        let status = Command::new("dpkg")
            .arg("-x")
            .arg(f)
            .arg(&root)
            .status()
            .context("running dpkg -x")?;
        check!(
            status.success(),
            "dpkg -x {} failed ({status})",
            f.display()
        );
    }
    std::fs::write(&stamp, format!("{wanted}\n{}\n", packages.join(" ")))?;
    std::fs::remove_dir_all(&debs).ok();
    Ok(Unpacked { root })
}

/// The packages to fetch: `roots` and, recursively, every dependency `dpkg` does not have
/// installed.
fn resolve(roots: &[&str]) -> Result<Vec<String>> {
    let mut seen = BTreeSet::new();
    let mut todo: Vec<String> = roots.iter().map(|s| s.to_string()).collect();
    let mut need = BTreeSet::new();
    while let Some(p) = todo.pop() {
        if !seen.insert(p.clone()) {
            continue;
        }
        if installed(&p) {
            continue;
        }
        need.insert(p.clone());
        todo.extend(depends(&p)?);
    }
    Ok(need.into_iter().collect())
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// `Depends` and `PreDepends` of `package` (the first of each `|` group, no virtual packages).
fn depends(package: &str) -> Result<Vec<String>> {
    let out = Command::new("apt-cache")
        .args(["depends", package])
        .output()
        .context("running apt-cache (is this Debian?)")?;
    check!(
        out.status.success(),
        "apt-cache depends {package} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(parse_depends(&String::from_utf8_lossy(&out.stdout)))
}

/// Parses `apt-cache depends` output (see [`depends`]).
fn parse_depends(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    // Inside a group of alternatives after its first member.
    let mut in_group = false;
    for line in text.lines().skip(1) {
        let l = line.trim();
        let Some((kind, name)) = l.split_once(':') else {
            continue; // an indented alternative provider line
        };
        let alt = kind.starts_with('|');
        let kind = kind.trim_start_matches('|');
        if kind != "Depends" && kind != "PreDepends" {
            in_group = false;
            continue;
        }
        let name = name.trim();
        if !in_group && !name.starts_with('<') {
            out.push(name.to_string());
        }
        in_group = alt;
    }
    out
}

fn download(dir: &Path, packages: &[String]) -> Result<()> {
    let status = Command::new("apt-get")
        .arg("download")
        .args(packages)
        .current_dir(dir)
        .status()
        .context("running apt-get download")?;
    if !status.success() {
        bail!("apt-get download failed ({status})");
    }
    Ok(())
}

pub(crate) fn apt_update() -> Result<()> {
    println!("debs: apt-get update (package lists missing or stale)");
    let status = Command::new("apt-get")
        .args(["update", "-q"])
        .status()
        .context("running apt-get update")?;
    check!(
        status.success(),
        "apt-get update failed ({status}); run it as root once"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_depends_with_alternatives_and_virtuals() {
        let text =
            "chromium\n  Depends: libasound2\n |Depends: libgtk-3-0\n  Depends: libgtk-4-1\n  \
                    Depends: <xdg-desktop-portal-backend>\n    xdg-desktop-portal-gtk\n  \
                    PreDepends: dpkg\n  Recommends: fonts-liberation\n  Depends: chromium-common\n";
        assert_eq!(
            parse_depends(text),
            ["libasound2", "libgtk-3-0", "dpkg", "chromium-common"]
        );
    }
}

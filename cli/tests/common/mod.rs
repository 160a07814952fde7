//! Helpers shared by the CLI test binaries.

// Each test binary uses some of these.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Command, Output};

/// Runs the `strata` binary with `args`.
pub fn strata<S: AsRef<OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .output()
        .expect("running strata")
}

/// Exit `code`, nothing on stdout, and stderr holding every one of `needles`: a runtime error
/// (exit 1) as one line `strata: ...`, a usage error (exit 2) as clap's `error: ...` and usage.
pub fn assert_refused(out: &Output, code: i32, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "stdout: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    let first = stderr.lines().next().unwrap_or("");
    for n in needles {
        assert!(stderr.contains(n), "{stderr:?} lacks {n:?}");
    }
    if code == 1 {
        assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
        assert!(first.starts_with("strata: "), "{stderr:?}");
    } else {
        assert!(first.starts_with("error: "), "{stderr:?}");
    }
}

/// The real model: `$STRATA_MODEL` or `<workspace>/models/gemma-3-270m-q4_k_m.gguf`.
pub fn model_path() -> PathBuf {
    let path = std::env::var_os("STRATA_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/gemma-3-270m-q4_k_m.gguf")
        });
    assert!(
        path.is_file(),
        "real model not found at {}: run `cargo xtask fetch-model` (or set STRATA_MODEL)",
        path.display()
    );
    path
}

//! Hard limits of `strata generate` on the real model: a budget below the minimum, a context
//! too small for the prompt and the tokens asked for, a context too large to allocate, and
//! absurd sampling or thread values are each refused before any token — naming the flag or
//! the numbers, with nothing on stdout.

mod common;

use std::process::{Command, Output};

fn generate(args: &[&str]) -> Output {
    let model = common::model_path();
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("generate")
        .arg(&model)
        .args(["-p", "The capital of France is"])
        .args(args)
        .output()
        .unwrap()
}

/// Exit `code`, empty stdout, and stderr holding every one of `needles`.
fn assert_refused(args: &[&str], code: i32, needles: &[&str]) {
    let out = generate(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
    assert!(out.stdout.is_empty(), "{args:?} printed to stdout");
    for n in needles {
        assert!(stderr.contains(n), "{args:?}: {stderr:?} lacks {n:?}");
    }
}

#[test]
fn a_budget_below_the_minimum_is_refused_naming_the_minimum() {
    let out = generate(&["--budget", "min", "-n", "1", "--temp", "0"]);
    assert!(out.status.success());
    // The minimum as the refusal states it, then one byte less than it is refused again.
    let out = generate(&["--budget", "1MB", "-n", "1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty());
    let min: u64 = stderr
        .split("below the minimum of ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no minimum in {stderr:?}"));
    assert_refused(
        &["--budget", &(min - 1).to_string(), "-n", "1"],
        1,
        &[&format!("minimum of {min} bytes")],
    );
    let out = generate(&["--budget", &min.to_string(), "-n", "1", "--temp", "0"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_context_too_small_for_prompt_and_tokens_is_an_error_naming_both() {
    // The prompt is 6 tokens with BOS: 6 + 20 = 26 positions, 16 in the cache.
    assert_refused(
        &["--ctx", "16", "-n", "20"],
        1,
        &["26 positions", "holds 16"],
    );
    // What fits runs.
    let out = generate(&["--ctx", "26", "-n", "20", "--temp", "0", "--ignore-eos"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_context_too_large_to_allocate_is_an_error_not_an_abort() {
    assert_refused(
        &["--ctx", "100000000000", "-n", "1"],
        1,
        &["100000000000 positions", "could not be allocated"],
    );
}

#[test]
fn absurd_sampling_and_thread_values_are_refused_naming_the_flag() {
    for (flag, value) in [
        ("--temp", "-1"),
        ("--temp", "nan"),
        ("--temp", "inf"),
        ("--top-p", "0"),
        ("--top-p", "1.5"),
        ("--min-p", "-0.1"),
        ("--min-p", "2"),
        ("--repeat-penalty", "0"),
        ("--repeat-penalty", "-1"),
        ("--threads", "0"),
        ("--threads", "100000"),
        ("--ctx", "0"),
        ("--budget", "150%"),
        ("-n", "-1"),
    ] {
        assert_refused(&[flag, value], 2, &[flag, value]);
    }
}

//! `strata` refuses an inconsistent model the way a user needs it: exit code 1, nothing on
//! stdout, one line on stderr naming the file and the problem — for every command that opens a
//! model (`generate`, `logits`, `chat`, `bench`, `serve`). The broken files are engine/tests'
//! synthetic model with one thing broken.

#[path = "../../engine/tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{variant, with_meta, with_tensor};
use strata_gguf::Value;

fn strata(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn assert_refused(path: &Path, needle: &str) {
    let p = path.to_str().unwrap();
    for args in [
        vec!["generate", p, "-p", "a", "-n", "2"],
        vec!["logits", p, "-p", "a"],
        vec!["chat", p],
        vec!["bench", p, "-p", "4", "-n", "2", "-r", "1"],
        vec!["serve", p, "--port", "0"],
    ] {
        let out = strata(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?} printed to stdout");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.contains(p) && stderr.contains(needle),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn inconsistent_models_are_refused_with_one_line_naming_the_file() {
    assert_refused(
        &with_tensor("cli-no-attn-q", "blk.0.attn_q.weight", |_| None),
        "blk.0.attn_q.weight",
    );
    assert_refused(
        &with_meta(
            "cli-eos",
            "tokenizer.ggml.eos_token_id",
            Value::U32(1 << 20),
        ),
        "tokenizer.ggml.eos_token_id",
    );
    assert_refused(
        &with_meta("cli-layers", "llama.block_count", Value::U32(7)),
        "block_count",
    );
    assert_refused(
        &variant(
            "cli-template",
            |_, v| Some(v.clone()),
            &[(
                "tokenizer.chat_template",
                Value::from("{{ messages[0].content | no_such_filter }}"),
            )],
            Some,
        ),
        "chat template",
    );
}

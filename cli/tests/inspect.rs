//! `strata inspect` end to end: the real model, JSON output, and hostile files
//! (each must exit with code 1 and one line on stderr naming the file).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::model_path;
use strata_gguf::{Array, GgmlType, GgufWriter};

fn strata(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .output()
        .expect("running strata")
}

fn inspect(path: &Path, flags: &[&str]) -> Output {
    let mut args = vec![std::ffi::OsStr::new("inspect"), path.as_os_str()];
    args.extend(flags.iter().map(std::ffi::OsStr::new));
    strata(&args)
}

/// A scratch directory for this test process.
fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("strata-inspect-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn small_valid_file() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", "llama").unwrap();
    w.add_metadata("llama.block_count", 2u32).unwrap();
    w.add_metadata(
        "tokenizer.ggml.tokens",
        Array::from_strings((0..100).map(|i| format!("t{i}"))),
    )
    .unwrap();
    w.add_tensor("token_embd.weight", GgmlType::F32, &[4, 3], vec![0; 48])
        .unwrap();
    w.add_tensor("blk.0.attn_q.weight", GgmlType::Q8_0, &[32, 2], vec![0; 68])
        .unwrap();
    w.add_tensor("blk.1.attn_q.weight", GgmlType::Q8_0, &[32, 2], vec![0; 68])
        .unwrap();
    w.to_vec().unwrap()
}

fn assert_one_line_error(out: &Output, path: &Path) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "exit status for {}: stderr {stderr}",
        path.display()
    );
    assert!(
        out.stdout.is_empty(),
        "stdout not empty for {}",
        path.display()
    );
    assert!(
        stderr.ends_with('\n') && stderr.matches('\n').count() == 1,
        "not one line: {stderr:?}"
    );
    assert!(stderr.starts_with("strata: "), "{stderr}");
    assert!(
        stderr.contains(&path.display().to_string()),
        "file not named: {stderr}"
    );
}

#[test]
fn real_model_text() {
    let out = inspect(&model_path(), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "architecture:    gemma3",
        "GGUF v3, 33 metadata pairs, 236 tensors",
        "parameters:      268,098,176",
        "file type:       Q4_K_M (15)",
        "context length:  32768",
        "layers:          18",
        "tokenizer:       llama = SentencePiece BPE (pre: default), vocabulary 262144",
        "blk.17",
        "(262144 items)",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    // Long arrays are summarized: no line holds the whole vocabulary.
    assert!(text.lines().all(|l| l.len() < 400));
}

#[test]
fn real_model_json() {
    let out = inspect(&model_path(), &["--json", "--tensors"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(doc["version"], 3);
    assert_eq!(doc["metadata_count"], 33);
    assert_eq!(doc["tensor_count"], 236);
    assert_eq!(doc["architecture"], "gemma3");
    assert_eq!(doc["block_count"], 18);
    assert_eq!(doc["file_type"]["name"], "Q4_K_M");
    assert_eq!(doc["tokenizer"]["vocab_size"], 262_144);
    assert_eq!(doc["tokenizer"]["kind"], "SentencePiece BPE");
    assert_eq!(doc["hyperparameters"]["embedding_length"], 640);
    let counts: Vec<(String, u64)> = doc["tensor_types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["type"].as_str().unwrap().to_owned(),
                t["tensors"].as_u64().unwrap(),
            )
        })
        .collect();
    let mut counts = counts;
    counts.sort();
    assert_eq!(
        counts,
        [
            ("F32", 109),
            ("Q4_K", 27),
            ("Q5_0", 81),
            ("Q6_K", 9),
            ("Q8_0", 10)
        ]
        .map(|(t, n)| (t.to_owned(), n))
    );
    assert_eq!(doc["layers"].as_array().unwrap().len(), 18);
    let tokens = &doc["metadata"]["tokenizer.ggml.tokens"];
    assert_eq!(tokens["len"], 262_144);
    assert_eq!(tokens["head"][2], "<bos>");
    assert_eq!(doc["tensors"].as_array().unwrap().len(), 236);
    assert_eq!(doc["tensors"][0]["name"], "output_norm.weight");
}

#[test]
fn small_file_layers_and_globals() {
    let dir = scratch();
    let path = dir.join("small.gguf");
    std::fs::write(&path, small_valid_file()).unwrap();
    let out = inspect(&path, &["--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["globals"]["bytes"], 48);
    assert_eq!(doc["layers"][1]["bytes"], 68);
    assert_eq!(doc["parameters"], 12 + 64 + 64);
    assert_eq!(doc["tokenizer"]["vocab_size"], 100);
    assert_eq!(doc["context_length"], serde_json::Value::Null);
    let out = inspect(&path, &["--tensors"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("blk.1.attn_q.weight") && text.contains("[32, 2]"),
        "{text}"
    );
}

#[test]
fn hostile_files_exit_1_with_one_line() {
    let dir = scratch();
    let valid = small_valid_file();
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty.gguf", Vec::new()),
        ("magic.gguf", b"GGML\x03\0\0\0".to_vec()),
        ("truncated.gguf", valid[..valid.len() / 2].to_vec()),
        ("header-only.gguf", valid[..100].to_vec()),
    ];
    // An absurd tensor count.
    let mut absurd = valid.clone();
    absurd[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    cases.push(("absurd.gguf", absurd));
    // A duplicate key whose name holds a newline and an escape sequence.
    let mut dup = Vec::new();
    dup.extend_from_slice(b"GGUF");
    dup.extend_from_slice(&3u32.to_le_bytes());
    dup.extend_from_slice(&0u64.to_le_bytes());
    dup.extend_from_slice(&2u64.to_le_bytes());
    for _ in 0..2 {
        dup.extend_from_slice(&5u64.to_le_bytes());
        dup.extend_from_slice(b"a\nb\x1b[");
        dup.extend_from_slice(&4u32.to_le_bytes());
        dup.extend_from_slice(&1u32.to_le_bytes());
    }
    cases.push(("newline-key.gguf", dup));
    // A genuine 64 MB string: more header than `inspect` agrees to hold in memory.
    let mut big = Vec::new();
    big.extend_from_slice(b"GGUF");
    big.extend_from_slice(&3u32.to_le_bytes());
    big.extend_from_slice(&0u64.to_le_bytes());
    big.extend_from_slice(&1u64.to_le_bytes());
    big.extend_from_slice(&1u64.to_le_bytes());
    big.extend_from_slice(b"k");
    big.extend_from_slice(&8u32.to_le_bytes());
    big.extend_from_slice(&(64u64 << 20).to_le_bytes());
    big.resize(big.len() + (64 << 20), b'x');
    cases.push(("huge-string.gguf", big));
    for (name, bytes) in &cases {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        assert_one_line_error(&inspect(&path, &[]), &path);
        assert_one_line_error(&inspect(&path, &["--json"]), &path);
    }
    // Not a file at all.
    let missing = dir.join("does-not-exist.gguf");
    assert_one_line_error(&inspect(&missing, &[]), &missing);
    assert_one_line_error(&inspect(&dir, &[]), &dir);
    std::fs::remove_dir_all(&dir).ok();
}

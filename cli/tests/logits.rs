//! `strata logits` end to end on the real model: for llama.cpp's reference prompts
//! (`xtask/data/reference/gemma3-270m/`, llama.cpp 0c1e57098) the token ids, the top-20 logits at
//! every position and the whole last-position vector (`--out`) have llama.cpp's bits — the
//! criteria of `cargo xtask verify` — then `--top`, `--special`, and the refusals: a prompt longer
//! than `--ctx` (naming both numbers), usage errors (exit 2), a missing or broken model and an
//! unwritable `--out` (exit 1, one line naming the file, nothing on stdout).
//! Needs the real model: `cargo xtask fetch-model`.

mod common;
use common::{assert_refused, strata};

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::Output;

/// `strata logits MODEL -p PROMPT [flags]` on the real model.
fn logits(prompt: &str, flags: &[&str]) -> Output {
    let model = common::model_path();
    let mut args: Vec<&OsStr> = vec![OsStr::new("logits"), model.as_os_str()];
    args.extend([OsStr::new("-p"), OsStr::new(prompt)]);
    args.extend(flags.iter().map(OsStr::new));
    strata(&args)
}

/// One position's `(id, logit)` list.
type Top = Vec<(u32, f32)>;

/// The command's JSON: token ids, and per position the `(id, logit)` list.
struct Doc {
    token_ids: Vec<u32>,
    positions: Vec<Top>,
}

fn parse(out: &Output, what: &str) -> Doc {
    assert!(
        out.status.success(),
        "{what}: exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::str::from_utf8(&out.stdout).expect("UTF-8 stdout");
    let line = text.strip_suffix('\n').expect("output ends with a newline");
    assert!(
        !line.contains('\n'),
        "{what}: one JSON document on one line"
    );
    let j: serde_json::Value = serde_json::from_str(line).expect("JSON");
    let positions = j["positions"]
        .as_array()
        .expect("positions")
        .iter()
        .map(|p| {
            p["top"]
                .as_array()
                .expect("top")
                .iter()
                .map(|e| {
                    // Printed from an f32, so the f64 read back converts to the same bits.
                    let id = e[0].as_u64().expect("id") as u32;
                    (id, e[1].as_f64().expect("logit") as f32)
                })
                .collect()
        })
        .collect();
    Doc {
        token_ids: serde_json::from_value(j["token_ids"].clone()).expect("token_ids"),
        positions,
    }
}

fn reference_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../xtask/data/reference/gemma3-270m")
}

/// `(prompt, token ids, top-20 per position)` of reference `name`.
fn reference(name: &str) -> (String, Vec<u32>, Vec<Top>) {
    let path = reference_dir().join(format!("{name}.json"));
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("reference file")).unwrap();
    let top = j["positions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            p["top"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| (e[0].as_u64().unwrap() as u32, e[1].as_f64().unwrap() as f32))
                .collect()
        })
        .collect();
    (
        j["prompt"].as_str().unwrap().to_string(),
        serde_json::from_value(j["token_ids"].clone()).unwrap(),
        top,
    )
}

/// Descending by logit, lower id first among equal ones: the command's order (llama.cpp's
/// files list equal logits in an order of their own).
fn sorted(mut top: Top) -> Top {
    top.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    top
}

fn bits(top: &[(u32, f32)]) -> Vec<(u32, u32)> {
    top.iter().map(|&(id, l)| (id, l.to_bits())).collect()
}

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("strata-logits-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn top_logits_and_the_last_vector_have_llama_cpp_bits() {
    let dir = scratch();
    // Every reference prompt but the 387-token one (cargo xtask verify covers it).
    for name in ["p1_capital", "p2_story", "p3_fib", "p4_count", "p6_unicode"] {
        let (prompt, ids, top) = reference(name);
        let out_path = dir.join(format!("{name}.f32"));
        let doc = parse(
            &logits(
                &prompt,
                &["--top", "20", "--out", out_path.to_str().unwrap()],
            ),
            name,
        );
        assert_eq!(doc.token_ids, ids, "{name}: token ids");
        assert_eq!(doc.positions.len(), ids.len(), "{name}: positions");
        for (i, (ours, theirs)) in doc.positions.iter().zip(&top).enumerate() {
            assert_eq!(ours.len(), 20, "{name}: position {i}");
            assert_eq!(
                *ours,
                sorted(ours.clone()),
                "{name}: position {i} not descending"
            );
            assert_eq!(
                bits(ours),
                bits(&sorted(theirs.clone())),
                "{name}: position {i}: top-20 (id, logit bits) differ from llama.cpp's"
            );
        }
        let ours = std::fs::read(&out_path).expect("--out file");
        let theirs = std::fs::read(reference_dir().join(format!("{name}.last_logits.f32")))
            .expect("reference last logits");
        assert_eq!(ours.len(), 262_144 * 4, "{name}: --out holds n_vocab f32");
        let differing = ours
            .chunks_exact(4)
            .zip(theirs.chunks_exact(4))
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(
            differing, 0,
            "{name}: last-position logits differing in their bits"
        );
        // The last position's top-20 in the JSON is the top of the --out vector.
        let vec: Vec<f32> = ours
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        for &(id, l) in doc.positions.last().unwrap() {
            assert_eq!(vec[id as usize].to_bits(), l.to_bits(), "{name}: id {id}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn top_sets_the_length_of_every_list() {
    let prompt = "The capital of France is";
    let twenty = parse(&logits(prompt, &[]), "default --top");
    assert!(twenty.positions.iter().all(|p| p.len() == 20), "default 20");
    for k in [0usize, 1, 5] {
        let doc = parse(&logits(prompt, &["--top", &k.to_string()]), "--top");
        assert_eq!(doc.token_ids, twenty.token_ids);
        let prefixes: Vec<Top> = twenty.positions.iter().map(|p| p[..k].to_vec()).collect();
        assert_eq!(
            doc.positions.iter().map(|p| bits(p)).collect::<Vec<_>>(),
            prefixes.iter().map(|p| bits(p)).collect::<Vec<_>>(),
            "--top {k}: the first {k} of the top-20"
        );
    }
    // More than the vocabulary lists all of it.
    let all = parse(&logits("", &["--top", "1000000"]), "--top 1000000");
    assert_eq!(all.token_ids, [2]);
    assert_eq!(all.positions[0].len(), 262_144);
}

#[test]
fn special_parses_control_token_text_in_the_prompt() {
    let prompt = "<start_of_turn>user";
    let doc = parse(&logits(prompt, &["--special", "--top", "1"]), "--special");
    assert_eq!(doc.token_ids, [2, 105, 2364]);
    let doc = parse(&logits(prompt, &["--top", "1"]), "plain");
    assert_eq!(
        doc.token_ids,
        [2, 236820, 3041, 236779, 1340, 236779, 887, 236813, 2364]
    );
    assert_eq!(doc.positions.len(), doc.token_ids.len());
}

#[test]
fn a_prompt_longer_than_the_context_is_an_error_naming_both_numbers() {
    // 6 tokens with BOS.
    let prompt = "The capital of France is";
    assert_refused(
        &logits(prompt, &["--ctx", "5"]),
        1,
        &["6 positions", "holds 5"],
    );
    // Exactly full runs.
    let doc = parse(&logits(prompt, &["--ctx", "6", "--top", "1"]), "--ctx 6");
    assert_eq!(doc.positions.len(), 6);
}

#[test]
fn usage_errors_exit_2_with_nothing_on_stdout() {
    let model = common::model_path();
    let m = model.to_str().unwrap();
    assert_refused(&strata(&["logits", m]), 2, &["--prompt"]);
    assert_refused(
        &strata(&["logits", m, "-p", "x", "--bogus"]),
        2,
        &["'--bogus'"],
    );
    assert_refused(
        &strata(&["logits", m, "-p", "x", "--top", "-1"]),
        2,
        &["--top", "'-1'"],
    );
    assert_refused(
        &strata(&["logits", m, "-p", "x", "--top", "many"]),
        2,
        &["--top", "'many'"],
    );
    assert_refused(
        &strata(&["logits", m, "-p", "x", "--ctx", "0"]),
        2,
        &["--ctx", "0"],
    );
}

#[test]
fn a_missing_or_broken_model_exits_1_with_one_line_naming_the_file() {
    let dir = scratch().join("models");
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("no-such-model.gguf");
    let m = missing.to_str().unwrap();
    assert_refused(&strata(&["logits", m, "-p", "hi"]), 1, &[m, "not found"]);
    let not_gguf = dir.join("not-a-model.gguf");
    std::fs::write(&not_gguf, b"this is not a GGUF file at all").unwrap();
    let n = not_gguf.to_str().unwrap();
    assert_refused(
        &strata(&["logits", n, "-p", "hi"]),
        1,
        &[n, "not a GGUF file"],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unwritable_out_file_is_an_error_with_nothing_on_stdout() {
    // A directory that does not exist.
    let path = scratch().join("no-such-dir").join("last.f32");
    let p = path.to_str().unwrap();
    assert_refused(&logits("hi", &["--top", "1", "--out", p]), 1, &[p]);
    assert!(!path.exists());
}

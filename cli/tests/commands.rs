//! `strata tokenize`, `strata logits` and `strata chat` on the real model, against llama.cpp's
//! reference outputs (`xtask/data/reference/gemma3-270m/`, made by llama.cpp 0c1e57098; see the
//! README there) and against `strata generate`.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn reference(name: &str) -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../xtask/data/reference/gemma3-270m")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn strata(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn model() -> String {
    common::model_path().to_string_lossy().into_owned()
}

#[test]
fn tokenize_gives_llama_cpp_ids_for_every_reference_text() {
    let m = model();
    let r = reference("tokenize.json");
    let cases = r["cases"].as_array().unwrap();
    assert!(cases.len() >= 30);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let expected: Vec<u64> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        // The reference is llama_tokenize(add_special=false, parse_special=false).
        let out = strata(
            &["tokenize", &m, "--no-add-special", "--ids-only", text],
            None,
        );
        let ids: Vec<u64> = serde_json::from_str(&ok(&out, text)).unwrap();
        assert_eq!(ids, expected, "{text:?}");
    }
}

#[test]
fn tokenize_lists_ids_and_pieces_adds_bos_and_parses_special_tokens_on_request() {
    let m = model();
    let out = ok(&strata(&["tokenize", &m, "Hello world"], None), "list");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "      2 '<bos>'",
            "   9259 'Hello'",
            "   1902 ' world'",
            "3 tokens"
        ]
    );
    let ids = |args: &[&str]| -> Vec<u32> {
        let mut a = vec!["tokenize", &m, "--ids-only"];
        a.extend_from_slice(args);
        serde_json::from_str(&ok(&strata(&a, None), "ids")).unwrap()
    };
    assert_eq!(ids(&["--special", "<start_of_turn>user"]), [2, 105, 2364]);
    // Without --special the marker is text, several ordinary tokens.
    let plain = ids(&["<start_of_turn>user"]);
    assert!(plain.len() > 3 && !plain.contains(&105), "{plain:?}");
    assert_eq!(ids(&[""]), [2]);
    assert_eq!(ids(&["--no-add-special", ""]), Vec::<u32>::new());
}

#[test]
fn logits_are_llama_cpp_s_at_every_position_and_the_full_last_vector_bit_for_bit() {
    let m = model();
    let r = reference("p1_capital.json");
    let prompt = r["prompt"].as_str().unwrap();
    let out_file = std::env::temp_dir().join(format!("strata-logits-{}.f32", std::process::id()));
    let out = strata(
        &[
            "logits",
            &m,
            "-p",
            prompt,
            "--top",
            "20",
            "--out",
            out_file.to_str().unwrap(),
        ],
        None,
    );
    let doc: serde_json::Value = serde_json::from_str(&ok(&out, "logits")).unwrap();
    assert_eq!(doc["token_ids"], r["token_ids"]);
    let ours = doc["positions"].as_array().unwrap();
    let theirs = r["positions"].as_array().unwrap();
    assert_eq!(ours.len(), theirs.len());
    for (p, (a, b)) in ours.iter().zip(theirs).enumerate() {
        let (a, b) = (a["top"].as_array().unwrap(), b["top"].as_array().unwrap());
        assert_eq!(a.len(), 20);
        for (x, y) in a.iter().zip(b) {
            assert_eq!(x[0], y[0], "position {p}: ids");
            // The reference prints f32 with 9 significant digits: it round-trips exactly.
            let (x, y) = (x[1].as_f64().unwrap() as f32, y[1].as_f64().unwrap() as f32);
            assert_eq!(x.to_bits(), y.to_bits(), "position {p}: {x} vs {y}");
        }
    }
    let full = std::fs::read(&out_file).unwrap();
    let _ = std::fs::remove_file(&out_file);
    let expected = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../xtask/data/reference/gemma3-270m/p1_capital.last_logits.f32"),
    )
    .unwrap();
    assert_eq!(full.len(), 262144 * 4);
    assert!(
        full == expected,
        "the last position's logits differ in their bits"
    );
}

#[test]
fn logits_refuses_a_prompt_longer_than_the_context_naming_both() {
    let m = model();
    let out = strata(
        &["logits", &m, "-p", "one two three four five", "--ctx", "3"],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("holds 3") && err.contains("6 positions"),
        "{err}"
    );
}

/// `<start_of_turn>` … turns as Gemma's template renders them, without the BOS that
/// `strata generate` adds itself.
fn gemma_turns(turns: &[(&str, &str)]) -> String {
    turns
        .iter()
        .map(|(role, text)| format!("<start_of_turn>{role}\n{text}<end_of_turn>\n"))
        .collect::<String>()
        + "<start_of_turn>model\n"
}

#[test]
fn chat_answers_each_turn_as_generate_does_with_the_whole_conversation() {
    let m = model();
    let (q1, q2) = ("What is 2+2?", "And times 3?");
    let args = ["chat", &m, "--temp", "0", "-n", "24"];
    let out = ok(&strata(&args, Some(&format!("{q1}\n{q2}\n"))), "chat");
    // Three prompts (the last one answered by EOF), two replies each ended by a newline.
    let parts: Vec<&str> = out.split("> ").collect();
    assert_eq!(parts.len(), 4, "{out:?}");
    assert_eq!((parts[0], parts[3]), ("", ""));
    let (a1, a2) = (
        parts[1].strip_suffix('\n').unwrap(),
        parts[2].strip_suffix('\n').unwrap(),
    );
    assert!(!a1.is_empty() && !a2.is_empty());
    // The same run again gives the same conversation.
    assert_eq!(
        ok(&strata(&args, Some(&format!("{q1}\n{q2}\n"))), "again"),
        out
    );
    // Each reply is `generate`'s greedy continuation of the conversation so far (chat keeps the
    // first turn's KV cache and evaluates only the new tokens for the second).
    let generate = |prompt: &str| {
        let out = strata(
            &[
                "generate",
                &m,
                "--special",
                "--temp",
                "0",
                "-n",
                "24",
                "-p",
                prompt,
            ],
            None,
        );
        ok(&out, "generate").strip_suffix('\n').unwrap().to_string()
    };
    assert_eq!(generate(&gemma_turns(&[("user", q1)])), a1);
    let two = gemma_turns(&[("user", q1), ("model", a1), ("user", q2)]);
    assert_eq!(generate(&two), a2);
}

#[test]
fn chat_ends_at_an_empty_line_or_eof_and_an_empty_input_is_no_turn() {
    let m = model();
    for input in ["", "\n", "\nignored after the empty line\n"] {
        let out = ok(
            &strata(&["chat", &m, "--temp", "0", "-n", "4"], Some(input)),
            input,
        );
        assert_eq!(out, "> ", "{input:?}");
    }
}

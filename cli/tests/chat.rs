//! `strata chat` end to end on the real model, driven through stdin (one user turn per line; an
//! empty line or EOF ends the chat). Greedy (`--temp 0`), each reply is what `strata generate`
//! prints for the conversation rendered in Gemma's turn format (the model file has no
//! `tokenizer.chat_template`) — the second turn's with the first turn and its reply in it, so the
//! KV cache reused across turns must equal a fresh evaluation. Then: determinism, the ways to
//! end a chat, `--system`, and refusals (usage errors exit 2; a missing or broken model exits 1
//! with one line naming the file and nothing on stdout; a context overflow names both numbers).
//! Needs the real model: `cargo xtask fetch-model`.

mod common;
use common::assert_refused;

use std::ffi::OsStr;
use std::io::Write;
use std::process::{Command, Output, Stdio};

/// Tokens per reply: enough to see a reply, few enough to be fast.
const N: &str = "12";

fn chat_with<S: AsRef<OsStr>>(args: &[S], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("chat")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running strata chat");
    // The chat may end (on an error) before reading it all.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

/// `strata chat MODEL [flags]` on the real model with `stdin`; `--temp 0 -n N --ctx 256` where
/// `flags` does not set them.
fn chat(flags: &[&str], stdin: &str) -> Output {
    let model = common::model_path();
    let mut args: Vec<&OsStr> = vec![model.as_os_str()];
    args.extend(flags.iter().map(OsStr::new));
    for (flag, value) in [("--temp", "0"), ("-n", N), ("--ctx", "256")] {
        if !flags.contains(&flag) {
            args.extend([OsStr::new(flag), OsStr::new(value)]);
        }
    }
    chat_with(&args, stdin)
}

/// The replies of a chat's stdout: `> ` before each read, each reply followed by a newline,
/// and a last `> ` at the end of the input.
fn replies(out: &Output) -> Vec<String> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}: {stderr}",
        out.status.code()
    );
    let stdout = String::from_utf8(out.stdout.clone()).expect("UTF-8 stdout");
    if stdout == "> " {
        return Vec::new();
    }
    let body = stdout
        .strip_prefix("> ")
        .and_then(|s| s.strip_suffix("> "))
        .unwrap_or_else(|| panic!("stdout {stdout:?} does not start and end with the prompt"));
    let replies: Vec<String> = body
        .strip_suffix('\n')
        .unwrap_or_else(|| panic!("{stdout:?}: a reply ends with a newline"))
        .split("\n> ")
        .map(str::to_string)
        .collect();
    // The banner first and the stats line last (the replies go to stdout only).
    assert!(stderr.starts_with("chat with gemma3"), "{stderr:?}");
    assert!(
        stderr
            .trim_end()
            .lines()
            .last()
            .unwrap()
            .starts_with("load "),
        "{stderr:?}"
    );
    replies
}

/// What `strata generate --temp 0 -n N --special` prints for `prompt` (BOS added by it).
fn generate(prompt: &str) -> String {
    let model = common::model_path();
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("generate")
        .arg(&model)
        .args(["-p", prompt, "--special", "--temp", "0", "-n", N])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "generate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8 stdout");
    text.strip_suffix('\n')
        .expect("a final newline")
        .to_string()
}

/// Gemma's turn format for `(role, text)` turns, ending with the model's turn opener.
fn gemma(turns: &[(&str, &str)]) -> String {
    let mut s = String::new();
    for (role, text) in turns {
        s.push_str(&format!(
            "<start_of_turn>{role}\n{}<end_of_turn>\n",
            text.trim()
        ));
    }
    s + "<start_of_turn>model\n"
}

const Q1: &str = "What is the capital of France?";
const Q2: &str = "Name a color.";

#[test]
fn a_reply_is_the_greedy_continuation_of_the_rendered_turn() {
    let out = chat(&[], &format!("{Q1}\n"));
    let r = replies(&out);
    assert_eq!(r.len(), 1, "{r:?}");
    assert!(!r[0].trim().is_empty(), "an empty reply");
    assert_eq!(r[0], generate(&gemma(&[("user", Q1)])));
    // And the same again: greedy chat is deterministic.
    assert_eq!(chat(&[], &format!("{Q1}\n")).stdout, out.stdout);
}

#[test]
fn the_second_turn_sees_the_first() {
    let r = replies(&chat(&[], &format!("{Q1}\n{Q2}\n")));
    assert_eq!(r.len(), 2, "{r:?}");
    assert_eq!(r[0], generate(&gemma(&[("user", Q1)])));
    let with_history = generate(&gemma(&[("user", Q1), ("model", &r[0]), ("user", Q2)]));
    assert_eq!(r[1], with_history, "turn 2 with turn 1 in its context");
    // The test tells the two apart: alone, the second question gets another reply.
    assert_ne!(
        r[1],
        generate(&gemma(&[("user", Q2)])),
        "turn 2 without turn 1"
    );
}

#[test]
fn a_system_message_comes_before_the_first_turn() {
    let system = "Answer in one word.";
    let r = replies(&chat(&["--system", system], &format!("{Q1}\n")));
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0], generate(&gemma(&[("system", system), ("user", Q1)])));
    assert_ne!(
        r[0],
        generate(&gemma(&[("user", Q1)])),
        "the system turn is used"
    );
}

#[test]
fn eof_or_an_empty_line_ends_the_chat_with_exit_0() {
    // No input at all: one prompt, no reply.
    let out = chat(&[], "");
    assert_eq!(replies(&out), Vec::<String>::new());
    assert_eq!(out.stdout, b"> ");
    // An empty (or blank) line ends it: what follows is not read.
    for end in ["\n", "   \n"] {
        let r = replies(&chat(&[], &format!("{Q1}\n{end}{Q2}\n")));
        assert_eq!(r.len(), 1, "{end:?}: {r:?}");
    }
    // A last line without a newline is still a turn.
    let r = replies(&chat(&[], Q1));
    assert_eq!(r, [generate(&gemma(&[("user", Q1)]))]);
}

#[test]
fn n_predict_bounds_the_reply() {
    let r = replies(&chat(&["-n", "1"], &format!("{Q1}\n")));
    assert_eq!(r.len(), 1, "{r:?}");
    let full = generate(&gemma(&[("user", Q1)]));
    assert!(
        !r[0].is_empty() && full.starts_with(&r[0]) && r[0].len() < full.len(),
        "{:?} is not one token of {full:?}",
        r[0]
    );
}

#[test]
fn a_turn_overflowing_the_context_is_an_error_naming_both_numbers() {
    // Turn 1 is 16 tokens with BOS and the template; with -n 12 it needs 28 positions.
    let out = chat(&["--ctx", "20"], &format!("{Q1}\n"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    // Only the prompt was printed.
    assert_eq!(out.stdout, b"> ", "{stderr}");
    let last = stderr.lines().last().unwrap();
    assert!(
        last.starts_with("strata: ") && last.contains("28 positions") && last.contains("holds 20"),
        "{stderr:?}"
    );
}

#[test]
fn usage_errors_exit_2_with_nothing_on_stdout() {
    assert_refused(&chat(&["--bogus"], "hi\n"), 2, &["'--bogus'"]);
    assert_refused(&chat(&["--temp", "-1"], "hi\n"), 2, &["--temp"]);
    assert_refused(&chat(&["-n", "x"], "hi\n"), 2, &["'x'"]);
}

#[test]
fn a_missing_or_broken_model_exits_1_with_one_line_naming_the_file() {
    let dir = std::env::temp_dir().join(format!("strata-chat-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("no-such-model.gguf");
    let m = missing.to_str().unwrap();
    let out = chat_with(&[m, "--temp", "0"], "hi\n");
    assert_refused(&out, 1, &[m]);
    assert_refused(&out, 1, &["not found"]);
    let not_gguf = dir.join("not-a-model.gguf");
    std::fs::write(&not_gguf, b"this is not a GGUF file at all").unwrap();
    let n = not_gguf.to_str().unwrap();
    let out = chat_with(&[n, "--temp", "0"], "hi\n");
    assert_refused(&out, 1, &[n]);
    assert_refused(&out, 1, &["not a GGUF file"]);
    let _ = std::fs::remove_dir_all(&dir);
}

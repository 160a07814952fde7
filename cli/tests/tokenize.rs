//! `strata tokenize` end to end on the real model: llama.cpp's token ids for 30 assorted texts
//! (`engine/tests/data/tokenize.json`, `llama_tokenize(add_special=false, parse_special=false)`
//! by llama.cpp 0c1e57098), both output formats (the `id 'piece'` table and `--ids-only`), BOS,
//! `--special`, the empty text, and refusals: usage errors exit 2, a missing or broken model
//! exits 1 with one line on stderr naming the file — nothing on stdout either way.
//! Needs the real model: `cargo xtask fetch-model`.

mod common;
use common::{assert_refused, strata};

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Command, Output};

/// `strata tokenize [flags] MODEL -- TEXT` on the real model.
fn tokenize(flags: &[&str], text: &str) -> Output {
    let model = common::model_path();
    let mut args: Vec<&OsStr> = vec![OsStr::new("tokenize")];
    args.extend(flags.iter().map(OsStr::new));
    args.extend([model.as_os_str(), OsStr::new("--"), OsStr::new(text)]);
    strata(&args)
}

fn stdout_of(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("UTF-8 stdout")
}

/// The ids of `--ids-only` output: one line, a JSON array.
fn parse_ids(stdout: &str) -> Vec<u32> {
    let line = stdout
        .strip_suffix('\n')
        .expect("output ends with a newline");
    assert!(!line.contains('\n'), "more than one line: {stdout:?}");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?} is no JSON array: {e}"))
}

fn ids_only(flags: &[&str], text: &str) -> Vec<u32> {
    let mut all = vec!["--ids-only"];
    all.extend_from_slice(flags);
    parse_ids(&stdout_of(&tokenize(&all, text), text))
}

/// Undoes the table's piece quoting: `'...'` with `\n \r \t \' \\ \u{..} \xNN` escapes.
fn unquote(piece: &str) -> Vec<u8> {
    let inner = piece
        .strip_prefix('\'')
        .and_then(|p| p.strip_suffix('\''))
        .unwrap_or_else(|| panic!("piece {piece:?} is not quoted"));
    let mut out = Vec::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut buf = [0; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        match chars.next() {
            Some('n') => out.push(b'\n'),
            Some('r') => out.push(b'\r'),
            Some('t') => out.push(b'\t'),
            Some('\'') => out.push(b'\''),
            Some('\\') => out.push(b'\\'),
            Some('x') => {
                let hex: String = chars.by_ref().take(2).collect();
                out.push(u8::from_str_radix(&hex, 16).expect("\\xNN"));
            }
            Some('u') => {
                assert_eq!(chars.next(), Some('{'), "\\u{{..}} in {piece:?}");
                let hex: String = chars.by_ref().take_while(|&c| c != '}').collect();
                let c = char::from_u32(u32::from_str_radix(&hex, 16).unwrap()).unwrap();
                let mut buf = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
            other => panic!("unknown escape {other:?} in {piece:?}"),
        }
    }
    out
}

/// The table format: `(id, piece bytes)` rows, checked against the `N tokens` last line and the
/// right-aligned id column.
fn parse_table(stdout: &str) -> Vec<(u32, Vec<u8>)> {
    let lines: Vec<&str> = stdout
        .strip_suffix('\n')
        .expect("output ends with a newline")
        .split('\n')
        .collect();
    let (last, rows) = lines.split_last().unwrap();
    let rows: Vec<(u32, Vec<u8>)> = rows
        .iter()
        .map(|row| {
            // `{id:>7} 'piece'`
            assert!(row.len() > 8 && row.as_bytes()[7] == b' ', "row {row:?}");
            let id = row[..7].trim_start().parse().expect("id column");
            (id, unquote(&row[8..]))
        })
        .collect();
    assert_eq!(*last, format!("{} tokens", rows.len()), "{stdout:?}");
    rows
}

struct Case {
    text: String,
    ids: Vec<u32>,
}

fn reference_cases() -> Vec<Case> {
    // The file cargo xtask verify and the engine's tokenizer tests use (a copy of the
    // reference directory's tokenize.json).
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../engine/tests/data/tokenize.json");
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("tokenize.json")).unwrap();
    assert_eq!(j["add_special"], false);
    assert_eq!(j["parse_special"], false);
    let cases: Vec<Case> = j["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            text: c["text"].as_str().unwrap().to_string(),
            ids: serde_json::from_value(c["ids"].clone()).unwrap(),
        })
        .collect();
    assert_eq!(cases.len(), 30, "reference cases");
    cases
}

#[test]
fn ids_only_prints_llama_cpp_ids_for_every_reference_text() {
    let mut wrong = Vec::new();
    for case in reference_cases() {
        let ids = ids_only(&["--no-add-special"], &case.text);
        if ids != case.ids {
            wrong.push(format!(
                "{:?}: {ids:?} != llama.cpp {:?}",
                case.text, case.ids
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_table_lists_the_same_ids_and_pieces_that_rebuild_the_text() {
    // Whitespace, every escape the table uses, multi-byte UTF-8 and emoji sequences.
    let texts = [
        "The quick brown fox jumps over the lazy dog.".to_string(),
        "a\tb\\c'd\r\ne".to_string(),
        "Café naïve 東京 🚀 — ok".to_string(),
        "👍🏽 🇫🇷 👨\u{200d}👩\u{200d}👧".to_string(),
        "   leading spaces".to_string(),
    ];
    for text in &texts {
        let rows = parse_table(&stdout_of(&tokenize(&[], text), text));
        let ids: Vec<u32> = rows.iter().map(|r| r.0).collect();
        assert_eq!(
            ids,
            ids_only(&[], text),
            "{text:?}: table ids != --ids-only ids"
        );
        // BOS first (the model adds it), shown as its text; the other pieces are the text.
        assert_eq!(rows[0], (2, b"<bos>".to_vec()), "{text:?}");
        let rebuilt: Vec<u8> = rows[1..].iter().flat_map(|r| r.1.clone()).collect();
        assert_eq!(
            String::from_utf8_lossy(&rebuilt),
            *text,
            "{text:?}: pieces joined"
        );
    }
    // A known table, byte for byte (ids from llama.cpp's reference).
    let out = stdout_of(&tokenize(&[], "Hello world"), "Hello world");
    assert_eq!(
        out,
        "      2 '<bos>'\n   9259 'Hello'\n   1902 ' world'\n3 tokens\n"
    );
}

#[test]
fn bos_is_added_unless_no_add_special() {
    assert_eq!(ids_only(&[], "Hello world"), [2, 9259, 1902]);
    assert_eq!(ids_only(&["--no-add-special"], "Hello world"), [9259, 1902]);
}

#[test]
fn special_parses_control_token_text_only_when_asked() {
    let text = "<start_of_turn>user\nhi<end_of_turn>";
    // Without --special the markers are plain text: llama.cpp's ids for it.
    let plain = reference_cases()
        .into_iter()
        .find(|c| c.text == text)
        .expect("the chat-marker reference case");
    assert_eq!(ids_only(&["--no-add-special"], text), plain.ids);
    // With it, <start_of_turn> and <end_of_turn> are Gemma's control tokens 105 and 106 around
    // the plain tokens of "user", "\n" and "hi".
    assert_eq!(
        ids_only(&["--no-add-special", "--special"], text),
        [105, 2364, 107, 2202, 106]
    );
    assert_eq!(
        ids_only(&["--special"], text),
        [2, 105, 2364, 107, 2202, 106]
    );
}

#[test]
fn the_empty_text_has_no_tokens_but_bos() {
    assert_eq!(ids_only(&["--no-add-special"], ""), Vec::<u32>::new());
    assert_eq!(
        stdout_of(&tokenize(&["--ids-only", "--no-add-special"], ""), ""),
        "[]\n"
    );
    assert_eq!(ids_only(&[], ""), [2]);
    assert_eq!(
        stdout_of(&tokenize(&[], ""), ""),
        "      2 '<bos>'\n1 tokens\n"
    );
}

#[test]
fn usage_errors_exit_2_with_nothing_on_stdout() {
    let model = common::model_path();
    let m = model.to_str().unwrap();
    assert_refused(
        &strata(&["tokenize", m, "x", "--bogus"]),
        2,
        &["unexpected argument '--bogus'"],
    );
    assert_refused(&strata(&["tokenize", m]), 2, &["required arguments"]);
    assert_refused(&strata(&["tokenize"]), 2, &["required arguments"]);
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let bad = OsStr::from_bytes(b"caf\xe9");
        assert_refused(
            &strata(&[OsStr::new("tokenize"), model.as_os_str(), bad]),
            2,
            &["invalid UTF-8"],
        );
    }
}

#[test]
fn a_missing_or_broken_model_exits_1_with_one_line_naming_the_file() {
    let dir = std::env::temp_dir().join(format!("strata-tokenize-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("no-such-model.gguf");
    let m = missing.to_str().unwrap();
    assert_refused(&strata(&["tokenize", m, "hi"]), 1, &[m]);
    let not_gguf = dir.join("not-a-model.gguf");
    std::fs::write(&not_gguf, b"this is not a GGUF file at all").unwrap();
    let n = not_gguf.to_str().unwrap();
    let out = strata(&["tokenize", n, "hi"]);
    assert_refused(&out, 1, &[n]);
    assert_refused(&out, 1, &["not a GGUF file"]);
    // The real model cut inside its metadata.
    let head = std::fs::read(common::model_path()).unwrap()[..4096].to_vec();
    let truncated = dir.join("truncated.gguf");
    std::fs::write(&truncated, head).unwrap();
    let t = truncated.to_str().unwrap();
    assert_refused(&strata(&["tokenize", t, "hi"]), 1, &[t]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(target_os = "linux")]
#[test]
fn a_failed_write_to_stdout_is_an_error_not_a_panic() {
    let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
        return;
    };
    let model = common::model_path();
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("tokenize")
        .arg(&model)
        .args(["--ids-only", "Hello world"])
        .stdout(full)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    assert!(!stderr.contains("panicked"), "{stderr:?}");
}

//! `strata generate --temp 0` prints llama.cpp's greedy continuation, text for text.
//!
//! The expected texts are llama.cpp's own (`xtask/data/reference/gemma3-270m/*.json`, the
//! `greedy.text` of 32 tokens, made by llama.cpp 0c1e57098; see the README there). Prompts whose
//! 32 greedy tokens include a special token (p5's `<eos>`) are left to `cargo xtask verify`,
//! which compares ids. Needs the real model: `cargo xtask fetch-model`.

mod common;

use std::path::PathBuf;
use std::process::Command;

fn reference(name: &str) -> (String, String) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../xtask/data/reference/gemma3-270m")
        .join(format!("{name}.json"));
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("reference file")).unwrap();
    (
        j["prompt"].as_str().unwrap().to_string(),
        j["greedy"]["text"].as_str().unwrap().to_string(),
    )
}

#[test]
fn greedy_generation_prints_llama_cpp_continuation() {
    let model = common::model_path();
    for name in ["p1_capital", "p2_story", "p3_fib", "p4_count", "p6_unicode"] {
        let (prompt, expected) = reference(name);
        let out = Command::new(env!("CARGO_BIN_EXE_strata"))
            .arg("generate")
            .arg(&model)
            .args(["-p", &prompt, "-n", "32", "--temp", "0", "--ignore-eos"])
            .output()
            .expect("running strata generate");
        assert!(
            out.status.success(),
            "{name}: strata generate failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).expect("UTF-8 output");
        // The command ends its output with one newline of its own.
        assert_eq!(text.strip_suffix('\n').unwrap_or(&text), expected, "{name}");
    }
}

//! The real Gemma 3 270M against llama.cpp's reference logits for one prompt (the full check
//! of every prompt is `cargo xtask verify`). Needs the model: `cargo xtask fetch-model`.

use std::path::PathBuf;

use strata_engine::{Engine, EngineConfig, LogitsFor};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn model_path() -> PathBuf {
    let p = std::env::var_os("STRATA_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("models/gemma-3-270m-q4_k_m.gguf"));
    assert!(
        p.exists(),
        "model {} is missing: run `cargo xtask fetch-model` (or set STRATA_MODEL)",
        p.display()
    );
    p
}

#[test]
fn gemma3_logits_match_llama_cpp_reference() {
    let dir = workspace().join("xtask/data/reference/gemma3-270m");
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("p1_capital.json")).unwrap())
            .unwrap();
    let ref_ids: Vec<u32> = j["token_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let engine = Engine::open(model_path(), EngineConfig::default()).unwrap();
    let ids = engine
        .tokenizer()
        .encode(j["prompt"].as_str().unwrap(), true, false)
        .unwrap();
    assert_eq!(ids, ref_ids, "token ids differ from llama.cpp");

    let positions = j["positions"].as_array().unwrap().clone();
    let mut s = engine.session().unwrap();
    let mut bits_bad = Vec::new();
    let mut top1_bad = Vec::new();
    let mut reported = 0;
    s.eval_with(&ids, LogitsFor::All, &mut |i, logits| {
        let top = positions[i]["top"].as_array().unwrap();
        let (id0, l0, l1) = (
            top[0][0].as_u64().unwrap(),
            top[0][1].as_f64().unwrap(),
            top[1][1].as_f64().unwrap(),
        );
        if l0 - l1 > 0.1 && u64::from(strata_engine::sampler::argmax(logits)) != id0 {
            top1_bad.push(i);
        }
        reported += 1;
        // Our kernels reproduce llama.cpp's float order, so the logits are equal, bit for bit
        // (`%.9g` round-trips an f32), as `cargo xtask verify` checks for every prompt.
        for e in top {
            let id = e[0].as_u64().unwrap() as usize;
            let theirs = e[1].as_f64().unwrap() as f32;
            if logits[id].to_bits() != theirs.to_bits() {
                bits_bad.push((i, id, logits[id], theirs));
            }
        }
    })
    .unwrap();
    assert!(
        top1_bad.is_empty(),
        "top-1 differs at positions {top1_bad:?}"
    );
    assert_eq!(reported, ids.len(), "positions with logits");
    assert!(
        bits_bad.is_empty(),
        "top-20 logits differing from llama.cpp's (position, id, ours, theirs): {bits_bad:?}"
    );
    // The full vector at the last position, bit for bit (llama.cpp's `last_logits.f32`).
    let last: Vec<f32> = std::fs::read(dir.join("p1_capital.last_logits.f32"))
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let mut s2 = engine.session().unwrap();
    let logits = s2.eval(&ids).unwrap();
    let differing = logits
        .iter()
        .zip(&last)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    assert_eq!(
        differing,
        0,
        "logits differing from llama.cpp's, of {}",
        last.len()
    );
}

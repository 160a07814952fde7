//! `cargo xtask verify [--model PATH] [--quick]`: our engine against llama.cpp's reference
//! outputs for the real Gemma 3 270M (`xtask/data/reference/gemma3-270m/`), then the same
//! prompts on every storage backend and at the smallest budget the cache accepts, which must
//! reproduce the first run's logits bit for bit.
//!
//! Strata reproduces the float operation order of llama.cpp's CPU backend op by op (the quant
//! crate's kernels follow its per-type, per-batch-size kernels; the engine's norms, RoPE,
//! softmax, attention and activations round as its compiled code does), so on the machine the
//! reference was made on the logits are expected to be *equal*, not merely close.
//!
//! Checks per prompt (the criteria, unweakened):
//! 1. our token ids equal llama.cpp's;
//! 2. at every prompt position, our top-1 equals llama.cpp's wherever llama.cpp's top-1 leads its
//!    top-2 by more than [`TOP1_MARGIN`];
//! 3. over llama.cpp's top-20 ids at every position, max |our logit − theirs| ≤ [`TOLERANCE`];
//! 4. the greedy 32-token continuation (not stopping at EOS, like the reference) is identical.
//!
//! Then each (backend, budget, threads) run must give the same bytes: a SHA-256 over the
//! logits of every prompt position and of the greedy steps. Last, the synthetic llama and qwen2
//! models of `cargo xtask gen-model` against llama.cpp's outputs for them, by the same criteria.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use strata_engine::{Backend, Budget, CacheConfig, Engine, EngineConfig, LogitsFor};

/// Largest accepted |our logit − llama.cpp's| over llama.cpp's top-20 ids at any position.
///
/// Measured (2026-11-26, all six prompts and every synthetic model): 0 — the logits are
/// bit-identical, because every kernel reproduces llama.cpp's float order. Why a tolerance at
/// all, and why this one: any departure from that order is not a small error on this model.
/// Gemma 3 amplifies a single last-bit difference (through the Q8 rounding of its ~1e5 outlier
/// activations) to 0.1–1.5 in the logits — that was the state before the kernels were made exact
/// (max 1.50), and evaluating a prompt token by token instead of as one batch, a legitimate
/// change of summation order, moves them by up to 1.1. So 0.01 is far below any genuine order
/// difference and far above the print precision of the reference (`%.9g` round-trips f32); it
/// fails unless the forward pass is exact in practice, which is what the top-1 and greedy checks
/// need on near-ties (the reference has leads as small as 0.035).
pub const TOLERANCE: f32 = 0.01;
/// The near-tie margin: top-1 is compared where llama.cpp's lead exceeds this.
const TOP1_MARGIN: f64 = 0.1;
/// Greedy tokens per prompt in the real model's references (the synthetic ones have 16).
const GREEDY_STEPS: usize = 32;
/// Greedy steps included in the rerun fingerprints (decode path coverage at lower cost).
const RERUN_STEPS: usize = 8;

struct Reference {
    name: String,
    prompt: String,
    token_ids: Vec<u32>,
    /// Per position: llama.cpp's top-20 `(id, logit)`.
    top: Vec<Vec<(u32, f64)>>,
    greedy: Vec<u32>,
    /// llama.cpp's top-1 − top-2 logit gap at each greedy step.
    greedy_gaps: Vec<f64>,
    /// llama.cpp's full logit vector at the last prompt position, where kept (real model).
    last_logits: Option<Vec<f32>>,
}

impl Reference {
    /// A reference file's contents (`last_logits` left out: it is a file of its own).
    fn from_json(name: String, j: &serde_json::Value) -> Result<Reference> {
        let greedy_gaps = j["greedy"]["steps"]
            .as_array()
            .context("greedy.steps")?
            .iter()
            .map(|st| {
                let t = &st["top"];
                Ok(t[0][1].as_f64().context("step logit")?
                    - t[1][1].as_f64().context("step logit")?)
            })
            .collect::<Result<Vec<f64>>>()?;
        let r = Reference {
            prompt: j["prompt"].as_str().context("prompt")?.to_string(),
            token_ids: ids(&j["token_ids"])?,
            top: parse_positions(j)?,
            greedy: ids(&j["greedy"]["ids"])?,
            greedy_gaps,
            last_logits: None,
            name,
        };
        if r.top.len() != r.token_ids.len() || r.top.iter().any(|t| t.len() < 2) {
            bail!("{}: positions do not match token_ids", r.name);
        }
        Ok(r)
    }
}

/// Runs `cargo xtask verify`.
pub fn run(args: &[String]) -> Result<()> {
    let mut model: Option<PathBuf> = None;
    let mut quick = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--model" => model = Some(it.next().context("--model needs a path")?.into()),
            "--quick" => quick = true,
            other => bail!(
                "unknown argument `{other}` (usage: cargo xtask verify [--model PATH] [--quick])"
            ),
        }
    }
    let root = workspace_root();
    let model = match model {
        Some(m) => m,
        None => match std::env::var_os("STRATA_MODEL") {
            Some(m) => m.into(),
            None => root.join("models/gemma-3-270m-q4_k_m.gguf"),
        },
    };
    if !model.exists() {
        bail!(
            "model {} not found: run `cargo xtask fetch-model` first",
            model.display()
        );
    }
    let refs = load_references(&root.join("xtask/data/reference/gemma3-270m"))?;
    println!(
        "verify: {} against llama.cpp 0c1e57098 ({} prompts), tolerance {TOLERANCE}",
        model.display(),
        refs.len()
    );

    let t0 = Instant::now();
    let engine = Engine::open(&model, EngineConfig::default()).context("opening the model")?;
    let mut failures = Vec::new();

    println!(
        "{:<11} {:>5} {:>6} {:>11} {:>10} {:>10} {:>9} {:>7}",
        "prompt", "toks", "ids", "top1(>0.1)", "max|Δ|20", "last|Δ|20", "greedy", "result"
    );
    let mut base_prints = Vec::new();
    let mut worst = 0f32;
    for r in &refs {
        let row = check_prompt(&engine, r)?;
        worst = worst.max(row.max_diff);
        let ok = row.problems.is_empty();
        println!(
            "{:<11} {:>5} {:>6} {:>11} {:>10.4} {:>10.4} {:>9} {:>7}",
            r.name,
            r.token_ids.len(),
            if row.ids_equal { "equal" } else { "DIFF" },
            format!(
                "{}/{} ok",
                row.top1_checked - row.top1_bad,
                row.top1_checked
            ),
            row.max_diff,
            row.last_diff.unwrap_or(f32::NAN),
            format!("{}/{}", row.greedy_match, r.greedy.len()),
            if ok { "pass" } else { "FAIL" },
        );
        if !ok {
            failures.push(format!("{}: {}", r.name, row.problems.join("; ")));
        }
        base_prints.push(fingerprint(&engine, r)?);
    }
    println!("max |Δ| over top-20 ids, all prompts and positions: {worst:.4} (tolerance {TOLERANCE}); {:.1} s", t0.elapsed().as_secs_f64());

    if !quick {
        println!(
            "\n{:<8} {:<8} {:>8} {:>10} {:>7}",
            "backend", "budget", "threads", "time", "logits"
        );
        let runs: Vec<(Backend, Budget, Option<usize>)> = vec![
            (Backend::Mmap, Budget::All, Some(1)),
            (Backend::File, Budget::All, None),
            (Backend::Arena, Budget::All, None),
            (Backend::Mmap, Budget::Min, None),
            (Backend::File, Budget::Min, None),
            (Backend::Arena, Budget::Min, None),
        ];
        for (backend, budget, threads) in runs {
            let t = Instant::now();
            let cfg = EngineConfig {
                cache: CacheConfig {
                    backend,
                    budget,
                    ..CacheConfig::default()
                },
                threads,
                ..EngineConfig::default()
            };
            let e = Engine::open(&model, cfg)
                .with_context(|| format!("opening with {backend} / {budget}"))?;
            let mut same = true;
            for (r, base) in refs.iter().zip(&base_prints) {
                if &fingerprint(&e, r)? != base {
                    same = false;
                    failures.push(format!(
                        "{}: logits on {backend}/{budget} differ from mmap/all",
                        r.name
                    ));
                }
            }
            println!(
                "{:<8} {:<8} {:>8} {:>9.1}s {:>7}",
                backend.to_string(),
                budget.to_string(),
                threads.map_or("default".to_string(), |t| t.to_string()),
                t.elapsed().as_secs_f64(),
                if same { "same" } else { "DIFF" }
            );
        }
    }

    failures.extend(check_synthetic(&root)?);

    if failures.is_empty() {
        println!("\nverify: all checks passed");
        Ok(())
    } else {
        for f in &failures {
            eprintln!("FAIL {f}");
        }
        bail!("verify: {} check(s) failed", failures.len())
    }
}

struct Row {
    ids_equal: bool,
    /// Positions where llama.cpp's lead exceeds [`TOP1_MARGIN`], and where our top-1 differs.
    top1_checked: usize,
    top1_bad: usize,
    max_diff: f32,
    /// Over llama.cpp's top-20 ids of its full last-position vector, where the reference has it.
    last_diff: Option<f32>,
    greedy_match: usize,
    problems: Vec<String>,
}

/// Compares our engine with reference `r`: token ids, the logits at every prompt position, and
/// the greedy continuation of `r.greedy.len()` tokens (one token per evaluation, not stopping at
/// EOS, like the reference).
fn check_prompt(engine: &Engine, r: &Reference) -> Result<Row> {
    let mut problems = Vec::new();
    let ids = engine.tokenizer().encode(&r.prompt, true, false)?;
    let ids_equal = ids == r.token_ids;
    if !ids_equal {
        problems.push(format!("token ids {ids:?} != {:?}", r.token_ids));
    }

    // Logits at every prompt position, for llama.cpp's ids (so a tokenizer difference does not
    // hide a forward-pass one).
    let mut s = engine.session()?;
    let (mut top1_checked, mut top1_bad, mut max_diff) = (0usize, 0usize, 0f32);
    let mut last = Vec::new();
    let n = r.token_ids.len();
    s.eval_with(&r.token_ids, LogitsFor::All, &mut |i, logits| {
        let top = &r.top[i];
        let lead = top[0].1 - top[1].1;
        let differs = argmax(logits) != top[0].0;
        if lead > TOP1_MARGIN {
            top1_checked += 1;
            top1_bad += usize::from(differs);
        }
        for &(id, l) in top {
            max_diff = max_diff.max((logits[id as usize] - l as f32).abs());
        }
        if i + 1 == n {
            last = logits.to_vec();
        }
    })?;
    if top1_bad > 0 {
        problems.push(format!(
            "top-1 differs at {top1_bad} of {top1_checked} positions where llama.cpp leads by > {TOP1_MARGIN}"
        ));
    }
    if max_diff > TOLERANCE {
        problems.push(format!("max |Δ| over top-20 = {max_diff:.4} > {TOLERANCE}"));
    }
    // The full last-position vector, over the reference's top-20 there.
    let last_diff = r.last_logits.as_ref().map(|full| {
        r.top[n - 1]
            .iter()
            .map(|&(id, _)| (last[id as usize] - full[id as usize]).abs())
            .fold(0f32, f32::max)
    });

    // Greedy continuation, one token per evaluation, not stopping at EOS.
    let steps = r.greedy.len();
    let mut logits = last;
    let mut greedy = Vec::new();
    for step in 0..steps {
        let id = argmax(&logits);
        greedy.push(id);
        if step + 1 < steps {
            logits = s.eval(&[id])?;
        }
    }
    let greedy_match = greedy
        .iter()
        .zip(&r.greedy)
        .take_while(|(a, b)| a == b)
        .count();
    if greedy_match < steps {
        // How close llama.cpp's own choice was there.
        let gap = r.greedy_gaps.get(greedy_match).copied().unwrap_or(f64::NAN);
        problems.push(format!(
            "greedy differs at step {greedy_match} (llama.cpp's top-1 led its top-2 by {gap:.3} there): \
             ours {:?}, llama.cpp {:?}",
            &greedy[greedy_match..],
            &r.greedy[greedy_match..]
        ));
    }
    Ok(Row {
        ids_equal,
        top1_checked,
        top1_bad,
        max_diff,
        last_diff,
        greedy_match,
        problems,
    })
}

/// SHA-256 of the logits at every prompt position and of [`RERUN_STEPS`] greedy steps.
fn fingerprint(engine: &Engine, r: &Reference) -> Result<[u8; 32]> {
    let mut h = Sha256::new();
    let mut s = engine.session()?;
    let mut last = Vec::new();
    let n = r.token_ids.len();
    s.eval_with(&r.token_ids, LogitsFor::All, &mut |i, logits| {
        for v in logits {
            h.update(v.to_le_bytes());
        }
        if i + 1 == n {
            last = logits.to_vec();
        }
    })?;
    for _ in 0..RERUN_STEPS {
        let id = argmax(&last);
        last = s.eval(&[id])?;
        for v in &last {
            h.update(v.to_le_bytes());
        }
    }
    Ok(h.finalize().into())
}

fn argmax(v: &[f32]) -> u32 {
    strata_engine::sampler::argmax(v)
}

fn load_references(dir: &Path) -> Result<Vec<Reference>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| n.ends_with(".json") && n.starts_with('p'))
        .map(|n| n.trim_end_matches(".json").to_string())
        .collect();
    names.sort();
    let mut refs = Vec::new();
    for name in names {
        let path = dir.join(format!("{name}.json"));
        let j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)
            .with_context(|| format!("parsing {}", path.display()))?;
        let mut r = Reference::from_json(name, &j)?;
        if r.greedy.len() != GREEDY_STEPS {
            bail!(
                "{}: {} greedy ids, expected {GREEDY_STEPS}",
                r.name,
                r.greedy.len()
            );
        }
        let bytes = std::fs::read(dir.join(format!("{}.last_logits.f32", r.name)))?;
        r.last_logits = Some(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        );
        refs.push(r);
    }
    if refs.is_empty() {
        bail!("no reference files in {}", dir.display());
    }
    Ok(refs)
}

/// An array of token ids.
fn ids(v: &serde_json::Value) -> Result<Vec<u32>> {
    v.as_array()
        .context("expected an array of ids")?
        .iter()
        .map(|x| x.as_u64().map(|x| x as u32).context("id is not an integer"))
        .collect()
}

/// A reference file's `positions`: per prompt position, llama.cpp's top `(id, logit)` list.
fn parse_positions(j: &serde_json::Value) -> Result<Vec<Vec<(u32, f64)>>> {
    j["positions"]
        .as_array()
        .context("positions")?
        .iter()
        .map(|p| -> Result<Vec<(u32, f64)>> {
            p["top"]
                .as_array()
                .context("top")?
                .iter()
                .map(|e| {
                    Ok((
                        e[0].as_u64().context("top id")? as u32,
                        e[1].as_f64().context("top logit")?,
                    ))
                })
                .collect()
        })
        .collect()
}

/// The llama and qwen2 forward passes against llama.cpp: the seeded tiny models of
/// `cargo xtask gen-model` (every weight type it writes — every format the quant crate runs in
/// llama.cpp's float order — and the Q4_K/Q6_K mix of llama.cpp's Q4_K_M) are regenerated,
/// their SHA-256 checked against the reference (a changed generator needs new reference files,
/// see the README beside them), and compared by [`check_prompt`], the real model's criteria:
/// token ids equal; max |Δ| over llama.cpp's top-20 ids ≤ [`TOLERANCE`]; top-1 equal wherever
/// llama.cpp leads by more than [`TOP1_MARGIN`]; the greedy continuation (16 tokens in these
/// references) identical. Returns the failures.
fn check_synthetic(root: &Path) -> Result<Vec<String>> {
    use crate::gen_model::{parse_type, write_model, Arch, ModelSpec};

    /// The `--type` values checked, for llama and qwen2 each (all have reference files).
    const TYPES: [&str; 14] = [
        "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "iq4_nl",
        "f16", "bf16", "q4_k_m",
    ];

    let dir = root.join("xtask/data/reference/synthetic");
    let out_dir = root.join("target/verify-synthetic");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let mut failures = Vec::new();
    println!(
        "\n{:<13} {:>5} {:>6} {:>11} {:>10} {:>9} {:>7}",
        "synthetic", "toks", "ids", "top1(>0.1)", "max|Δ|20", "greedy", "result"
    );
    for (arch, arch_name) in [(Arch::Llama, "llama"), (Arch::Qwen2, "qwen2")] {
        for ty_name in TYPES {
            let ty = parse_type(ty_name)?;
            let name = format!("{arch_name}-{ty_name}");
            let ref_path = dir.join(format!("{name}.json"));
            let j: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(&ref_path)
                    .with_context(|| format!("reading {}", ref_path.display()))?,
            )
            .with_context(|| format!("parsing {}", ref_path.display()))?;
            let model = out_dir.join(format!("{name}.gguf"));
            write_model(&ModelSpec::preset("tiny", arch, ty)?, 42, &model)?;
            let sha: [u8; 32] = Sha256::digest(std::fs::read(&model)?).into();
            let sha_hex: String = sha.iter().map(|b| format!("{b:02x}")).collect();
            if j["model_sha256"].as_str() != Some(sha_hex.as_str()) {
                failures.push(format!(
                    "{name}: generated model sha256 {sha_hex} differs from the reference's; \
                     regenerate the reference files (xtask/data/reference/synthetic/README.md)"
                ));
                continue;
            }
            let r = Reference::from_json(name, &j)?;
            let engine = Engine::open(&model, EngineConfig::default())
                .with_context(|| format!("opening {}", model.display()))?;
            let row = check_prompt(&engine, &r)?;
            let ok = row.problems.is_empty();
            println!(
                "{:<13} {:>5} {:>6} {:>11} {:>10.4} {:>9} {:>7}",
                r.name,
                r.token_ids.len(),
                if row.ids_equal { "equal" } else { "DIFF" },
                format!(
                    "{}/{} ok",
                    row.top1_checked - row.top1_bad,
                    row.top1_checked
                ),
                row.max_diff,
                format!("{}/{}", row.greedy_match, r.greedy.len()),
                if ok { "pass" } else { "FAIL" }
            );
            if !ok {
                failures.push(format!("{}: {}", r.name, row.problems.join("; ")));
            }
        }
    }
    Ok(failures)
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace")
        .to_path_buf()
}

//! `cargo xtask verify [--model PATH] [--quick]`: our engine against llama.cpp's reference
//! outputs for the real Gemma 3 270M (`xtask/data/reference/gemma3-270m/`), then the same
//! prompts on every storage backend and at the smallest budget the cache accepts, which must
//! reproduce the first run's logits bit for bit.
//!
//! First, the rounding noise of this model is measured in the same run: every prompt is
//! evaluated twice by our engine, once as one batch and once a token at a time. Both are exact
//! evaluations of the same model that differ only in the order of f32 sums in attention; their
//! largest disagreement over llama.cpp's top-20 ids is the *self-divergence* σ. It must itself
//! be ≤ [`TOLERANCE`], and it sets the near-tie margin `M = max(0.1, 2σ)`: a lead smaller than
//! `M` can flip under a mere reordering of sums, in our engine as in llama.cpp.
//!
//! Checks per prompt:
//! 1. our token ids equal llama.cpp's;
//! 2. at every prompt position, our top-1 equals llama.cpp's wherever llama.cpp's top-1 leads its
//!    top-2 by more than `M` (the count at the fixed 0.1 margin is printed as well);
//! 3. over llama.cpp's top-20 ids at every position, max |our logit − theirs| ≤ [`TOLERANCE`];
//! 4. the greedy 32-token continuation (not stopping at EOS, like the reference) is identical up
//!    to llama.cpp's first near-tie (a step where its top-1 leads by less than `M`); how far the
//!    whole continuation agrees is printed too.
//!
//! Then each (backend, budget, threads) run must give the same bytes: a SHA-256 over the
//! logits of every prompt position and of the greedy steps.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use strata_engine::{Backend, Budget, CacheConfig, Engine, EngineConfig, LogitsFor};

/// Largest accepted |our logit − llama.cpp's| over llama.cpp's top-20 ids at any prompt position.
///
/// Measured (2026-11-26, all six prompts, Q8_0 activations rounded like llama.cpp's x86 code):
/// worst 1.50. Why so large: every product uses the same quantized activations and integer dot
/// products as llama.cpp, but its f32 reductions (tinyBLAS tiles for batches, repacked Q4_K GEMM,
/// AVX-512 horizontal sums) round differently from ours, and each last-bit difference can flip
/// one Q8 activation rounding (1/127 of a block's maximum) in a later layer; Gemma 3 amplifies
/// such flips (its BOS row carries activations near 1e5). The same happens inside our own
/// engine: evaluating a prompt token by token instead of as one batch changes only attention's
/// summation order and moves logits by up to 1.00 (the self-divergence this command measures
/// and prints). 2.0 leaves margin over the measured 1.50 while still failing on gross errors
/// (NeoX vs normal RoPE ordering moved these logits by 3.1).
pub const TOLERANCE: f32 = 2.0;
/// The fixed near-tie margin: top-1 is compared where llama.cpp's lead exceeds this
/// (or the measured margin `2σ`, whichever is larger).
const TOP1_MARGIN: f64 = 0.1;
/// Greedy tokens generated per prompt (the reference has 32).
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
    last_logits: Vec<f32>,
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

    // The model's own rounding noise, measured now: batch vs token-at-a-time evaluation.
    let sequential = Engine::open(
        &model,
        EngineConfig {
            batch_size: 1,
            ..EngineConfig::default()
        },
    )
    .context("opening the model (token-at-a-time)")?;
    let mut sigma = 0f32;
    for r in &refs {
        let s = self_divergence(&engine, &sequential, r)?;
        println!("self-divergence {:<11} {s:.4}", r.name);
        sigma = sigma.max(s);
    }
    let margin = TOP1_MARGIN.max(2.0 * f64::from(sigma));
    println!(
        "self-divergence σ = {sigma:.4} (must be ≤ {TOLERANCE}); near-tie margin M = max(0.1, 2σ) = {margin:.4}\n"
    );
    if sigma > TOLERANCE {
        failures.push(format!(
            "self-divergence {sigma:.4} > {TOLERANCE}: batch and token-at-a-time evaluation disagree"
        ));
    }

    println!(
        "{:<11} {:>5} {:>6} {:>11} {:>11} {:>10} {:>10} {:>9} {:>9} {:>7}",
        "prompt",
        "toks",
        "ids",
        "top1(>M)",
        "top1(>0.1)",
        "max|Δ|20",
        "last|Δ|20",
        "greedy<tie",
        "greedy",
        "result"
    );
    let mut base_prints = Vec::new();
    let mut worst = 0f32;
    for r in &refs {
        let row = check_prompt(&engine, r, margin)?;
        worst = worst.max(row.max_diff);
        let ok = row.ids_equal
            && row.top1_bad == 0
            && row.max_diff <= TOLERANCE
            && row.greedy_match >= row.greedy_decided;
        println!(
            "{:<11} {:>5} {:>6} {:>11} {:>11} {:>10.4} {:>10.4} {:>9} {:>9} {:>7}",
            r.name,
            r.token_ids.len(),
            if row.ids_equal { "equal" } else { "DIFF" },
            format!(
                "{}/{} ok",
                row.top1_checked - row.top1_bad,
                row.top1_checked
            ),
            format!(
                "{}/{}",
                row.strict_checked - row.strict_bad,
                row.strict_checked
            ),
            row.max_diff,
            row.last_diff,
            format!(
                "{}/{}",
                row.greedy_match.min(row.greedy_decided),
                row.greedy_decided
            ),
            format!("{}/{}", row.greedy_match, GREEDY_STEPS),
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
    /// Positions where llama.cpp's lead exceeds the margin M, and our top-1 differs there.
    top1_checked: usize,
    top1_bad: usize,
    /// The same at the fixed 0.1 margin (reported, not enforced).
    strict_checked: usize,
    strict_bad: usize,
    /// Greedy steps before llama.cpp's first near-tie (lead < M).
    greedy_decided: usize,
    max_diff: f32,
    last_diff: f32,
    greedy_match: usize,
    problems: Vec<String>,
}

/// Largest |batch − token-at-a-time| logit over llama.cpp's top-20 ids at any prompt position.
fn self_divergence(batch: &Engine, sequential: &Engine, r: &Reference) -> Result<f32> {
    let all = |engine: &Engine| -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::new();
        engine
            .session()?
            .eval_with(&r.token_ids, LogitsFor::All, &mut |i, logits| {
                out.push(
                    r.top[i]
                        .iter()
                        .map(|&(id, _)| logits[id as usize])
                        .collect(),
                );
            })?;
        Ok(out)
    };
    let (a, b) = (all(batch)?, all(sequential)?);
    Ok(a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max))
}

fn check_prompt(engine: &Engine, r: &Reference, margin: f64) -> Result<Row> {
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
    let (mut strict_checked, mut strict_bad) = (0usize, 0usize);
    let mut last = Vec::new();
    let n = r.token_ids.len();
    s.eval_with(&r.token_ids, LogitsFor::All, &mut |i, logits| {
        let top = &r.top[i];
        let lead = top[0].1 - top[1].1;
        let differs = argmax(logits) != top[0].0;
        if lead > TOP1_MARGIN {
            strict_checked += 1;
            strict_bad += usize::from(differs);
        }
        if lead > margin {
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
            "top-1 differs at {top1_bad} of {top1_checked} positions where llama.cpp leads by > {margin:.3}"
        ));
    }
    if max_diff > TOLERANCE {
        problems.push(format!("max |Δ| over top-20 = {max_diff:.4} > {TOLERANCE}"));
    }
    // The full last-position vector, over the reference's top-20 there.
    let last_diff = r.top[n - 1]
        .iter()
        .map(|&(id, _)| (last[id as usize] - r.last_logits[id as usize]).abs())
        .fold(0f32, f32::max);

    // Greedy continuation, one token per evaluation, not stopping at EOS.
    let mut logits = last;
    let mut greedy = Vec::new();
    for step in 0..GREEDY_STEPS {
        let id = argmax(&logits);
        greedy.push(id);
        if step + 1 < GREEDY_STEPS {
            logits = s.eval(&[id])?;
        }
    }
    let greedy_match = greedy
        .iter()
        .zip(&r.greedy)
        .take_while(|(a, b)| a == b)
        .count();
    let greedy_decided = r
        .greedy_gaps
        .iter()
        .take(GREEDY_STEPS)
        .position(|&gap| gap < margin)
        .unwrap_or(GREEDY_STEPS);
    if greedy_match < greedy_decided {
        // How close llama.cpp's own choice was there (a near-tie flips under rounding).
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
        strict_checked,
        strict_bad,
        greedy_decided,
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
        let top = parse_positions(&j)?;
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
        let bytes = std::fs::read(dir.join(format!("{name}.last_logits.f32")))?;
        let last_logits = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let r = Reference {
            prompt: j["prompt"].as_str().context("prompt")?.to_string(),
            token_ids: ids(&j["token_ids"])?,
            top,
            greedy: ids(&j["greedy"]["ids"])?,
            greedy_gaps,
            last_logits,
            name,
        };
        if r.top.len() != r.token_ids.len() || r.top.iter().any(|t| t.len() < 2) {
            bail!("{}: positions do not match token_ids", r.name);
        }
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

/// Largest accepted |our logit − llama.cpp's| on the synthetic llama/qwen2 models. Measured
/// 2026-11-26: 0.0033/0.0038 (F16), 0.043/0.030 (Q8_0), 0.078/0.049 (Q4_K) for llama/qwen2;
/// these small random models do not amplify rounding the way Gemma 3 does, so the bound is tight.
const SYNTH_TOLERANCE: f32 = 0.2;

/// The llama and qwen2 forward passes against llama.cpp: the seeded tiny models of
/// `cargo xtask gen-model` (every weight type it writes) are regenerated, their SHA-256 checked
/// against the reference (a changed generator needs new reference files, see the README beside
/// them), and evaluated on the reference prompt. Checks: token ids equal; max |Δ| over
/// llama.cpp's top-20 ids ≤ [`SYNTH_TOLERANCE`]; top-1 equal wherever llama.cpp leads by more
/// than twice that. Returns the failures.
fn check_synthetic(root: &Path) -> Result<Vec<String>> {
    use crate::gen_model::{write_model, Arch, ModelSpec};
    use strata_gguf::GgmlType;

    let dir = root.join("xtask/data/reference/synthetic");
    let out_dir = root.join("target/verify-synthetic");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let mut failures = Vec::new();
    println!(
        "\n{:<11} {:>5} {:>6} {:>11} {:>10} {:>7}",
        "synthetic", "toks", "ids", "top1", "max|Δ|20", "result"
    );
    for (arch, arch_name) in [(Arch::Llama, "llama"), (Arch::Qwen2, "qwen2")] {
        for (ty, ty_name) in [
            (GgmlType::Q4_K, "q4_k"),
            (GgmlType::Q8_0, "q8_0"),
            (GgmlType::F16, "f16"),
        ] {
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
            let token_ids = ids(&j["token_ids"])?;
            let top = parse_positions(&j)?;
            let engine = Engine::open(&model, EngineConfig::default())
                .with_context(|| format!("opening {}", model.display()))?;
            let prompt = j["prompt"].as_str().context("prompt")?;
            let ours = engine.tokenizer().encode(prompt, true, false)?;
            let ids_equal = ours == token_ids;
            let (mut checked, mut bad, mut max_diff) = (0usize, 0usize, 0f32);
            engine
                .session()?
                .eval_with(&token_ids, LogitsFor::All, &mut |i, logits| {
                    let t = &top[i];
                    if t[0].1 - t[1].1 > 2.0 * f64::from(SYNTH_TOLERANCE) {
                        checked += 1;
                        bad += usize::from(argmax(logits) != t[0].0);
                    }
                    for &(id, l) in t {
                        max_diff = max_diff.max((logits[id as usize] - l as f32).abs());
                    }
                })?;
            let ok = ids_equal && bad == 0 && max_diff <= SYNTH_TOLERANCE;
            println!(
                "{:<11} {:>5} {:>6} {:>11} {:>10.4} {:>7}",
                name,
                token_ids.len(),
                if ids_equal { "equal" } else { "DIFF" },
                format!("{}/{checked} ok", checked - bad),
                max_diff,
                if ok { "pass" } else { "FAIL" }
            );
            if !ok {
                failures.push(format!(
                    "{name}: ids equal {ids_equal}, top-1 wrong at {bad} of {checked}, max |Δ| {max_diff:.4} (tolerance {SYNTH_TOLERANCE})"
                ));
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

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
//! Checks per prompt — bit for bit, since the logits are expected to be equal:
//! 1. our token ids equal llama.cpp's;
//! 2. at every prompt position, our logits of llama.cpp's top-20 ids have the same bits
//!    (`f32::to_bits`) as llama.cpp's (printed with `%.9g`, which round-trips an f32), and no
//!    logit of ours at that position is NaN;
//! 3. at the last prompt position, the whole vocabulary-sized logit vector has the same bits as
//!    llama.cpp's (`NAME.last_logits.f32`, where the reference has one: the real model);
//! 4. the greedy continuation (32 tokens for the real model, 16 for the synthetic ones; not
//!    stopping at EOS, like the reference) is identical, and at every step the logits of
//!    llama.cpp's top-5 ids have its bits;
//! 5. every position and every step was compared (counted, not assumed), and every reference
//!    prompt and synthetic model was checked (counted against the files present and the
//!    expected totals).
//!
//! The top-1 agreement where llama.cpp leads by more than [`TOP1_MARGIN`] is reported too (it is
//! implied by 2 wherever the top-20 are equal).
//!
//! Then each (backend, budget, threads, prefetch) run must give the same bytes: a SHA-256 over the
//! logits of every prompt position and of the greedy steps. Last, the synthetic models of
//! `cargo xtask gen-model` (llama and qwen2 in every weight type up to IQ4_NL; qwen3, gemma2,
//! phi3, qwen3moe and Mixtral-style llama-moe in two each; llama in the IQ, ternary and MXFP4
//! formats, qwen3moe in the MXFP4_MOE mix) against llama.cpp's outputs for them, by the same
//! criteria.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use strata_engine::{Backend, Budget, CacheConfig, Engine, EngineConfig, ExpertPolicy, LogitsFor};

/// The near-tie margin of the top-1 report: top-1 is counted where llama.cpp's lead exceeds this.
const TOP1_MARGIN: f32 = 0.1;
/// Greedy tokens per prompt in the real model's references (the synthetic ones have 16).
const GREEDY_STEPS: usize = 32;
/// Greedy tokens per synthetic reference.
const SYNTHETIC_GREEDY_STEPS: usize = 16;
/// Reference prompts of the real model (`p1_capital` … `p6_unicode`, and `p7_chat`: a
/// chat-formatted prompt whose special tokens are parsed).
pub(crate) const REAL_PROMPTS: usize = 7;
/// The synthetic models' `--type` values for llama and qwen2, each (all have reference files).
const SYNTHETIC_TYPES: [&str; 14] = [
    "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "iq4_nl",
    "f16", "bf16", "q4_k_m",
];
/// The other synthetic architectures (`gen-model --arch`) and their `--type` values: two or
/// more each, chosen to take different kernel paths (repacked, tiled, `vec_dot`, the Q4_K_M mix);
/// then llama in the IQ, ternary and MXFP4 formats, and a MoE with llama.cpp's MXFP4_MOE mix
/// (MXFP4 experts, Q8_0 elsewhere).
const MORE_SYNTHETIC: [(&str, &[&str]); 7] = [
    ("qwen3", &["q4_k_m", "q8_0"]),
    ("gemma2", &["q4_k", "q5_0"]),
    ("phi3", &["q4_k_m", "q4_0"]),
    ("qwen3moe", &["q4_k", "q6_k"]),
    ("llama-moe", &["q4_k_m", "q5_0"]),
    (
        "llama",
        &[
            "iq4_xs", "iq2_xxs", "iq2_xs", "iq2_s", "iq3_xxs", "iq3_s", "iq1_s", "iq1_m", "tq1_0",
            "tq2_0", "mxfp4",
        ],
    ),
    ("qwen3moe", &["mxfp4_moe"]),
];

/// Every synthetic model verify checks: (`--arch`, `--type`).
pub(crate) fn synthetic_models() -> Vec<(&'static str, &'static str)> {
    let mut v = Vec::new();
    for arch in ["llama", "qwen2"] {
        v.extend(SYNTHETIC_TYPES.iter().map(|&ty| (arch, ty)));
    }
    for (arch, types) in MORE_SYNTHETIC {
        v.extend(types.iter().map(|&ty| (arch, ty)));
    }
    v
}
/// Greedy steps included in the rerun fingerprints (decode path coverage at lower cost).
const RERUN_STEPS: usize = 8;

/// A reference file (`NAME.json`), as written by `refdump` (schema in the README beside it).
#[derive(Deserialize)]
pub(crate) struct RefFile {
    model_sha256: String,
    prompt: String,
    /// Whether special-token texts in the prompt were parsed into their tokens (chat-formatted
    /// prompts; absent in the older files, which did not).
    #[serde(default)]
    parse_special: bool,
    n_vocab: usize,
    pub(crate) token_ids: Vec<u32>,
    positions: Vec<RefPosition>,
    greedy: RefGreedy,
}

/// One prompt position: llama.cpp's argmax and top-20 `(id, logit)`, logits descending.
#[derive(Deserialize)]
struct RefPosition {
    argmax: u32,
    top: Vec<(u32, f32)>,
}

/// The greedy continuation: ids, and the top-5 of the distribution that produced each.
#[derive(Deserialize)]
struct RefGreedy {
    ids: Vec<u32>,
    steps: Vec<RefStep>,
}

/// One greedy step's top-5 `(id, logit)`.
#[derive(Deserialize)]
struct RefStep {
    top: Vec<(u32, f32)>,
}

pub(crate) struct Reference {
    pub(crate) name: String,
    pub(crate) file: RefFile,
    /// llama.cpp's full logit vector at the last prompt position, where kept (real model).
    pub(crate) last_logits: Option<Vec<f32>>,
}

impl Reference {
    /// Parses and checks the shape of a reference file (`last_logits` is a file of its own).
    fn parse(name: String, text: &str, greedy_steps: usize) -> Result<Reference> {
        let file: RefFile =
            serde_json::from_str(text).with_context(|| format!("{name}: parsing the reference"))?;
        let n = file.token_ids.len();
        ensure!(n > 0, "{name}: no prompt tokens");
        ensure!(
            file.positions.len() == n,
            "{name}: {} positions for {n} prompt tokens",
            file.positions.len()
        );
        for (i, p) in file.positions.iter().enumerate() {
            ensure!(
                p.top.len() >= 2 && p.top[0].0 == p.argmax,
                "{name}: position {i}: top list of {} entries, first {:?}, argmax {}",
                p.top.len(),
                p.top.first(),
                p.argmax
            );
        }
        ensure!(
            file.greedy.ids.len() == greedy_steps && file.greedy.steps.len() == greedy_steps,
            "{name}: {} greedy ids and {} steps, expected {greedy_steps}",
            file.greedy.ids.len(),
            file.greedy.steps.len()
        );
        Ok(Reference {
            name,
            file,
            last_logits: None,
        })
    }
}

/// A model that can be run: the native engine ([`Native`]) or the wasm module
/// (`xtask/src/wasm.rs`). The checks below see the model only through this.
pub(crate) trait Evaluator {
    /// The vocabulary size.
    fn n_vocab(&self) -> usize;
    /// Token ids of `text`, BOS added as the model says, special-token texts parsed into their
    /// tokens when `parse_special`.
    fn tokenize(&mut self, text: &str, parse_special: bool) -> Result<Vec<u32>>;
    /// Empties the sequence.
    fn reset(&mut self) -> Result<()>;
    /// Evaluates `ids` after the sequence; hands the logits of every position to `sink`.
    fn eval_all(&mut self, ids: &[u32], sink: &mut (dyn FnMut(usize, &[f32]) + Send))
        -> Result<()>;
    /// Evaluates `ids` after the sequence; the logits of the last position only (the pruned
    /// last layer that generation runs).
    fn eval_last(&mut self, ids: &[u32]) -> Result<Vec<f32>>;
}

/// The native engine, one session at a time.
pub(crate) struct Native<'e> {
    engine: &'e Engine,
    session: strata_engine::Session<'e>,
}

impl<'e> Native<'e> {
    pub(crate) fn new(engine: &'e Engine) -> Result<Native<'e>> {
        Ok(Native {
            engine,
            session: engine.session()?,
        })
    }
}

impl Evaluator for Native<'_> {
    fn n_vocab(&self) -> usize {
        self.engine.config().n_vocab
    }

    fn tokenize(&mut self, text: &str, parse_special: bool) -> Result<Vec<u32>> {
        Ok(self.engine.tokenizer().encode(text, true, parse_special)?)
    }

    fn reset(&mut self) -> Result<()> {
        self.session.reset();
        Ok(())
    }

    fn eval_all(
        &mut self,
        ids: &[u32],
        sink: &mut (dyn FnMut(usize, &[f32]) + Send),
    ) -> Result<()> {
        self.session.eval_with(ids, LogitsFor::All, sink)?;
        Ok(())
    }

    fn eval_last(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        Ok(self.session.eval(ids)?)
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
    ensure!(
        refs.len() == REAL_PROMPTS,
        "found {} reference prompts for the real model, expected {REAL_PROMPTS}",
        refs.len()
    );
    println!(
        "verify: {} against llama.cpp 0c1e57098 ({} prompts), bit for bit",
        model.display(),
        refs.len()
    );

    let t0 = Instant::now();
    let engine = Engine::open(&model, EngineConfig::default()).context("opening the model")?;
    let mut failures = Vec::new();

    print_header("prompt");
    let mut base_prints = Vec::new();
    let mut total = Totals::default();
    let mut native = Native::new(&engine)?;
    for r in &refs {
        let row = check_prompt(&mut native, r)?;
        total.add(&row);
        print_row(&r.name, r.file.token_ids.len(), &row);
        if !row.problems.is_empty() {
            failures.push(format!("{}: {}", r.name, row.problems.join("; ")));
        }
        base_prints.push(fingerprint(&mut native, r)?);
        // Generation asks for the last position's logits only, which prunes the last layer to
        // that row (as llama.cpp does); for these prompts llama.cpp's last-only vector equals
        // its all-positions one (checked with `refdump gen-last`), so it must here too.
        native.reset()?;
        let last_only = native.eval_last(&r.file.token_ids)?;
        let full = r
            .last_logits
            .as_ref()
            .context("real references have last logits")?;
        let bad = count_bit_differences(&last_only, full);
        if bad > 0 {
            failures.push(format!(
                "{}: last-only prefill: {bad} of {} logits differ from llama.cpp's in their bits",
                r.name,
                full.len()
            ));
        }
    }
    total.print(refs.len(), "prompts");
    println!("{:.1} s", t0.elapsed().as_secs_f64());

    if !quick {
        println!(
            "\n{:<8} {:<8} {:>8} {:>8} {:>10} {:>7}",
            "backend", "budget", "threads", "prefetch", "time", "logits"
        );
        // Every backend, budgets all / between / min, prefetch 0 / 1 / 2 (default) / 4, one
        // and two threads. (Half the file is below this model's minimum: its embedding matrix
        // is 70% of it; 85% streams 4 of its 18 layers.)
        let d = CacheConfig::default().prefetch;
        let runs: Vec<(Backend, Budget, Option<usize>, usize)> = vec![
            (Backend::Mmap, Budget::All, Some(1), d),
            (Backend::Mmap, Budget::All, Some(2), 0),
            (Backend::File, Budget::All, None, d),
            (Backend::Arena, Budget::All, None, d),
            (Backend::File, Budget::Percent(85.0), Some(2), 1),
            (Backend::Arena, Budget::Percent(85.0), Some(1), 4),
            (Backend::Mmap, Budget::Min, None, 0),
            (Backend::File, Budget::Min, None, 4),
            (Backend::Arena, Budget::Min, None, 1),
            (Backend::Arena, Budget::Min, Some(1), d),
        ];
        for (backend, budget, threads, prefetch) in runs {
            let t = Instant::now();
            let cfg = EngineConfig {
                cache: CacheConfig {
                    backend,
                    budget,
                    prefetch,
                    ..CacheConfig::default()
                },
                threads,
                ..EngineConfig::default()
            };
            let e = Engine::open(&model, cfg)
                .with_context(|| format!("opening with {backend} / {budget}"))?;
            let mut same = true;
            let mut ev = Native::new(&e)?;
            for (r, base) in refs.iter().zip(&base_prints) {
                if &fingerprint(&mut ev, r)? != base {
                    same = false;
                    failures.push(format!(
                        "{}: logits on {backend}/{budget}/prefetch {prefetch} differ from \
                         mmap/all",
                        r.name
                    ));
                }
            }
            println!(
                "{:<8} {:<8} {:>8} {:>8} {:>9.1}s {:>7}",
                backend.to_string(),
                budget.to_string(),
                threads.map_or("default".to_string(), |t| t.to_string()),
                prefetch,
                t.elapsed().as_secs_f64(),
                if same { "same" } else { "DIFF" }
            );
        }
    }

    failures.extend(check_synthetic(&root, &mut |model, check| {
        let engine = Engine::open(model, EngineConfig::default())
            .with_context(|| format!("opening {}", model.display()))?;
        check(&mut Native::new(&engine)?)
    })?);
    failures.extend(check_expert_streaming(&root)?);
    failures.extend(check_row_globals(&root)?);

    if failures.is_empty() {
        println!("\nverify: all checks passed (bit-identical)");
        Ok(())
    } else {
        for f in &failures {
            eprintln!("FAIL {f}");
        }
        bail!("verify: {} check(s) failed", failures.len())
    }
}

/// What one reference prompt's comparison found.
#[derive(Default)]
pub(crate) struct Row {
    ids_equal: bool,
    /// Prompt positions compared, and those where a top-20 logit's bits differ (or a NaN).
    positions: usize,
    positions_bad: usize,
    /// Positions where llama.cpp's lead exceeds [`TOP1_MARGIN`], and where our top-1 differs.
    top1_checked: usize,
    top1_bad: usize,
    /// Largest |our logit − llama.cpp's| over the compared top-20 logits (NaN counts as ∞).
    max_diff: f32,
    /// Elements of the full last-position vector compared, and how many differ in their bits.
    last_compared: usize,
    last_bad: usize,
    /// Greedy tokens equal (from the start), and steps whose top-5 logits differ in their bits.
    greedy_match: usize,
    greedy_steps: usize,
    steps_bad: usize,
    pub(crate) problems: Vec<String>,
}

/// Sums over prompts or models, for the closing line.
#[derive(Default)]
pub(crate) struct Totals {
    positions: usize,
    positions_bad: usize,
    last_compared: usize,
    last_bad: usize,
    greedy: usize,
    greedy_match: usize,
}

impl Totals {
    pub(crate) fn add(&mut self, row: &Row) {
        self.positions += row.positions;
        self.positions_bad += row.positions_bad;
        self.last_compared += row.last_compared;
        self.last_bad += row.last_bad;
        self.greedy += row.greedy_steps;
        self.greedy_match += row.greedy_match;
    }

    pub(crate) fn print(&self, n: usize, what: &str) {
        println!(
            "{n} {what}: {}/{} positions with bit-identical top-20; {}/{} last-position logits \
             bit-identical; greedy {}/{} tokens",
            self.positions - self.positions_bad,
            self.positions,
            self.last_compared - self.last_bad,
            self.last_compared,
            self.greedy_match,
            self.greedy,
        );
    }
}

pub(crate) fn print_header(first: &str) {
    println!(
        "{first:<13} {:>5} {:>6} {:>13} {:>11} {:>10} {:>15} {:>9} {:>7}",
        "toks", "ids", "top20 bits", "top1(>0.1)", "max|Δ|20", "last vec bits", "greedy", "result"
    );
}

pub(crate) fn print_row(name: &str, toks: usize, row: &Row) {
    println!(
        "{name:<13} {toks:>5} {:>6} {:>13} {:>11} {:>10.3e} {:>15} {:>9} {:>7}",
        if row.ids_equal { "equal" } else { "DIFF" },
        format!("{}/{}", row.positions - row.positions_bad, row.positions),
        format!("{}/{}", row.top1_checked - row.top1_bad, row.top1_checked),
        row.max_diff,
        if row.last_compared == 0 {
            "-".to_string()
        } else {
            format!("{}/{}", row.last_compared - row.last_bad, row.last_compared)
        },
        format!("{}/{}", row.greedy_match, row.greedy_steps),
        if row.problems.is_empty() {
            "pass"
        } else {
            "FAIL"
        },
    );
}

/// Compares `ours` with llama.cpp's `(id, logit)` list bit for bit: the number of entries whose
/// bits differ, and the largest absolute difference (∞ for a NaN of ours).
fn compare_top(ours: &[f32], top: &[(u32, f32)]) -> (usize, f32) {
    let mut bad = 0;
    let mut worst = 0f32;
    for &(id, theirs) in top {
        let v = ours[id as usize];
        if v.to_bits() != theirs.to_bits() {
            bad += 1;
        }
        let d = (v - theirs).abs();
        worst = if d.is_nan() {
            f32::INFINITY
        } else {
            worst.max(d)
        };
    }
    (bad, worst)
}

/// Compares our engine with reference `r`: token ids, the logits at every prompt position, the
/// whole last-position vector, and the greedy continuation of `r.greedy.ids.len()` tokens (one
/// token per evaluation, not stopping at EOS, like the reference) — every logit by its bits.
pub(crate) fn check_prompt(ev: &mut dyn Evaluator, r: &Reference) -> Result<Row> {
    let f = &r.file;
    let mut row = Row::default();
    let n_vocab = ev.n_vocab();
    ensure!(
        n_vocab == f.n_vocab,
        "{}: the model has {n_vocab} tokens, the reference {}",
        r.name,
        f.n_vocab
    );
    let ids = ev.tokenize(&f.prompt, f.parse_special)?;
    row.ids_equal = ids == f.token_ids;
    if !row.ids_equal {
        row.problems
            .push(format!("token ids {ids:?} != {:?}", f.token_ids));
    }

    // Logits at every prompt position, for llama.cpp's ids (so a tokenizer difference does not
    // hide a forward-pass one).
    ev.reset()?;
    let n = f.token_ids.len();
    let mut last = Vec::new();
    let mut nan_positions = 0usize;
    let mut seen = vec![false; n];
    ev.eval_all(&f.token_ids, &mut |i, logits| {
        let p = &f.positions[i];
        seen[i] = true;
        row.positions += 1;
        let (bad, worst) = compare_top(logits, &p.top);
        let has_nan = logits.iter().any(|v| v.is_nan());
        nan_positions += usize::from(has_nan);
        row.positions_bad += usize::from(bad > 0 || has_nan);
        row.max_diff = row.max_diff.max(worst);
        if p.top[0].1 - p.top[1].1 > TOP1_MARGIN {
            row.top1_checked += 1;
            row.top1_bad += usize::from(argmax(logits) != p.argmax);
        }
        if i + 1 == n {
            last = logits.to_vec();
        }
    })?;
    if row.positions != n || seen.iter().any(|s| !s) {
        row.problems.push(format!(
            "logits were reported for {} of {n} prompt positions",
            row.positions
        ));
    }
    if row.positions_bad > 0 {
        row.problems.push(format!(
            "{} of {n} positions differ from llama.cpp in the bits of a top-20 logit (max |Δ| \
             {:.3e}) or hold a NaN ({nan_positions})",
            row.positions_bad, row.max_diff
        ));
    }
    if row.top1_bad > 0 {
        row.problems.push(format!(
            "top-1 differs at {} of {} positions where llama.cpp leads by > {TOP1_MARGIN}",
            row.top1_bad, row.top1_checked
        ));
    }
    // The full last-position vector, element by element.
    if let Some(full) = &r.last_logits {
        ensure!(
            full.len() == n_vocab && last.len() == n_vocab,
            "{}: last-position vectors of {} (reference) and {} (ours) for {n_vocab} tokens",
            r.name,
            full.len(),
            last.len()
        );
        row.last_compared = full.len();
        row.last_bad = last
            .iter()
            .zip(full)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        if row.last_bad > 0 {
            row.problems.push(format!(
                "{} of {} last-position logits differ from llama.cpp's in their bits",
                row.last_bad, row.last_compared
            ));
        }
    }

    // Greedy continuation, one token per evaluation, not stopping at EOS. Step k's logits are
    // the distribution that chose token k (step 0: the last prompt position).
    let steps = f.greedy.ids.len();
    let mut logits = last;
    let mut greedy = Vec::new();
    let mut first_bad_step = None;
    for step in 0..steps {
        let (bad, _) = compare_top(&logits, &f.greedy.steps[step].top);
        if bad > 0 || logits.iter().any(|v| v.is_nan()) {
            row.steps_bad += 1;
            first_bad_step.get_or_insert(step);
        }
        let id = argmax(&logits);
        greedy.push(id);
        row.greedy_steps += 1;
        if step + 1 < steps {
            logits = ev.eval_last(&[id])?;
        }
    }
    row.greedy_match = greedy
        .iter()
        .zip(&f.greedy.ids)
        .take_while(|(a, b)| a == b)
        .count();
    if row.greedy_match < steps {
        // How close llama.cpp's own choice was there.
        let top = &f.greedy.steps[row.greedy_match].top;
        problems_greedy(&mut row, &greedy, &f.greedy.ids, top[0].1 - top[1].1);
    }
    if let Some(k) = first_bad_step {
        row.problems.push(format!(
            "{} of {steps} greedy steps differ from llama.cpp in the bits of a top-5 logit \
             (first: step {k})",
            row.steps_bad
        ));
    }
    Ok(row)
}

fn problems_greedy(row: &mut Row, ours: &[u32], theirs: &[u32], gap: f32) {
    let k = row.greedy_match;
    row.problems.push(format!(
        "greedy differs at step {k} (llama.cpp's top-1 led its top-2 by {gap:.3} there): \
         ours {:?}, llama.cpp {:?}",
        &ours[k..],
        &theirs[k..]
    ));
}

/// SHA-256 of the logits at every prompt position and of [`RERUN_STEPS`] greedy steps.
pub(crate) fn fingerprint(ev: &mut dyn Evaluator, r: &Reference) -> Result<[u8; 32]> {
    let mut h = Sha256::new();
    ev.reset()?;
    let mut last = Vec::new();
    let ids = &r.file.token_ids;
    let n = ids.len();
    let mut reported = 0;
    ev.eval_all(ids, &mut |i, logits| {
        reported += 1;
        for v in logits {
            h.update(v.to_le_bytes());
        }
        if i + 1 == n {
            last = logits.to_vec();
        }
    })?;
    ensure!(
        reported == n,
        "{}: logits for {reported} of {n} positions",
        r.name
    );
    for _ in 0..RERUN_STEPS {
        let id = argmax(&last);
        last = ev.eval_last(&[id])?;
        for v in &last {
            h.update(v.to_le_bytes());
        }
    }
    Ok(h.finalize().into())
}

fn argmax(v: &[f32]) -> u32 {
    strata_engine::sampler::argmax(v)
}

pub(crate) fn load_references(dir: &Path) -> Result<Vec<Reference>> {
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
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let mut r = Reference::parse(name, &text, GREEDY_STEPS)?;
        let last_path = dir.join(format!("{}.last_logits.f32", r.name));
        let bytes = std::fs::read(&last_path)
            .with_context(|| format!("reading {}", last_path.display()))?;
        ensure!(
            bytes.len() == r.file.n_vocab * 4,
            "{}: {} bytes, expected {} (n_vocab f32 values)",
            last_path.display(),
            bytes.len(),
            r.file.n_vocab * 4
        );
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

/// Opens the model at a path and runs the check on it (native: an engine and a session; wasm:
/// the module in its host process).
pub(crate) type WithModel<'a> =
    &'a mut dyn FnMut(&Path, &mut dyn FnMut(&mut dyn Evaluator) -> Result<()>) -> Result<()>;

/// The forward passes of every architecture against llama.cpp: the seeded tiny models of
/// `cargo xtask gen-model` (llama and qwen2 in every weight type it writes — every format the
/// quant crate runs in llama.cpp's float order — and the Q4_K/Q6_K mix of llama.cpp's Q4_K_M;
/// the other architectures in two types each, [`synthetic_models`]) are regenerated,
/// their SHA-256 checked against the reference (a changed generator needs new reference files,
/// see the README beside them), and compared by [`check_prompt`], the real model's criteria
/// (bits of the top-20 at every position, of the top-5 at every one of the 16 greedy steps, and
/// the greedy ids); then each model's last-position-only prefill against
/// [`last_only_reference`], the whole vector bit for bit. Returns the failures; every one of the
/// [`synthetic_models`] must have been compared both ways.
pub(crate) fn check_synthetic(root: &Path, with_model: WithModel<'_>) -> Result<Vec<String>> {
    use crate::gen_model::{parse_type, write_model, Arch, ModelSpec};

    let dir = root.join("xtask/data/reference/synthetic");
    let last_dir = root.join("xtask/data/reference/synthetic-last");
    let out_dir = root.join("target/verify-synthetic");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let mut failures = Vec::new();
    println!();
    print_header("synthetic");
    let mut total = Totals::default();
    let mut compared = 0;
    // The last-position-only prefill (what generation runs) against llama.cpp asked for that
    // position only: llama.cpp then prunes its last layer to one row, which for several weight
    // types changes the last bits from the all-positions run, and so must Strata.
    let (mut last_compared, mut last_elements, mut last_bad) = (0usize, 0usize, 0usize);
    let models = synthetic_models();
    for &(arch_name, ty_name) in &models {
        {
            let arch = Arch::from_cli(arch_name)?;
            let ty = parse_type(ty_name)?;
            let name = format!("{arch_name}-{ty_name}");
            let ref_path = dir.join(format!("{name}.json"));
            let text = std::fs::read_to_string(&ref_path)
                .with_context(|| format!("reading {}", ref_path.display()))?;
            let r = Reference::parse(name.clone(), &text, SYNTHETIC_GREEDY_STEPS)?;
            let model = out_dir.join(format!("{name}.gguf"));
            write_model(&ModelSpec::preset("tiny", arch, ty)?, 42, &model)?;
            let sha: [u8; 32] = Sha256::digest(std::fs::read(&model)?).into();
            let sha_hex: String = sha.iter().map(|b| format!("{b:02x}")).collect();
            if r.file.model_sha256 != sha_hex {
                failures.push(format!(
                    "{name}: generated model sha256 {sha_hex} differs from the reference's; \
                     regenerate the reference files (xtask/data/reference/synthetic/README.md)"
                ));
                continue;
            }
            with_model(&model, &mut |ev| {
                let row = check_prompt(ev, &r)?;
                total.add(&row);
                compared += 1;
                print_row(&r.name, r.file.token_ids.len(), &row);
                if !row.problems.is_empty() {
                    failures.push(format!("{}: {}", r.name, row.problems.join("; ")));
                }

                let (last_file, theirs) = last_only_reference(&last_dir, &name)?;
                if last_file.model_sha256 != sha_hex {
                    failures.push(format!(
                        "{name} (last-only): the reference was made from model sha256 {}, not \
                         {sha_hex}",
                        last_file.model_sha256
                    ));
                    return Ok(());
                }
                ev.reset()?;
                let ours = ev.eval_last(&last_file.token_ids)?;
                let bad = count_bit_differences(&ours, &theirs);
                last_compared += 1;
                last_elements += theirs.len();
                last_bad += bad;
                if bad > 0 {
                    failures.push(format!(
                        "{name}: last-only prefill: {bad} of {} logits differ from llama.cpp's \
                         in their bits",
                        theirs.len()
                    ));
                }
                Ok(())
            })?;
        }
    }
    total.print(compared, "synthetic models");
    println!(
        "last-only prefill, {last_compared} synthetic models: {}/{last_elements} logits \
         bit-identical",
        last_elements - last_bad
    );
    let expected = models.len();
    if compared != expected {
        failures.push(format!(
            "compared {compared} of {expected} synthetic models"
        ));
    }
    if last_compared != expected {
        failures.push(format!(
            "last-only: compared {last_compared} of {expected} synthetic models"
        ));
    }
    Ok(failures)
}

/// The mixture-of-experts synthetic models (written by [`check_synthetic`]) streamed expert by
/// expert: at the smallest budget (K expert slots, dense parts streaming) on the file and arena
/// backends, and with the LRU expert policy, the logits of every position and greedy step
/// must have the bits of the budget-`all` run (which [`check_synthetic`] compared with
/// llama.cpp's).
fn check_expert_streaming(root: &Path) -> Result<Vec<String>> {
    let dir = root.join("xtask/data/reference/synthetic");
    let out_dir = root.join("target/verify-synthetic");
    let mut failures = Vec::new();
    println!();
    let mut n = 0;
    for (arch, ty) in synthetic_models() {
        if !arch.contains("moe") {
            continue;
        }
        let name = format!("{arch}-{ty}");
        let r = Reference::parse(
            name.clone(),
            &std::fs::read_to_string(dir.join(format!("{name}.json")))?,
            SYNTHETIC_GREEDY_STEPS,
        )?;
        let model = out_dir.join(format!("{name}.gguf"));
        let base = fingerprint(
            &mut Native::new(&Engine::open(&model, EngineConfig::default())?)?,
            &r,
        )?;
        for (backend, policy) in [
            (Backend::File, ExpertPolicy::Lfu),
            (Backend::Arena, ExpertPolicy::Lru),
        ] {
            let cfg = EngineConfig {
                cache: CacheConfig {
                    backend,
                    budget: Budget::Min,
                    expert_policy: policy,
                    ..CacheConfig::default()
                },
                ..EngineConfig::default()
            };
            let e = Engine::open(&model, cfg)
                .with_context(|| format!("opening {name} on {backend} at the minimum budget"))?;
            let stats0 = e.cache_stats();
            let same = fingerprint(&mut Native::new(&e)?, &r)? == base;
            let st = e.cache_stats().since(&stats0);
            println!(
                "{name:<18} {backend:<6} min budget, {policy:?}: {} expert reads, {} hits, logits {}",
                st.expert_loads,
                st.expert_hits,
                if same { "same" } else { "DIFF" }
            );
            if !same {
                failures.push(format!(
                    "{name}: logits streamed expert by expert ({backend}, minimum budget, \
                     {policy:?}) differ from budget all"
                ));
            }
            if st.expert_loads == 0 {
                failures.push(format!(
                    "{name}: at the minimum budget no expert was read: the expert cache was not \
                     exercised"
                ));
            }
            n += 1;
        }
    }
    if n == 0 {
        failures.push("no mixture-of-experts model was streamed".into());
    }
    Ok(failures)
}

/// An untied synthetic model streamed at the smallest budget, where its embedding table is a
/// row global left in storage (`CacheConfig::row_globals`): on every backend (the file backend
/// with O_DIRECT, whose small unaligned row reads go through a bounce buffer) the logits of every
/// position and greedy step must have the bits of the budget-`all` run, and the table must
/// really have been left out.
fn check_row_globals(root: &Path) -> Result<Vec<String>> {
    let name = "llama-q4_k";
    let dir = root.join("xtask/data/reference/synthetic");
    let model = root.join(format!("target/verify-synthetic/{name}.gguf"));
    let r = Reference::parse(
        name.to_string(),
        &std::fs::read_to_string(dir.join(format!("{name}.json")))?,
        SYNTHETIC_GREEDY_STEPS,
    )?;
    let all = Engine::open(&model, EngineConfig::default())?;
    let base = fingerprint(&mut Native::new(&all)?, &r)?;
    let slot_bytes = all.model().cache().plan().slot_bytes;
    drop(all);
    let mut failures = Vec::new();
    let mut minimum = 0;
    println!();
    for (backend, direct_io) in [
        (Backend::File, true),
        (Backend::Arena, false),
        (Backend::Mmap, false),
    ] {
        let cfg = EngineConfig {
            cache: CacheConfig {
                backend,
                direct_io,
                budget: Budget::Min,
                ..CacheConfig::default()
            },
            ..EngineConfig::default()
        };
        let e = Engine::open(&model, cfg)
            .with_context(|| format!("opening {name} on {backend} at the minimum budget"))?;
        let left = e.model().cache().plan().row_globals_bytes;
        minimum = e.model().cache().plan().minimum_bytes;
        let stats0 = e.cache_stats();
        let same = fingerprint(&mut Native::new(&e)?, &r)? == base;
        let read = e.cache_stats().since(&stats0).bytes_read;
        println!(
            "{name:<18} {backend:<6} min budget: token_embd left in storage ({left} bytes), \
             {read} bytes read, logits {}",
            if same { "same" } else { "DIFF" }
        );
        if !same {
            failures.push(format!(
                "{name}: logits with the embedding table in storage ({backend}, minimum budget) \
                 differ from budget all"
            ));
        }
        if left == 0 {
            failures.push(format!(
                "{name}: at the minimum budget on {backend} the embedding table was pinned, not \
                 left in storage"
            ));
        }
    }
    // Half a layer above the minimum: the leftover keeps the first tensors of the first
    // streamed layer resident (`CachePlan::head_bytes`), and each token reads only the rest.
    let budget = Budget::Bytes(minimum + slot_bytes / 2);
    for backend in [Backend::File, Backend::Arena] {
        let cfg = EngineConfig {
            cache: CacheConfig {
                backend,
                direct_io: backend == Backend::File,
                budget,
                ..CacheConfig::default()
            },
            ..EngineConfig::default()
        };
        let e = Engine::open(&model, cfg)?;
        let head = e.model().cache().plan().head_bytes;
        let same = fingerprint(&mut Native::new(&e)?, &r)? == base;
        println!(
            "{name:<18} {backend:<6} {budget}: head of the first streamed layer resident \
             ({head} bytes), logits {}",
            if same { "same" } else { "DIFF" }
        );
        if !same {
            failures.push(format!(
                "{name}: logits with a resident head ({backend}, {budget}) differ from budget all"
            ));
        }
        if head == 0 {
            failures.push(format!(
                "{name}: at {budget} on {backend} no head of a streamed layer stayed resident"
            ));
        }
    }
    Ok(failures)
}

/// Elements of `a` and `b` whose bits differ (a length mismatch counts every missing element).
pub(crate) fn count_bit_differences(a: &[f32], b: &[f32]) -> usize {
    a.iter()
        .zip(b)
        .filter(|(x, y)| x.to_bits() != y.to_bits())
        .count()
        + a.len().abs_diff(b.len())
}

/// llama.cpp's last-position-only logits for synthetic model `name`
/// (`xtask/data/reference/synthetic-last/NAME.{json,last_logits.f32}`, made with
/// `xtask/tools/refdump.cpp gen-last`): the prompt ids, the model's SHA-256 and the vector.
fn last_only_reference(dir: &Path, name: &str) -> Result<(RefFile, Vec<f32>)> {
    let json = dir.join(format!("{name}.json"));
    let file: RefFile = serde_json::from_str(
        &std::fs::read_to_string(&json).with_context(|| format!("reading {}", json.display()))?,
    )
    .with_context(|| format!("parsing {}", json.display()))?;
    let f32_path = dir.join(format!("{name}.last_logits.f32"));
    let bytes =
        std::fs::read(&f32_path).with_context(|| format!("reading {}", f32_path.display()))?;
    ensure!(
        bytes.len() == 4 * file.n_vocab,
        "{}: {} bytes for {} tokens",
        f32_path.display(),
        bytes.len(),
        file.n_vocab
    );
    let logits = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok((file, logits))
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace")
        .to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(extra_top: &str) -> String {
        format!(
            r#"{{"model_sha256":"x","llama_cpp_commit":"0c1e57098","prompt":"a","add_bos":true,
            "n_vocab":4,"token_ids":[1,2],
            "positions":[{{"argmax":3,"top":[[3,1.5],[0,0.25]{extra_top}]}},{{"argmax":0,"top":[[0,2],[1,1]]}}],
            "greedy":{{"ids":[0],"pieces":["x"],"pieces_hex":["78"],"text":"x","steps":[{{"top":[[0,2],[1,1]]}}]}}}}"#
        )
    }

    #[test]
    fn parses_and_checks_the_shape() {
        let r = Reference::parse("t".into(), &sample(""), 1).unwrap();
        assert_eq!(r.file.positions[0].top[0], (3, 1.5));
        assert!(Reference::parse("t".into(), &sample(""), 2).is_err());
        // A position whose argmax is not its first top entry is malformed.
        let bad = sample("").replace(r#""argmax":3"#, r#""argmax":1"#);
        assert!(Reference::parse("t".into(), &bad, 1).is_err());
    }

    #[test]
    fn compare_top_counts_last_bit_and_nan() {
        let top = [(0u32, 1.0f32), (1, 2.0)];
        assert_eq!(compare_top(&[1.0, 2.0], &top), (0, 0.0));
        let next = f32::from_bits(2.0f32.to_bits() + 1);
        assert_eq!(compare_top(&[1.0, next], &top).0, 1);
        let (bad, worst) = compare_top(&[f32::NAN, 2.0], &top);
        assert_eq!(bad, 1);
        assert!(worst.is_infinite());
        // -0.0 and 0.0 are equal as floats but not as bits.
        assert_eq!(compare_top(&[-0.0, 2.0], &[(0, 0.0), (1, 2.0)]).0, 1);
    }
}

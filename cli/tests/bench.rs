//! `strata bench` on the real model, tiny sizes: every output format parses and carries
//! llama-bench's fields plus Strata's, in llama-bench's test order. No speed is checked (the
//! numbers are whatever the machine gives); only shapes and the relations between fields.
//! Needs the real model: `cargo xtask fetch-model`.

mod common;

use std::process::{Command, Output};

use serde_json::Value;

fn bench(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("bench")
        .arg(common::model_path())
        .args(args)
        .output()
        .expect("running strata bench");
    assert!(
        out.status.success(),
        "strata bench {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json_records(args: &[&str]) -> Vec<Value> {
    let out = bench(args);
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    v.as_array().expect("a JSON array").clone()
}

/// The relations every record must satisfy.
fn check_record(r: &Value, reps: usize) {
    let n = |k: &str| {
        r[k].as_f64()
            .unwrap_or_else(|| panic!("{k} is not a number in {r}"))
    };
    let n_tokens = n("n_prompt") + n("n_gen");
    assert!(n_tokens > 0.0);
    let ns = r["samples_ns"].as_array().expect("samples_ns");
    let ts = r["samples_ts"].as_array().expect("samples_ts");
    assert_eq!(ns.len(), reps);
    assert_eq!(ts.len(), reps);
    for (t_ns, t_s) in ns.iter().zip(ts) {
        let expected = n_tokens * 1e9 / t_ns.as_f64().unwrap();
        let got = t_s.as_f64().unwrap();
        assert!(
            (got - expected).abs() <= 1e-6 * expected,
            "{got} vs {expected}"
        );
    }
    let mean = ts.iter().map(|t| t.as_f64().unwrap()).sum::<f64>() / reps as f64;
    assert!((n("avg_ts") - mean).abs() <= 1e-9 * mean);
    assert!(n("avg_ts") > 0.0 && n("stddev_ts") >= 0.0);
    assert!(n("model_size") > 200.0 * 1024.0 * 1024.0, "{r}");
    assert!(n("model_n_params") > 1e8, "{r}");
    assert!(
        r["model_type"].as_str().unwrap().starts_with("gemma3"),
        "{r}"
    );
    assert_eq!(r["backends"], "CPU");
    assert_eq!(r["type_k"], "f16");
    assert_eq!(n("n_depth"), 0.0);
    assert!(["scalar", "neon", "avx2", "avx512"].contains(&r["simd_level"].as_str().unwrap()));
    // Gemma's output head (262144 x 640 Q8_0) has been through a one-token product once a
    // generation test ran, so its kernel level was calibrated where there is AVX-512.
    let kernels = r["one_token_kernels"].as_str().expect("one_token_kernels");
    let calibrating = std::env::var("STRATA_CALIBRATE").map_or(true, |v| v.trim() != "0");
    if n("n_gen") > 0.0 && r["simd_level"] == "avx512" && calibrating {
        assert!(kernels.contains("Q8_0/640 avx"), "{r}");
    }
    let stall = n("stall_share");
    assert!((0.0..=1.0).contains(&stall), "{r}");
    // Gemma has 18 layers and ties its output head to the embedding table (no row globals).
    assert!((0.0..=18.0).contains(&n("resident_layers")), "{r}");
    assert!(n("resident_head_bytes") < n("budget_bytes"), "{r}");
    assert_eq!(n("row_globals_in_storage_bytes"), 0.0, "{r}");
    assert!(n("bytes_read_per_token") >= 0.0);
    #[cfg(target_os = "linux")]
    {
        assert!(n("peak_rss_bytes") > 1e6, "{r}");
        assert!(!r["cpu_info"].as_str().unwrap().is_empty());
    }
    let time = r["test_time"].as_str().unwrap();
    assert_eq!(time.len(), 20, "{time}");
    assert!(time.ends_with('Z') && time.as_bytes()[10] == b'T', "{time}");
}

#[test]
fn json_is_the_cross_product_in_llama_bench_order() {
    let recs = json_records(&["-p", "8", "-n", "4", "-t", "1,2", "-r", "2", "-o", "json"]);
    let keys: Vec<(u64, u64, u64)> = recs
        .iter()
        .map(|r| {
            (
                r["n_prompt"].as_u64().unwrap(),
                r["n_gen"].as_u64().unwrap(),
                r["n_threads"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(keys, vec![(8, 0, 1), (0, 4, 1), (8, 0, 2), (0, 4, 2)]);
    for r in &recs {
        check_record(r, 2);
        assert_eq!(r["storage_backend"], "mmap");
        // Budget "all": after the warmup everything stays resident.
        assert_eq!(r["bytes_read_per_token"], 0.0, "{r}");
    }
}

#[test]
fn streaming_from_the_minimum_budget_reads_bytes_every_token() {
    let recs = json_records(&[
        "-p",
        "0",
        "-n",
        "2",
        "-t",
        "1",
        "-r",
        "1",
        "-o",
        "json",
        "--backend",
        "file",
        "--budget",
        "min",
    ]);
    assert_eq!(recs.len(), 1);
    let r = &recs[0];
    check_record(r, 1);
    assert_eq!(r["storage_backend"], "file");
    // Only part of the layers fits: every token streams the rest again.
    assert!(r["bytes_read_per_token"].as_f64().unwrap() > 1e6, "{r}");
    assert!(r["budget_bytes"].as_u64().unwrap() < r["model_size"].as_u64().unwrap());
}

#[test]
fn csv_has_the_json_fields_and_jsonl_one_object_per_line() {
    let json = json_records(&["-p", "8", "-n", "0", "-t", "1", "-r", "1", "-o", "json"]);
    let json_keys: Vec<String> = json[0]
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| !k.starts_with("samples_"))
        .cloned()
        .collect();

    let out = bench(&["-p", "8", "-n", "4", "-t", "1", "-r", "1", "-o", "csv"]);
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    let mut header: Vec<String> = lines[0].split(',').map(String::from).collect();
    for f in [
        "n_prompt",
        "n_gen",
        "n_threads",
        "avg_ts",
        "stddev_ts",
        "model_size",
    ] {
        assert!(header.iter().any(|h| h == f), "{f} missing from {header:?}");
    }
    header.sort();
    let mut sorted_keys = json_keys.clone();
    sorted_keys.sort();
    assert_eq!(header, sorted_keys);
    for row in &lines[1..] {
        // Every cell quoted (no cell here holds a comma or a quote of its own).
        let cells: Vec<&str> = row.split("\",\"").collect();
        assert_eq!(cells.len(), json_keys.len(), "{row}");
        assert!(row.starts_with('"') && row.ends_with('"'));
    }

    let out = bench(&["-p", "8", "-n", "4", "-t", "1", "-r", "1", "-o", "jsonl"]);
    let text = String::from_utf8(out.stdout).unwrap();
    let recs: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(recs.len(), 2);
    for r in &recs {
        check_record(r, 1);
    }
}

#[test]
fn markdown_has_llama_bench_columns_and_progress_goes_to_stderr() {
    let out = bench(&["-p", "8", "-n", "4", "--pg", "4,2", "-t", "1", "-r", "1"]);
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let header: Vec<&str> = lines[0]
        .split('|')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        &header[..7],
        ["model", "size", "params", "backend", "threads", "test", "t/s"]
    );
    assert!(lines[1].starts_with("| ---"), "{text}");
    assert!(
        lines[2].contains(" pp8 |") && lines[2].contains(" ± "),
        "{text}"
    );
    assert!(
        lines[3].contains(" tg4 |") && lines[3].contains(" MiB |"),
        "{text}"
    );
    assert!(lines[4].contains(" pp4+tg2 |"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("strata ") && l.contains("peak RSS")),
        "{text}"
    );
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("test 1/3: pp8"), "{err}");
    assert!(err.contains("test 2/3: tg4"), "{err}");
    assert!(err.contains("test 3/3: pp4+tg2"), "{err}");
}

#[test]
fn no_tests_is_an_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("bench")
        .arg(common::model_path())
        .args(["-p", "0", "-n", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("no tests"), "{err}");
}

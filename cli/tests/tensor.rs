//! `strata tensor` end to end: every format strata-quant computes, in a GGUF of our own built
//! from the golden vectors (whose expected values are gguf-py's dequantization), and tensors of
//! the real model against gguf-py's dequantization recorded in `tests/data/tensor_golden.txt`
//! (`cargo xtask golden` regenerates both; no Python is needed here).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};
use strata_gguf::{GgmlType, GgufWriter};

/// Runs `strata tensor MODEL NAME --out OUT`; returns (shape, values) from the `.npy`.
fn tensor(model: &Path, name: &str, out: &Path) -> (Vec<u64>, Vec<f32>) {
    let o = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args([
            "tensor".as_ref(),
            model.as_os_str(),
            name.as_ref(),
            "--out".as_ref(),
            out.as_os_str(),
        ])
        .output()
        .expect("running strata");
    assert!(
        o.status.success(),
        "strata tensor {name}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    read_npy(&std::fs::read(out).unwrap())
}

/// Parses a v1.0 float32 C-order `.npy` (the subset `strata tensor` writes).
fn read_npy(b: &[u8]) -> (Vec<u64>, Vec<f32>) {
    assert_eq!(&b[..8], b"\x93NUMPY\x01\x00");
    let hlen = u16::from_le_bytes([b[8], b[9]]) as usize;
    assert_eq!((10 + hlen) % 64, 0, "header padded to 64 bytes");
    let header = std::str::from_utf8(&b[10..10 + hlen]).unwrap();
    assert!(
        header.contains("'descr': '<f4'") && header.contains("'fortran_order': False"),
        "{header}"
    );
    let shape_s = header
        .split("'shape': (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    let shape: Vec<u64> = shape_s
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    let data: Vec<f32> = b[10 + hlen..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(data.len() as u64, shape.iter().product::<u64>());
    (shape, data)
}

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("strata-tensor-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// (type, blocks, gguf-py's dequantization) from strata-quant's golden file for `name`.
fn golden(name: &str) -> (GgmlType, Vec<u8>, Vec<f32>) {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../quant/tests/data/{name}.bin"));
    let b = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    assert_eq!(&b[..4], b"SQGV");
    let ty = GgmlType::from_id(u32_at(8)).unwrap();
    let n = u32_at(12) as usize;
    let nb = ty.row_size(n as u64).unwrap() as usize;
    let blocks = b[16..16 + nb].to_vec();
    let deq = b[16 + nb..16 + nb + 4 * n]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (ty, blocks, deq)
}

#[test]
fn every_format_in_a_model_of_our_own_matches_gguf_py() {
    let names = [
        "f32", "f16", "bf16", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q8_1", "q2_k", "q3_k",
        "q4_k", "q5_k", "q6_k", "q8_k",
    ];
    let cases: Vec<_> = names.iter().map(|n| golden(n)).collect();
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", "llama").unwrap();
    for (name, (ty, blocks, deq)) in names.iter().zip(&cases) {
        // Two rows: dims [n/2, 2] (ne0 = row length), numpy shape (2, n/2).
        let dims = [deq.len() as u64 / 2, 2];
        assert_eq!(dims[0] % ty.block_size() as u64, 0);
        w.add_tensor(format!("t.{name}"), *ty, &dims, blocks.clone())
            .unwrap();
    }
    let dir = scratch();
    let model = dir.join("formats.gguf");
    w.write_file(&model).unwrap();
    for (name, (ty, _, deq)) in names.iter().zip(&cases) {
        let (shape, got) = tensor(
            &model,
            &format!("t.{name}"),
            &dir.join(format!("{name}.npy")),
        );
        assert_eq!(shape, vec![2, deq.len() as u64 / 2], "{ty}");
        for (i, (a, b)) in got.iter().zip(deq).enumerate() {
            assert_eq!(
                a.to_bits(),
                b.to_bits(),
                "{ty} element {i}: {a:e} vs gguf-py {b:e}"
            );
        }
    }
}

#[test]
fn real_model_tensors_match_gguf_py() {
    let model = common::model_path();
    let fixture = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/tensor_golden.txt"),
    )
    .unwrap();
    let dir = scratch();
    let mut n = 0;
    for line in fixture
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (name, ty, shape, digest) = (f[0], f[1], f[2], f[3]);
        let (got_shape, data) = tensor(&model, name, &dir.join(format!("{name}.npy")));
        let want_shape: Vec<u64> = shape.split('x').map(|d| d.parse().unwrap()).collect();
        assert_eq!(got_shape, want_shape, "{name} ({ty})");
        let mut h = Sha256::new();
        for v in &data {
            h.update(v.to_le_bytes());
        }
        let got: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            got, digest,
            "{name} ({ty}): dequantized bytes differ from gguf-py's"
        );
        n += 1;
    }
    assert!(n >= 4, "fixture lists {n} tensors");
}

#[test]
fn unknown_tensor_is_a_one_line_error() {
    let mut w = GgufWriter::new();
    w.add_tensor("a", GgmlType::F32, &[4], vec![0; 16]).unwrap();
    let dir = scratch();
    let model = dir.join("one.gguf");
    w.write_file(&model).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args([
            "tensor".as_ref(),
            model.as_os_str(),
            "b".as_ref(),
            "--out".as_ref(),
            dir.join("b.npy").as_os_str(),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no tensor named \"b\"") && err.lines().count() == 1,
        "{err}"
    );
}

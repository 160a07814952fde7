//! Malformed and hostile files: each must give a typed error, never a panic, and never make
//! the parser allocate according to a count the file cannot back.

use std::io::Cursor;

use strata_gguf::{Error, Gguf, GgufWriter, MAX_ARRAY_DEPTH};

use crate::common::{small_file, Raw};

/// Parses `bytes` through both entry points (slice and `Read + Seek`); they must agree.
fn parse(bytes: &[u8]) -> Result<Gguf, Error> {
    let a = Gguf::from_bytes(bytes);
    let b = Gguf::read(Cursor::new(bytes));
    assert_eq!(a.is_ok(), b.is_ok(), "from_bytes and read disagree");
    if let (Err(a), Err(b)) = (&a, &b) {
        assert_eq!(a.to_string(), b.to_string());
    }
    a
}

fn err(bytes: &[u8]) -> Error {
    match parse(bytes) {
        Ok(_) => panic!("hostile file parsed without error"),
        Err(e) => e,
    }
}

#[test]
fn truncation_at_every_offset_is_an_error() {
    let bytes = small_file();
    let g = parse(&bytes).unwrap();
    assert!(g.data_offset() > 100);
    // Every prefix that cuts the header, the tensor table or a tensor's data (only the
    // padding after the last tensor may go).
    let data_end = g
        .tensors()
        .iter()
        .map(|t| g.tensor_range(t).end)
        .max()
        .unwrap();
    assert!(data_end < bytes.len() as u64);
    assert!(parse(&bytes[..data_end as usize]).is_ok());
    for n in 0..data_end as usize {
        let e = err(&bytes[..n]);
        if (n as u64) < g.header_len() {
            assert!(
                matches!(e, Error::UnexpectedEof { .. } | Error::AbsurdCount { .. }),
                "prefix {n}: {e}"
            );
        } else {
            assert!(
                matches!(e, Error::TensorOutOfBounds { .. }),
                "prefix {n}: {e}"
            );
        }
    }
}

#[test]
fn eof_error_says_what_and_where() {
    let bytes = small_file();
    let g = parse(&bytes).unwrap();
    let e = err(&bytes[..g.header_len() as usize - 3]);
    let msg = e.to_string();
    assert!(matches!(e, Error::UnexpectedEof { needed: 8, .. }), "{msg}");
    assert!(msg.contains("data offset of tensor `c`"), "{msg}");
    // A count that cannot fit names the count and its offset.
    let e = err(&bytes[..40]);
    assert_eq!(
        e.to_string(),
        "tensor count = 3 at byte 8 is impossible: only 24 bytes remain in the file"
    );
}

#[test]
fn bad_magic_and_versions() {
    assert!(matches!(err(b"GGML\x03\0\0\0"), Error::BadMagic { found } if &found == b"GGML"));
    let mut be = Raw::default();
    be.bytes(b"GGUF")
        .bytes(&3u32.to_be_bytes())
        .bytes(&0u64.to_be_bytes())
        .bytes(&[0; 8]);
    assert!(matches!(err(&be.0), Error::BigEndian { version: 3 }));
    for v in [0, 1, 4, 0x0300] {
        let e = err(&Raw::header(v, 0, 0).0);
        assert!(
            matches!(e, Error::UnsupportedVersion { version } if version == v),
            "{e}"
        );
    }
    // Version 2 and 3 both read.
    assert!(parse(&Raw::header(2, 0, 0).0).is_ok());
    assert!(parse(&Raw::header(3, 0, 0).0).is_ok());
}

#[test]
fn absurd_counts() {
    let e = err(&Raw::header(3, 1 << 60, 0).0);
    assert!(
        matches!(e, Error::AbsurdCount { count, .. } if count == 1 << 60),
        "{e}"
    );
    let e = err(&Raw::header(3, 0, u64::MAX).0);
    assert!(matches!(e, Error::AbsurdCount { .. }), "{e}");
    // Each fits alone but not both together.
    let mut r = Raw::header(3, 2, 2);
    r.bytes(&[0; 60]);
    assert!(matches!(err(&r.0), Error::AbsurdCount { .. }));
}

#[test]
fn lengths_past_eof() {
    // Key length far past the end.
    let mut r = Raw::header(3, 0, 1);
    r.u64(u64::MAX).bytes(&[0; 16]);
    assert!(matches!(err(&r.0), Error::AbsurdCount { .. }));
    // String value length past the end.
    let mut r = Raw::header(3, 0, 1);
    r.str("k").u32(8).u64(1 << 40).bytes(b"short");
    let e = err(&r.0);
    assert!(
        matches!(e, Error::AbsurdCount { .. }) && e.to_string().contains("`k`"),
        "{e}"
    );
    // Array of 2^40 u64 in a tiny file: rejected before allocating.
    let mut r = Raw::header(3, 0, 1);
    r.str("arr").u32(9).u32(10).u64(1 << 40).u64(0);
    let e = err(&r.0);
    assert!(
        matches!(e, Error::AbsurdCount { count, .. } if count == 1 << 40),
        "{e}"
    );
    // Array of 2^33 strings (each needs 8 bytes of length).
    let mut r = Raw::header(3, 0, 1);
    r.str("arr").u32(9).u32(8).u64(1 << 33).bytes(&[0; 64]);
    assert!(matches!(err(&r.0), Error::AbsurdCount { .. }));
    // A string element whose length runs past the end.
    let mut r = Raw::header(3, 0, 1);
    r.str("arr")
        .u32(9)
        .u32(8)
        .u64(2)
        .str("ok")
        .u64(1000)
        .bytes(b"xy");
    let e = err(&r.0);
    assert!(e.to_string().contains("string 1 of array `arr`"), "{e}");
    // Tensor name length past the end.
    let mut r = Raw::header(3, 1, 0);
    r.u64(1 << 50).bytes(&[0; 32]);
    assert!(matches!(err(&r.0), Error::AbsurdCount { .. }));
}

#[test]
fn bad_values() {
    let mut r = Raw::header(3, 0, 1);
    r.str("k").u32(13).u32(0);
    assert!(matches!(err(&r.0), Error::UnknownValueType { id: 13, ref key, .. } if key == "k"));
    let mut r = Raw::header(3, 0, 1);
    r.str("flag").u32(7).u8(2);
    assert!(matches!(err(&r.0), Error::InvalidBool { value: 2, .. }));
    let mut r = Raw::header(3, 0, 1);
    r.str("flags").u32(9).u32(7).u64(3).bytes(&[0, 1, 9]);
    assert!(matches!(
        err(&r.0),
        Error::InvalidBool {
            value: 9,
            offset: 55,
            ..
        }
    ));
    let mut r = Raw::header(3, 0, 1);
    r.u64(2).bytes(&[0xff, 0xfe]).u32(4).u32(0);
    assert!(matches!(err(&r.0), Error::InvalidUtf8 { offset: 32, .. }));
    let mut r = Raw::header(3, 0, 1);
    r.str("s").u32(8).u64(1).bytes(&[0x80]);
    assert!(matches!(err(&r.0), Error::InvalidUtf8 { .. }));
}

#[test]
fn nesting_depth_is_bounded() {
    // 100 000 nested array headers: must be a clean error, not a stack overflow.
    let mut r = Raw::header(3, 0, 1);
    r.str("deep").u32(9);
    for _ in 0..100_000 {
        r.u32(9).u64(1);
    }
    r.u32(0).u64(0);
    let e = err(&r.0);
    assert!(
        matches!(
            e,
            Error::NestingTooDeep {
                max: MAX_ARRAY_DEPTH,
                ..
            }
        ),
        "{e}"
    );
    // Exactly at the limit is fine.
    let mut r = Raw::header(3, 0, 1);
    r.str("ok").u32(9);
    for _ in 1..MAX_ARRAY_DEPTH {
        r.u32(9).u64(1);
    }
    r.u32(4).u64(1).u32(5);
    assert!(parse(&r.0).is_ok());
}

#[test]
fn duplicates() {
    let mut r = Raw::header(3, 0, 2);
    r.kv_u32("a", 1).kv_u32("a", 2);
    let e = err(&r.0);
    assert!(
        matches!(e, Error::DuplicateKey { ref key, offset: 41 } if key == "a"),
        "{e}"
    );
    let mut r = Raw::header(3, 2, 0);
    r.tensor("t", &[8], 0, 0)
        .tensor("t", &[8], 0, 32)
        .data(32, 64);
    assert!(matches!(err(&r.0), Error::DuplicateTensor { ref name, .. } if name == "t"));
}

#[test]
fn alignment_key() {
    let bad = |v: Raw| err(&v.0);
    let mut r = Raw::header(3, 0, 1);
    r.kv_u32("general.alignment", 0);
    assert!(matches!(bad(r), Error::BadAlignment { .. }));
    let mut r = Raw::header(3, 0, 1);
    r.kv_u32("general.alignment", 48);
    assert!(matches!(bad(r), Error::BadAlignment { .. }));
    let mut r = Raw::header(3, 0, 1);
    r.str("general.alignment").u32(10).u64(64);
    assert!(matches!(bad(r), Error::BadAlignment { .. }));
    // A valid custom alignment places the data section on it.
    let mut r = Raw::header(3, 1, 1);
    r.kv_u32("general.alignment", 256)
        .tensor("t", &[4], 0, 0)
        .data(256, 16);
    let g = parse(&r.0).unwrap();
    assert_eq!((g.alignment(), g.data_offset()), (256, 256));
}

#[test]
fn bad_dims() {
    let mut r = Raw::header(3, 1, 0);
    r.tensor("big", &[1 << 32, 1 << 32], 0, 0).data(32, 64);
    assert!(matches!(err(&r.0), Error::BadDims { ref name, .. } if name == "big"));
    let mut r = Raw::header(3, 1, 0);
    r.tensor("neg", &[u64::MAX], 0, 0).data(32, 64);
    assert!(matches!(err(&r.0), Error::BadDims { .. }));
    // Element count fits in i64 but the byte size does not fit in u64.
    let mut r = Raw::header(3, 1, 0);
    r.tensor("f64", &[1 << 62], 28, 0).data(32, 64);
    assert!(matches!(err(&r.0), Error::BadDims { .. }));
    let mut r = Raw::header(3, 1, 0);
    r.tensor("five", &[1, 1, 1, 1, 1], 0, 0).data(32, 64);
    assert!(matches!(err(&r.0), Error::TooManyDims { n_dims: 5, .. }));
    let mut r = Raw::header(3, 1, 0);
    r.str("huge_ndims").u32(u32::MAX).bytes(&[0; 64]);
    assert!(matches!(err(&r.0), Error::TooManyDims { .. }));
    let mut r = Raw::header(3, 1, 0);
    r.tensor("partial", &[100], 12, 0).data(32, 144);
    assert!(matches!(
        err(&r.0),
        Error::PartialBlock {
            ne0: 100,
            block_size: 256,
            ..
        }
    ));
}

#[test]
fn unknown_tensor_type_names_id_and_tensor() {
    for id in [4, 31, 1000] {
        let mut r = Raw::header(3, 1, 0);
        r.tensor("w", &[32], id, 0).data(32, 128);
        let e = err(&r.0);
        assert!(
            matches!(e, Error::UnknownGgmlType { id: i, ref name, .. } if i == id && name == "w")
        );
        assert!(e.to_string().contains(&id.to_string()));
    }
}

#[test]
fn tensor_ranges() {
    // Outside the file.
    let mut r = Raw::header(3, 1, 0);
    r.tensor("far", &[8], 0, 1 << 40).data(32, 32);
    assert!(matches!(err(&r.0), Error::TensorOutOfBounds { ref name, .. } if name == "far"));
    // Offset + size overflows u64.
    let mut r = Raw::header(3, 1, 0);
    r.tensor("wrap", &[8], 0, u64::MAX - 31).data(32, 32);
    assert!(matches!(err(&r.0), Error::TensorOutOfBounds { .. }));
    // Last byte just past the end.
    let mut r = Raw::header(3, 1, 0);
    r.tensor("edge", &[8], 0, 0).data(32, 31);
    assert!(matches!(err(&r.0), Error::TensorOutOfBounds { .. }));
    // Misaligned.
    let mut r = Raw::header(3, 1, 0);
    r.tensor("odd", &[4], 0, 16).data(32, 64);
    assert!(matches!(
        err(&r.0),
        Error::MisalignedTensor {
            offset: 16,
            alignment: 32,
            ..
        }
    ));
    // Overlapping.
    let mut r = Raw::header(3, 2, 0);
    r.tensor("a", &[16], 0, 0)
        .tensor("b", &[8], 0, 32)
        .data(32, 96);
    let e = err(&r.0);
    assert!(
        matches!(e, Error::TensorOverlap { ref first, ref second, .. } if first == "a" && second == "b"),
        "{e}"
    );
    // Same ranges in another order are still caught.
    let mut r = Raw::header(3, 2, 0);
    r.tensor("b", &[8], 0, 32)
        .tensor("a", &[16], 0, 0)
        .data(32, 96);
    assert!(matches!(err(&r.0), Error::TensorOverlap { .. }));
    // Adjacent is fine.
    let mut r = Raw::header(3, 2, 0);
    r.tensor("a", &[8], 0, 0)
        .tensor("b", &[8], 0, 32)
        .data(32, 64);
    assert!(parse(&r.0).is_ok());
}

#[test]
fn tensor_data_checks_the_buffer() {
    let bytes = small_file();
    let g = parse(&bytes).unwrap();
    let t = g.tensor("c").unwrap();
    assert_eq!(g.tensor_data(&bytes, t).unwrap(), &[2u8; 144][..]);
    let short = &bytes[..bytes.len() - 200];
    assert!(matches!(
        g.tensor_data(short, t),
        Err(Error::TensorOutOfBounds { .. })
    ));
}

/// Random single-byte and multi-byte corruptions of a valid file never panic.
#[test]
fn random_corruptions_never_panic() {
    let bytes = small_file();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let g = parse(&bytes).unwrap();
    let header = g.header_len() as usize;
    let mut errors = 0;
    for _ in 0..20_000 {
        let mut b = bytes.clone();
        for _ in 0..1 + next() % 4 {
            let at = (next() as usize) % header;
            b[at] = match next() % 4 {
                0 => 0xFF,
                1 => 0,
                2 => b[at] ^ (1 << (next() % 8)),
                _ => next() as u8,
            };
        }
        if let Ok(g) = Gguf::from_bytes(&b) {
            // Whatever parsed must be self-consistent.
            for t in g.tensors() {
                assert_eq!(g.tensor_data(&b, t).unwrap().len() as u64, t.n_bytes);
            }
        } else {
            errors += 1;
        }
    }
    assert!(errors > 10_000, "only {errors} corruptions detected");
}

#[test]
fn writer_rejects_bad_input() {
    let mut w = GgufWriter::new();
    assert!(w
        .add_tensor("x", strata_gguf::GgmlType::F32, &[3], vec![0; 8])
        .is_err());
    assert!(w
        .add_tensor("x", strata_gguf::GgmlType::Q4_0, &[16], vec![0; 9])
        .is_err());
    w.add_tensor("x", strata_gguf::GgmlType::F32, &[2], vec![0; 8])
        .unwrap();
    assert!(matches!(
        w.add_tensor("x", strata_gguf::GgmlType::F32, &[2], vec![0; 8]),
        Err(Error::DuplicateTensor { .. })
    ));
    assert!(w.add_metadata("general.alignment", 24u32).is_err());
    assert!(w.add_metadata("general.alignment", 64u64).is_err());
    w.add_metadata("k", 1u8).unwrap();
    assert!(matches!(
        w.add_metadata("k", 2u8),
        Err(Error::DuplicateKey { .. })
    ));
    assert!(w.set_version(1).is_err());
}

#[test]
fn messages_stay_on_one_line() {
    let key = "evil\nkey\x1b[31m";
    let mut r = Raw::header(3, 0, 2);
    r.kv_u32(key, 1).kv_u32(key, 2);
    let e = err(&r.0);
    assert!(matches!(e, Error::DuplicateKey { key: ref k, .. } if k == key));
    let msg = e.to_string();
    assert!(!msg.contains('\n') && !msg.contains('\x1b'), "{msg:?}");
    assert!(msg.contains("evil\\nkey"), "{msg}");
    // A megabyte-long tensor name is shortened in the message.
    let long = "x".repeat(1 << 20);
    let mut r = Raw::header(3, 1, 0);
    r.tensor(&long, &[8], 77, 0).data(32, 32);
    assert!(err(&r.0).to_string().len() < 400);
}

#[test]
fn memory_limit_bounds_what_a_file_can_make_us_hold() {
    use strata_gguf::ReadOptions;
    // A genuine 3 MB string (the file really holds it) is refused under a 1 MB limit, before
    // anything is allocated for it.
    let mut r = Raw::header(3, 0, 1);
    r.str("big").u32(8).u64(3 << 20).bytes(&vec![b'a'; 3 << 20]);
    let small = ReadOptions::new().max_memory(1 << 20);
    let e = Gguf::from_bytes_with(&r.0, &small).unwrap_err();
    assert!(
        matches!(e, Error::MemoryLimit { limit, .. } if limit == 1 << 20),
        "{e}"
    );
    let e = Gguf::read_with(Cursor::new(&r.0), &small).unwrap_err();
    assert!(matches!(e, Error::MemoryLimit { .. }));
    assert!(Gguf::from_bytes_with(&r.0, &ReadOptions::new().max_memory(8 << 20)).is_ok());
    // Many small metadata pairs are charged for their bookkeeping, not just their bytes.
    let n = 20_000u64;
    let mut r = Raw::header(3, 0, n);
    for i in 0..n {
        r.str(&format!("{i:05}")).u32(0).u8(0);
    }
    assert!(r.0.len() < 400_000);
    let e = Gguf::from_bytes_with(&r.0, &ReadOptions::new().max_memory(1 << 20)).unwrap_err();
    assert!(matches!(e, Error::MemoryLimit { .. }), "{e}");
    assert!(parse(&r.0).is_ok());
}

#[test]
fn tensor_names_are_limited_like_ggml() {
    let ok = "n".repeat(strata_gguf::MAX_TENSOR_NAME);
    let mut r = Raw::header(3, 1, 0);
    r.tensor(&ok, &[8], 0, 0).data(32, 32);
    assert!(parse(&r.0).is_ok());
    let long = "n".repeat(strata_gguf::MAX_TENSOR_NAME + 1);
    let mut r = Raw::header(3, 1, 0);
    r.tensor(&long, &[8], 0, 0).data(32, 32);
    assert!(matches!(
        err(&r.0),
        Error::TensorNameTooLong {
            len: 64,
            offset: 24,
            ..
        }
    ));
    let mut w = GgufWriter::new();
    assert!(w
        .add_tensor(long, strata_gguf::GgmlType::F32, &[1], vec![0; 4])
        .is_err());
}

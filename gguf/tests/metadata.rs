//! Typed metadata access and array conversions.

use strata_gguf::{Array, Element, Error, Gguf, Metadata, Value, ValueType};

use crate::common::small_file;

#[test]
fn every_value_type_reads_back() {
    let bytes = small_file();
    let g = Gguf::from_bytes(&bytes).unwrap();
    let md = g.metadata();
    assert_eq!(md.get("u8"), Some(&Value::U8(7)));
    assert_eq!(md.get("i8"), Some(&Value::I8(-7)));
    assert_eq!(md.get("u16"), Some(&Value::U16(700)));
    assert_eq!(md.get("i16"), Some(&Value::I16(-700)));
    assert_eq!(md.get("u32"), Some(&Value::U32(70_000)));
    assert_eq!(md.get("i32"), Some(&Value::I32(-70_000)));
    assert_eq!(md.get("f32"), Some(&Value::F32(1.5)));
    assert_eq!(md.get("bool"), Some(&Value::Bool(true)));
    assert_eq!(md.get("u64"), Some(&Value::U64(1 << 40)));
    assert_eq!(md.get("i64"), Some(&Value::I64(-(1 << 40))));
    assert_eq!(md.get("f64"), Some(&Value::F64(-2.25)));
    let tokens: Vec<_> = md
        .get_array("tokens")
        .unwrap()
        .iter_str()
        .map(Result::unwrap)
        .collect();
    assert_eq!(tokens, ["a", "bc", "", "déf"]);
    assert_eq!(md.get_f32_array("scores").unwrap(), [0.5, -1.0]);
    let nested = md.get_array("nested").unwrap();
    assert_eq!(nested.elem_type(), ValueType::Array);
    assert_eq!(nested.len(), 2);
    let Some(Element::Array(first)) = nested.get(0) else {
        panic!("not an array")
    };
    assert_eq!(first.to_i32_vec().unwrap(), [1, 2]);
    let Some(Element::Array(second)) = nested.get(1) else {
        panic!("not an array")
    };
    assert_eq!(second.str_at(0).unwrap().unwrap(), "x");
    assert_eq!(nested.get(2), None);
    // File order is kept.
    let keys: Vec<_> = md.keys().take(3).collect();
    assert_eq!(keys, ["general.architecture", "general.alignment", "u8"]);
}

#[test]
fn integer_getters_convert_losslessly() {
    let bytes = small_file();
    let g = Gguf::from_bytes(&bytes).unwrap();
    let md = g.metadata();
    assert_eq!(md.get_u64("u8").unwrap(), 7);
    assert_eq!(md.get_i32("i16").unwrap(), -700);
    assert_eq!(md.get_i64("u64").unwrap(), 1 << 40);
    assert!(matches!(md.get_u32("i8"), Err(Error::OutOfRange { ref key, .. }) if key == "i8"));
    assert!(matches!(md.get_u32("u64"), Err(Error::OutOfRange { .. })));
    assert_eq!(md.get_f32("f64").unwrap(), -2.25);
    assert_eq!(md.get_f64("f32").unwrap(), 1.5);
}

#[test]
fn getter_errors_name_key_and_type() {
    let bytes = small_file();
    let g = Gguf::from_bytes(&bytes).unwrap();
    let md = g.metadata();
    let e = md.get_u32("general.architecture").unwrap_err();
    assert_eq!(
        e.to_string(),
        "metadata key `general.architecture` is string, expected u32"
    );
    let e = md.get_str("tokens").unwrap_err();
    assert_eq!(
        e.to_string(),
        "metadata key `tokens` is array of string, expected string"
    );
    let e = md.get_f32("bool").unwrap_err();
    assert!(matches!(e, Error::TypeMismatch { ref actual, .. } if actual == "bool"));
    let e = md.get_u32("nope").unwrap_err();
    assert!(matches!(e, Error::MissingKey { ref key } if key == "nope"));
    let e = md.get_i32_array("tokens").unwrap_err();
    assert!(
        matches!(e, Error::ArrayElement { ref key, index: 0, .. } if key == "tokens"),
        "{e}"
    );
    assert_eq!(md.optional("nope", Metadata::get_u32).unwrap(), None);
    assert_eq!(md.optional("u32", Metadata::get_u32).unwrap(), Some(70_000));
}

#[test]
fn array_conversions() {
    let a = Array::from_i32(&[-1, 2]);
    assert_eq!(a.to_i32_vec().unwrap(), [-1, 2]);
    assert!(a.to_u32_vec().is_err());
    assert_eq!(Array::from_u64(&[5]).to_u32_vec().unwrap(), [5]);
    assert!(Array::from_u64(&[u64::MAX]).to_i64_vec().is_err());
    assert_eq!(Array::from_f64(&[0.5]).to_f32_vec().unwrap(), [0.5]);
    assert!(Array::from_strings(["x"]).to_f32_vec().is_err());
    assert!(Array::from_le_bytes(ValueType::Bool, vec![2]).is_err());
    assert!(Array::from_le_bytes(ValueType::U32, vec![0; 3]).is_err());
    let b = Array::from_le_bytes(ValueType::U16, vec![1, 0, 2, 0]).unwrap();
    assert_eq!(b.to_u32_vec().unwrap(), [1, 2]);
    assert_eq!(b.as_le_bytes(), Some(&[1u8, 0, 2, 0][..]));
    assert_eq!(
        Array::from_strings(["ab"]).iter_bytes().collect::<Vec<_>>(),
        [b"ab"]
    );
}

#[test]
fn insert_rejects_duplicates() {
    let mut md = Metadata::new();
    md.insert("k", 1u32).unwrap();
    assert!(matches!(
        md.insert("k", 2u32),
        Err(Error::DuplicateKey { .. })
    ));
    assert_eq!(md.len(), 1);
}

#[test]
fn debug_output_of_long_arrays_is_short() {
    let a = Array::from_strings((0..100_000).map(|i| format!("token{i}")));
    let dbg = format!("{a:?}");
    assert!(dbg.len() < 200, "{dbg}");
    assert!(
        dbg.contains("len: 100000") && dbg.contains("\"token0\""),
        "{dbg}"
    );
}

//! `Serialize` (feature `serde`): metadata as a JSON object in file order.

use strata_gguf::Gguf;

use crate::common::small_file;

#[test]
fn metadata_and_tensors_serialize() {
    let bytes = small_file();
    let g = Gguf::from_bytes(&bytes).unwrap();
    let json = serde_json::to_string(g.metadata()).unwrap();
    assert!(
        json.starts_with(r#"{"general.architecture":"llama","general.alignment":32,"u8":7,"#),
        "{json}"
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["tokens"], serde_json::json!(["a", "bc", "", "déf"]));
    assert_eq!(v["nested"], serde_json::json!([[1, 2], ["x"]]));
    assert_eq!(v["bool"], true);
    assert_eq!(v["f64"], -2.25);
    let t = serde_json::to_value(g.tensor("c").unwrap()).unwrap();
    assert_eq!(
        t,
        serde_json::json!({"name": "c", "dims": [256, 1, 1, 1], "ty": "Q4_K", "offset": 96, "n_bytes": 144})
    );
}

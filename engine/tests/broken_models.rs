//! Inconsistent models are refused at open, before any token, with an error naming the
//! problem: each case is the synthetic llama model with one thing broken (a tensor's shape,
//! type or presence, a hyperparameter, a special-token id, the chat template).

use std::path::PathBuf;

use strata_engine::{Engine, EngineConfig};
use strata_gguf::{GgmlType, Value};

mod common;
use common::{variant, with_meta, with_tensor, N_EMBD, N_FF, N_VOCAB};

/// Opening `path` fails, and the message holds every one of `needles`.
fn assert_refused(path: &PathBuf, needles: &[&str]) {
    let err = match Engine::open(path, EngineConfig::default()) {
        Ok(_) => panic!("{} opened", path.display()),
        Err(e) => e,
    };
    // The whole chain, as the CLI prints it.
    let mut msg = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        msg += &format!(": {s}");
        source = s.source();
    }
    for n in needles {
        assert!(msg.contains(n), "{}: {msg:?} lacks {n:?}", path.display());
    }
}

#[test]
fn the_unbroken_variant_opens() {
    // The checks below would pass vacuously if `variant` itself broke the model.
    let path = variant("unbroken", |_, v| Some(v.clone()), &[], Some);
    let engine = Engine::open(&path, EngineConfig::default()).unwrap();
    let mut s = engine.session().unwrap();
    let logits = s.eval(&[1, 5, 9]).unwrap();
    assert_eq!(logits.len(), N_VOCAB);
}

#[test]
fn an_output_head_with_a_row_per_token_too_few_is_refused() {
    let path = with_tensor("output-rows", "output.weight", |(n, ty, _, data)| {
        let row = ty.row_size(N_EMBD as u64).unwrap() as usize;
        let dims = vec![N_EMBD as u64, N_VOCAB as u64 - 1];
        Some((n, ty, dims, data[..data.len() - row].to_vec()))
    });
    assert_refused(&path, &["output.weight", "[256, 63]", "[256, 64]"]);
}

#[test]
fn a_layer_matrix_of_the_wrong_shape_is_refused() {
    let path = with_tensor("ffn-up-shape", "blk.1.ffn_up.weight", |(n, ty, _, data)| {
        let dims = vec![N_EMBD as u64, N_FF as u64 / 2];
        Some((n, ty, dims, data[..data.len() / 2].to_vec()))
    });
    assert_refused(&path, &["blk.1.ffn_up.weight", "[256, 256]", "[256, 512]"]);
}

#[test]
fn a_norm_of_a_type_no_kernel_reads_is_refused() {
    // Same bytes, typed I32 (an integer tensor where f32 weights belong).
    let path = with_tensor(
        "norm-i32",
        "blk.0.attn_norm.weight",
        |(n, _, dims, data)| Some((n, GgmlType::I32, dims, data)),
    );
    assert_refused(&path, &["blk.0.attn_norm.weight", "I32"]);
}

#[test]
fn a_weight_matrix_of_a_type_without_a_dot_product_is_refused() {
    // Q8_K is an activation format: no weight kernel multiplies by it.
    let path = with_tensor(
        "down-q8k",
        "blk.2.ffn_down.weight",
        |(n, ty, dims, data)| {
            let mut v = vec![0f32; N_FF * N_EMBD];
            strata_quant::dequantize(ty, &data, &mut v).unwrap();
            let q = strata_quant::quantize(GgmlType::Q8_K, &v).unwrap();
            Some((n, GgmlType::Q8_K, dims, q))
        },
    );
    assert_refused(&path, &["blk.2.ffn_down.weight", "Q8_K"]);
}

#[test]
fn a_missing_layer_tensor_is_refused() {
    let path = with_tensor("no-attn-k", "blk.1.attn_k.weight", |_| None);
    assert_refused(&path, &["missing", "blk.1.attn_k.weight"]);
}

#[test]
fn a_missing_output_norm_is_refused() {
    let path = with_tensor("no-output-norm", "output_norm.weight", |_| None);
    assert_refused(&path, &["output_norm.weight"]);
}

#[test]
fn heads_that_do_not_divide_the_width_are_refused() {
    let path = variant(
        "heads-3",
        |k, v| match k {
            "llama.attention.head_count" => Some(Value::U32(3)),
            "llama.attention.head_count_kv" => Some(Value::U32(1)),
            _ => Some(v.clone()),
        },
        &[],
        Some,
    );
    assert_refused(&path, &["embedding_length 256", "head_count 3"]);
}

#[test]
fn kv_heads_that_do_not_divide_the_heads_are_refused() {
    let path = with_meta("kv-heads-3", "llama.attention.head_count_kv", Value::U32(3));
    assert_refused(&path, &["head_count 4", "head_count_kv 3"]);
}

#[test]
fn zero_hyperparameters_are_refused() {
    for (key, needle) in [
        ("llama.context_length", "context_length is 0"),
        ("llama.attention.head_count", "n_head=0"),
        ("llama.embedding_length", "n_embd=0"),
        ("llama.feed_forward_length", "n_ff=0"),
        ("llama.block_count", "n_layer=0"),
    ] {
        let path = with_meta(&format!("zero-{key}"), key, Value::U32(0));
        assert_refused(&path, &[needle]);
    }
}

#[test]
fn absurd_hyperparameters_are_refused_without_allocating_for_them() {
    for (key, value, needle) in [
        (
            "llama.embedding_length",
            u32::MAX,
            "embedding_length 4294967295",
        ),
        ("llama.embedding_length", 1 << 30, "token_embd.weight"),
        ("llama.block_count", u32::MAX, "block_count"),
        ("llama.block_count", 4, "block_count = 4"),
        ("llama.feed_forward_length", 1 << 30, "ffn_gate.weight"),
        ("llama.attention.head_count", 1 << 20, "head_count"),
    ] {
        let path = with_meta(&format!("absurd-{key}-{value}"), key, Value::U32(value));
        assert_refused(&path, &[needle]);
    }
    for (key, value, needle) in [
        (
            "llama.attention.layer_norm_rms_epsilon",
            f32::NAN,
            "epsilon",
        ),
        ("llama.attention.layer_norm_rms_epsilon", -1.0, "epsilon"),
        ("llama.rope.freq_base", 0.0, "RoPE base"),
        ("llama.rope.freq_base", f32::INFINITY, "RoPE base"),
    ] {
        let path = with_meta(&format!("absurd-{key}-{value}"), key, Value::F32(value));
        assert_refused(&path, &[needle]);
    }
}

#[test]
fn special_token_ids_outside_the_vocabulary_are_refused() {
    for key in [
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.unknown_token_id",
    ] {
        let path = with_meta(&format!("id-{key}"), key, Value::U32(N_VOCAB as u32));
        assert_refused(&path, &[&format!("{key} = {N_VOCAB}"), "64 tokens"]);
    }
    for key in [
        "tokenizer.ggml.eot_token_id",
        "tokenizer.ggml.padding_token_id",
    ] {
        let path = variant(
            &format!("id-{key}"),
            |_, v| Some(v.clone()),
            &[(key, Value::U32(1_000_000))],
            Some,
        );
        assert_refused(&path, &[&format!("{key} = 1000000")]);
    }
}

#[test]
fn a_chat_template_that_fails_to_render_is_refused() {
    for (name, template, needle) in [
        (
            "raises",
            "{{ raise_exception('this template is broken') }}",
            "this template is broken",
        ),
        (
            "unparsable",
            "{% for m in messages %}{{ m.content }}",
            "parse",
        ),
    ] {
        let path = variant(
            &format!("template-{name}"),
            |_, v| Some(v.clone()),
            &[("tokenizer.chat_template", Value::from(template))],
            Some,
        );
        assert_refused(&path, &["chat template", needle]);
    }
    // A working template opens.
    let path = variant(
        "template-ok",
        |_, v| Some(v.clone()),
        &[(
            "tokenizer.chat_template",
            Value::from("{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"),
        )],
        Some,
    );
    Engine::open(&path, EngineConfig::default()).unwrap();
}

//! Shared by the engine's integration tests: tiny synthetic llama and qwen2 models written with
//! `strata_gguf`'s writer and `strata_quant`'s quantizers.

#![allow(dead_code)]

use std::path::PathBuf;

use strata_gguf::{Array, GgmlType, Gguf, GgufWriter, Value};

// Model dimensions.
pub const N_EMBD: usize = 256;
pub const N_FF: usize = 512;
pub const N_HEAD: usize = 4;
pub const N_HEAD_KV: usize = 2;
pub const N_LAYER: usize = 3;
pub const N_VOCAB: usize = 64;

/// A small LCG: the tests' deterministic random numbers.
pub struct Lcg(pub u64);
impl Lcg {
    pub fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * scale).collect()
    }
}

pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Writes a small model of architecture `arch` ("llama" or "qwen2") and returns its path.
pub fn write_model(arch: &str, seed: u64) -> PathBuf {
    write_model_layers(arch, seed, N_LAYER)
}

/// [`write_model`] with `n_layer` layers (more than the minimum budget's slots make the layers
/// stream).
pub fn write_model_layers(arch: &str, seed: u64, n_layer: usize) -> PathBuf {
    let mut rng = Lcg(seed);
    let mut w = GgufWriter::new();
    let md = |w: &mut GgufWriter<'_>, k: String, v: u32| w.add_metadata(k, v).unwrap();
    w.add_metadata("general.architecture", arch).unwrap();
    md(&mut w, format!("{arch}.context_length"), 256);
    md(&mut w, format!("{arch}.embedding_length"), N_EMBD as u32);
    md(&mut w, format!("{arch}.block_count"), n_layer as u32);
    md(&mut w, format!("{arch}.feed_forward_length"), N_FF as u32);
    md(
        &mut w,
        format!("{arch}.attention.head_count"),
        N_HEAD as u32,
    );
    md(
        &mut w,
        format!("{arch}.attention.head_count_kv"),
        N_HEAD_KV as u32,
    );
    w.add_metadata(format!("{arch}.rope.freq_base"), 10000.0f32)
        .unwrap();
    w.add_metadata(format!("{arch}.attention.layer_norm_rms_epsilon"), 1e-5f32)
        .unwrap();
    // A small SentencePiece vocabulary: unk, bos, eos, then single letters.
    let mut tokens = vec!["<unk>".to_string(), "<s>".to_string(), "</s>".to_string()];
    let mut types = vec![2i32, 3, 3];
    for i in 3..N_VOCAB {
        let c = (b'a' + ((i - 3) % 26) as u8) as char;
        tokens.push(if i - 3 < 26 {
            format!("▁{c}")
        } else {
            format!("{c}{}", i)
        });
        types.push(1);
    }
    let scores: Vec<f32> = (0..N_VOCAB).map(|i| -(i as f32)).collect();
    w.add_metadata("tokenizer.ggml.model", "llama").unwrap();
    w.add_metadata("tokenizer.ggml.tokens", Array::from_strings(&tokens))
        .unwrap();
    w.add_metadata("tokenizer.ggml.scores", Array::from_f32(&scores))
        .unwrap();
    w.add_metadata("tokenizer.ggml.token_type", Array::from_i32(&types))
        .unwrap();
    w.add_metadata("tokenizer.ggml.unknown_token_id", 0u32)
        .unwrap();
    w.add_metadata("tokenizer.ggml.bos_token_id", 1u32).unwrap();
    w.add_metadata("tokenizer.ggml.eos_token_id", 2u32).unwrap();

    let mut tensor = |w: &mut GgufWriter<'_>,
                      name: String,
                      ty: GgmlType,
                      cols: usize,
                      rows: usize,
                      scale: f32| {
        let v = rng.vec(cols * rows, scale);
        let bytes = strata_quant::quantize(ty, &v).unwrap();
        let dims: Vec<u64> = if rows == 1 {
            vec![cols as u64]
        } else {
            vec![cols as u64, rows as u64]
        };
        w.add_tensor(name, ty, &dims, bytes).unwrap();
    };
    let hd = N_EMBD / N_HEAD;
    tensor(
        &mut w,
        "token_embd.weight".into(),
        GgmlType::Q8_0,
        N_EMBD,
        N_VOCAB,
        1.0,
    );
    let norm = |w: &mut GgufWriter<'_>, name: String, n: usize| {
        let v: Vec<f32> = (0..n).map(|i| 1.0 + 0.01 * (i % 7) as f32).collect();
        w.add_tensor(name, GgmlType::F32, &[n as u64], f32_bytes(&v))
            .unwrap();
    };
    norm(&mut w, "output_norm.weight".into(), N_EMBD);
    for il in 0..n_layer {
        let p = format!("blk.{il}.");
        norm(&mut w, format!("{p}attn_norm.weight"), N_EMBD);
        norm(&mut w, format!("{p}ffn_norm.weight"), N_EMBD);
        tensor(
            &mut w,
            format!("{p}attn_q.weight"),
            GgmlType::Q4_K,
            N_EMBD,
            N_HEAD * hd,
            0.1,
        );
        tensor(
            &mut w,
            format!("{p}attn_k.weight"),
            GgmlType::Q8_0,
            N_EMBD,
            N_HEAD_KV * hd,
            0.1,
        );
        tensor(
            &mut w,
            format!("{p}attn_v.weight"),
            GgmlType::Q4_0,
            N_EMBD,
            N_HEAD_KV * hd,
            0.1,
        );
        tensor(
            &mut w,
            format!("{p}attn_output.weight"),
            GgmlType::F16,
            N_HEAD * hd,
            N_EMBD,
            0.1,
        );
        tensor(
            &mut w,
            format!("{p}ffn_gate.weight"),
            GgmlType::Q4_K,
            N_EMBD,
            N_FF,
            0.1,
        );
        tensor(
            &mut w,
            format!("{p}ffn_up.weight"),
            GgmlType::Q5_0,
            N_EMBD,
            N_FF,
            0.1,
        );
        tensor(
            &mut w,
            format!("{p}ffn_down.weight"),
            GgmlType::Q6_K,
            N_FF,
            N_EMBD,
            0.1,
        );
        if arch == "qwen2" {
            for (name, n) in [
                ("attn_q.bias", N_HEAD * hd),
                ("attn_k.bias", N_HEAD_KV * hd),
                ("attn_v.bias", N_HEAD_KV * hd),
            ] {
                tensor(&mut w, format!("{p}{name}"), GgmlType::F32, n, 1, 0.5);
            }
        }
    }
    // Llama gets an untied output head; qwen2 ties it to the embeddings.
    if arch == "llama" {
        tensor(
            &mut w,
            "output.weight".into(),
            GgmlType::Q6_K,
            N_EMBD,
            N_VOCAB,
            0.5,
        );
    }
    let dir = std::env::temp_dir().join(format!("strata-engine-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = match n_layer {
        N_LAYER => dir.join(format!("{arch}-{seed}.gguf")),
        n => dir.join(format!("{arch}-{seed}-{n}-layers.gguf")),
    };
    // Tests running in parallel write the same model: each writes its own file and renames it
    // into place, so that nobody reads a file being written.
    let tmp = path.with_extension(format!("{:?}.tmp", std::thread::current().id()));
    w.write_file(&tmp).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}

/// A tensor to write: name, type, dims, data.
pub type Tensor = (String, GgmlType, Vec<u64>, Vec<u8>);

/// The synthetic llama model (seed 11), written again as `<name>.gguf` with metadata passed through `meta` (`None` drops a key; `extra` is
/// appended) and tensors through `tensor` (`None` drops one).
pub fn variant(
    name: &str,
    meta: impl Fn(&str, &Value) -> Option<Value>,
    extra: &[(&str, Value)],
    tensor: impl Fn(Tensor) -> Option<Tensor>,
) -> PathBuf {
    let path = write_model("llama", 11);
    let bytes = std::fs::read(&path).unwrap();
    let g = Gguf::from_bytes(&bytes).unwrap();
    let mut w = GgufWriter::new();
    for (key, value) in g.metadata().iter() {
        if let Some(v) = meta(key, value) {
            w.add_metadata(key, v).unwrap();
        }
    }
    for (key, value) in extra {
        w.add_metadata(*key, value.clone()).unwrap();
    }
    for t in g.tensors() {
        let data = g.tensor_data(&bytes, t).unwrap().to_vec();
        if let Some((n, ty, dims, data)) = tensor((t.name.clone(), t.ty, t.dims.clone(), data)) {
            w.add_tensor(n, ty, &dims, data).unwrap();
        }
    }
    let out = path.with_extension(format!("{name}.gguf"));
    w.write_file(&out).unwrap();
    out
}

/// A variant with one metadata value replaced.
pub fn with_meta(name: &str, key: &'static str, value: Value) -> PathBuf {
    variant(
        name,
        |k, v| Some(if k == key { value.clone() } else { v.clone() }),
        &[],
        Some,
    )
}

/// A variant with one tensor changed by `f`.
pub fn with_tensor(
    name: &str,
    which: &'static str,
    f: impl Fn(Tensor) -> Option<Tensor>,
) -> PathBuf {
    variant(
        name,
        |_, v| Some(v.clone()),
        &[],
        |t| if t.0 == which { f(t) } else { Some(t) },
    )
}

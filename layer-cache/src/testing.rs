//! Synthetic models for the unit tests (in-memory GGUF files).

use strata_gguf::{GgmlType, GgufWriter, Value};

use crate::storage::{MemStorage, Storage};
use crate::Error;

/// In-memory bytes whose reads fail while `failing` is set.
pub(crate) struct Switched {
    pub(crate) inner: MemStorage,
    pub(crate) failing: std::sync::atomic::AtomicBool,
}

impl Storage for Switched {
    fn len(&self) -> u64 {
        self.inner.len()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Error::Layout(String::from("switched off")));
        }
        self.inner.read_at(offset, buf)
    }
}

/// Deterministic pseudo-random bytes (xorshift), different per `seed`.
pub(crate) fn bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s as u8
        })
        .collect()
}

/// Experts per layer of [`moe_model`].
pub(crate) const N_EXPERT: usize = 8;
/// `qwen3moe.expert_used_count` of [`moe_model`].
pub(crate) const N_USED: usize = 2;
/// Row length of [`moe_model`]'s tensors.
const N_EMBD: u64 = 64;
/// Rows of one expert's gate and up matrices in [`moe_model`].
const N_FF_EXP: u64 = 20;

/// A qwen3moe-shaped model of `n_layers` layers, [`N_EXPERT`] experts each ([`N_USED`] used):
/// per layer, in file order, `attn_norm`, `ffn_gate_exps`, `attn_q`, `ffn_up_exps`,
/// `ffn_gate_inp`, `ffn_down_exps`, `ffn_norm` — the expert tensors interleaved with the dense
/// ones, so the dense part is four runs. One expert's slice of each expert tensor is
/// 64 × 20 × 4 = 5120 bytes, not a multiple of the read alignment.
pub(crate) fn moe_model(n_layers: usize) -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", Value::String("qwen3moe".into()))
        .unwrap();
    w.add_metadata("qwen3moe.expert_count", Value::U32(N_EXPERT as u32))
        .unwrap();
    w.add_metadata("qwen3moe.expert_used_count", Value::U32(N_USED as u32))
        .unwrap();
    let mut seed = 0;
    let mut add = |w: &mut GgufWriter<'_>, name: String, dims: &[u64]| {
        seed += 1;
        let n = dims.iter().product::<u64>() as usize * 4;
        w.add_tensor(name, GgmlType::F32, dims, bytes(seed, n))
            .unwrap();
    };
    let e = N_EXPERT as u64;
    add(&mut w, "token_embd.weight".into(), &[N_EMBD, 40]);
    for i in 0..n_layers {
        add(&mut w, format!("blk.{i}.attn_norm.weight"), &[N_EMBD]);
        add(
            &mut w,
            format!("blk.{i}.ffn_gate_exps.weight"),
            &[N_EMBD, N_FF_EXP, e],
        );
        add(&mut w, format!("blk.{i}.attn_q.weight"), &[N_EMBD, N_EMBD]);
        add(
            &mut w,
            format!("blk.{i}.ffn_up_exps.weight"),
            &[N_EMBD, N_FF_EXP, e],
        );
        add(&mut w, format!("blk.{i}.ffn_gate_inp.weight"), &[N_EMBD, e]);
        add(
            &mut w,
            format!("blk.{i}.ffn_down_exps.weight"),
            &[N_FF_EXP, N_EMBD, e],
        );
        add(&mut w, format!("blk.{i}.ffn_norm.weight"), &[N_EMBD]);
    }
    add(&mut w, "output_norm.weight".into(), &[N_EMBD]);
    w.to_vec().unwrap()
}

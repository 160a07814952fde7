//! Tokenizer throughput: 1 MiB of English prose through SPM (Gemma 3, 262k tokens) and BPE
//! (Qwen 2 pre-tokenizer, DeepSeek-R1-Distill-Qwen vocabulary, 152k tokens), one thread; and
//! vocabulary load time.
//!
//! The prose is generated deterministically: 48 fixed English sentences drawn by a seeded
//! xorshift generator, joined by spaces, with a paragraph break ("\n\n") every 6 sentences,
//! until 1 MiB (1,048,576 bytes) is reached.
//!
//! Both tokenizers cache words (pieces) already seen within one call, which such prose hits
//! often (as real prose does: a few thousand distinct words make up most of any text). The
//! `*_typos` cases bound the cost without that help: every word of the same prose has one
//! letter replaced (deterministically), so almost every word is new to the cache.
//!
//! The Gemma model is found through `STRATA_MODEL` or `<workspace>/models/` (run
//! `cargo xtask fetch-model` first).

#![allow(missing_docs)] // `criterion_group!` generates an undocumented `pub fn`.

use std::hint::black_box;
use std::path::{Path, PathBuf};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use strata_engine::tokenizer::Tokenizer;
use strata_gguf::Gguf;

const SENTENCES: &[&str] = &[
    "The lighthouse stood at the edge of the cliff, its lamp turning slowly through the fog.",
    "Every evening the keeper climbed the narrow stairs and polished the great lens by hand.",
    "Ships passing in the night relied on its beam to find the channel between the rocks.",
    "In the winter of that year, a storm arrived that nobody in the village would forget.",
    "Waves broke over the harbour wall, and the fishing boats strained at their moorings.",
    "She wrote in her journal that the wind sounded like a train that never reached the station.",
    "By morning the roads were flooded, and the bakery opened late for the first time in decades.",
    "Children gathered at the window to watch the gulls struggle against the gusts.",
    "The mayor called a meeting in the town hall to discuss repairs to the old sea wall.",
    "Engineers from the city arrived with maps, measurements, and a great deal of coffee.",
    "They argued about concrete and stone, about cost and about how long the work would take.",
    "Meanwhile, the keeper's daughter taught herself to read the weather from the clouds.",
    "Cirrus meant change was coming; a ring around the moon meant rain within two days.",
    "Her grandfather had kept a notebook of such signs, and she found it in a drawer.",
    "The pages were yellow and the ink had faded, but the handwriting was careful and clear.",
    "He had recorded every storm since 1952, with the wind speed, the tide, and the damage done.",
    "Reading it, she realised that the worst storms always came when the tide was highest.",
    "She brought the notebook to the engineers, who were surprised and a little embarrassed.",
    "Their models had not accounted for the way the bay funnelled water toward the harbour.",
    "Within a week they had changed the plans, raising the wall by almost two metres.",
    "Construction began in spring, when the sea was calm and the days grew longer.",
    "Trucks rumbled through the narrow streets, and the cafés did a brisk trade in sandwiches.",
    "Not everyone was pleased; some residents complained about the noise and the dust.",
    "Others pointed out that without the wall, there might not be a village in ten years.",
    "The debate continued in letters to the local newspaper, some polite and some less so.",
    "In the end, the wall was finished two months ahead of schedule and slightly under budget.",
    "A small ceremony was held, with speeches, a brass band, and a ribbon cut with great scissors.",
    "The keeper's daughter was asked to say a few words, though she disliked public speaking.",
    "She thanked her grandfather, whose notebook had taught them to listen to the sea.",
    "Years later, automatic lamps replaced the keeper, and the lighthouse became a museum.",
    "Visitors climbed the same narrow stairs and looked out at the same restless water.",
    "On the top floor, in a glass case, the old notebook lay open to a page about a storm.",
    "Scientists now use satellites and computers to predict the weather with great precision.",
    "Yet many sailors still glance at the sky before they leave the harbour in the morning.",
    "There is a kind of knowledge that lives in habits, stories, and the memory of places.",
    "It is easy to overlook, because it is rarely written down or measured in numbers.",
    "When it is lost, it can take a long time, and sometimes a disaster, to learn it again.",
    "The village remembers this, and every autumn it holds a festival of lights on the pier.",
    "Lanterns are floated on the water, each one carrying the name of someone who went to sea.",
    "Musicians play old songs, and the children run along the wall their grandparents built.",
    "Some of them will leave for the city, and some of them will stay and mend the nets.",
    "Either way, they will carry the story with them, as stories have always been carried.",
    "What matters, the old keeper used to say, is not the light itself but who keeps it burning.",
    "He said it often enough that it was painted above the door of the museum in blue letters.",
    "Tourists photograph it, and most of them do not know who said it or why.",
    "But the people of the village know, and that, perhaps, is enough for them.",
    "Tomorrow the tide will turn again, the gulls will return, and the lamp will keep turning.",
    "And somewhere out in the dark, a ship will see the light and know where the rocks are.",
];

/// About 1 MiB of prose, the same on every run.
fn prose() -> String {
    const TARGET: usize = 1 << 20;
    let mut s = String::with_capacity(TARGET + 256);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut n = 0;
    while s.len() < TARGET {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let sentence = SENTENCES[(x % SENTENCES.len() as u64) as usize];
        if n > 0 {
            s.push_str(if n % 6 == 0 { "\n\n" } else { " " });
        }
        s.push_str(sentence);
        n += 1;
    }
    s.truncate(s[..TARGET].rfind(' ').unwrap_or(TARGET));
    s
}

/// The same prose with one letter of every word of 4+ letters replaced, so words rarely repeat.
fn prose_with_typos(text: &str) -> String {
    let mut x: u32 = 0x2545_F491;
    let mut out = String::with_capacity(text.len());
    for (i, word) in text.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let letters = word.bytes().filter(u8::is_ascii_lowercase).count();
        if letters < 4 || !word.is_ascii() {
            out.push_str(word);
            continue;
        }
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let target = (x as usize) % letters;
        let mut seen = 0;
        for b in word.bytes() {
            if b.is_ascii_lowercase() {
                if seen == target {
                    out.push(char::from(b'a' + ((x >> 8) % 26) as u8));
                } else {
                    out.push(char::from(b));
                }
                seen += 1;
            } else {
                out.push(char::from(b));
            }
        }
    }
    out
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn gemma_path() -> PathBuf {
    std::env::var_os("STRATA_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("models/gemma-3-270m-q4_k_m.gguf"))
}

fn qwen_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/vocab/ggml-vocab-deepseek-r1-qwen.gguf")
}

fn load(path: &Path) -> (Gguf, Tokenizer) {
    assert!(
        path.exists(),
        "{} is missing (run `cargo xtask fetch-model`)",
        path.display()
    );
    let g = Gguf::open(path).expect("open gguf");
    let t = Tokenizer::from_gguf(&g).expect("tokenizer");
    (g, t)
}

fn bench(c: &mut Criterion) {
    let text = prose();
    let typos = prose_with_typos(&text);
    let mut g = c.benchmark_group("tokenize_1MiB_prose");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(text.len() as u64));
    for (name, path) in [
        ("spm_gemma3_262k", gemma_path()),
        ("bpe_qwen2_152k", qwen_path()),
    ] {
        let (_, tok) = load(&path);
        for (variant, t) in [("", &text), ("_typos", &typos)] {
            let n = tok.encode(t, false, false).unwrap().len();
            eprintln!("{name}{variant}: {} bytes -> {n} tokens", t.len());
            g.bench_function(format!("{name}{variant}"), |b| {
                b.iter(|| tok.encode(black_box(t), false, false).unwrap())
            });
        }
    }
    g.finish();

    let mut g = c.benchmark_group("load_vocab");
    g.sample_size(10);
    for (name, path) in [
        ("spm_gemma3_262k", gemma_path()),
        ("bpe_qwen2_152k", qwen_path()),
    ] {
        let gguf = Gguf::open(&path).expect("open gguf");
        g.bench_function(name, |b| {
            b.iter(|| Tokenizer::from_gguf(black_box(&gguf)).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! `strata inspect`: a summary of a GGUF file, read from its header only.
//!
//! Everything shown comes from the metadata and the tensor table; the tensor data is never
//! read, so this answers in milliseconds on a multi-GB model. A key that is missing or has an
//! unexpected type is shown as unknown rather than failing: a valid file with odd metadata
//! is still worth inspecting. A malformed file is an error naming the file and the problem.

use std::collections::BTreeMap;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use serde::Serialize;
use strata_gguf::{
    file_type_name, Array, Element, Gguf, Metadata, ReadOptions, TensorInfo, Value, ValueType,
};

/// Arrays longer than this are summarized (type, length, first items).
const ARRAY_SHOWN: usize = 8;
/// Strings longer than this many characters are shortened in the metadata listing.
const STRING_SHOWN: usize = 96;

/// Most memory the parsed header may take. Real headers need far less (Gemma 3's 262k-token
/// vocabulary: about 9 MB); a hostile file cannot make `inspect` hold more than this.
const MAX_HEADER_MEMORY: u64 = 48 << 20;

/// Flags of `strata inspect`.
#[derive(clap::Args)]
pub struct Args {
    /// The GGUF model file.
    pub model: PathBuf,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also list every tensor: name, type, dimensions, offset and size.
    #[arg(long)]
    pub tensors: bool,
}

/// Runs `strata inspect`.
pub fn run(args: Args) -> Result<()> {
    let options = ReadOptions::new().max_memory(MAX_HEADER_MEMORY);
    let g = Gguf::open_with(&args.model, &options).map_err(|e| file_error(&args.model, &e))?;
    let summary = Summary::new(&g);
    // Output is streamed: a header with a million tensors never becomes one big string.
    let mut out = BufWriter::new(io::stdout().lock());
    let written = if args.json {
        summary
            .write_json(&mut out, &args.model, &g, args.tensors)
            .map_err(io::Error::from)
    } else {
        summary
            .write_text(&mut out, &args.model, &g)
            .and_then(|()| {
                if args.tensors {
                    write_tensors(&mut out, &g)?;
                }
                Ok(())
            })
    };
    match written.and_then(|()| out.flush()) {
        // `strata inspect model | head` closes the pipe early: not an error.
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(anyhow!("writing to stdout: {e}")),
        _ => Ok(()),
    }
}

/// "path: problem" on one line, whatever the path or the file contains.
fn file_error(path: &Path, e: &strata_gguf::Error) -> anyhow::Error {
    let msg = match e {
        // The path is already in front.
        strata_gguf::Error::Open { source, .. } => {
            format!("{}: cannot open: {source}", path.display())
        }
        e => format!("{}: {e}", path.display()),
    };
    anyhow!("{}", msg.replace('\n', "\\n").replace('\r', "\\r"))
}

/// Tensors of one type: how many and how many bytes.
#[derive(Default, Serialize)]
struct TypeStats {
    tensors: usize,
    elements: u64,
    bytes: u64,
}

/// Tensors of one group: the globals or one `blk.N` layer.
#[derive(Default, Serialize)]
struct GroupStats {
    tensors: usize,
    bytes: u64,
}

/// Everything derived from the header that the text and JSON outputs show.
struct Summary {
    arch: Option<String>,
    name: Option<String>,
    parameters: u64,
    file_type: Option<u32>,
    context_length: Option<u64>,
    block_count: Option<u64>,
    tokenizer_model: Option<String>,
    tokenizer_pre: Option<String>,
    vocab_size: Option<usize>,
    types: BTreeMap<(u32, &'static str), TypeStats>,
    globals: GroupStats,
    layers: BTreeMap<u64, GroupStats>,
    tensor_bytes: u64,
}

/// The tokenizer algorithm named by `tokenizer.ggml.model` (llama.cpp's vocabulary types).
fn tokenizer_kind(model: Option<&str>) -> Option<&'static str> {
    Some(match model? {
        "llama" => "SentencePiece BPE",
        "gpt2" => "byte-level BPE",
        "bert" => "WordPiece",
        "t5" => "Unigram",
        "rwkv" => "RWKV greedy",
        "plamo2" => "PLaMo-2 Aho-Corasick",
        "none" => "no tokenizer",
        _ => return None,
    })
}

/// Splits `blk.N.rest` into `N`.
fn layer_of(name: &str) -> Option<u64> {
    let rest = name.strip_prefix("blk.")?;
    let (n, _) = rest.split_once('.')?;
    n.parse().ok()
}

impl Summary {
    fn new(g: &Gguf) -> Summary {
        let md = g.metadata();
        let arch = md.get_str("general.architecture").ok().map(str::to_owned);
        let arch_key = |suffix: &str| format!("{}.{suffix}", arch.as_deref().unwrap_or("?"));
        let mut s = Summary {
            name: md.get_str("general.name").ok().map(str::to_owned),
            parameters: 0,
            file_type: md.get_u32("general.file_type").ok(),
            context_length: md.get_u64(&arch_key("context_length")).ok(),
            block_count: md.get_u64(&arch_key("block_count")).ok(),
            tokenizer_model: md.get_str("tokenizer.ggml.model").ok().map(str::to_owned),
            tokenizer_pre: md.get_str("tokenizer.ggml.pre").ok().map(str::to_owned),
            vocab_size: md.get_array("tokenizer.ggml.tokens").ok().map(Array::len),
            arch,
            types: BTreeMap::new(),
            globals: GroupStats::default(),
            layers: BTreeMap::new(),
            tensor_bytes: 0,
        };
        // Sums saturate: the parser bounds every tensor, but never trust a sum over a file.
        for t in g.tensors() {
            s.parameters = s.parameters.saturating_add(t.n_elements());
            s.tensor_bytes = s.tensor_bytes.saturating_add(t.n_bytes);
            let ts = s.types.entry((t.ty.id(), t.ty.name())).or_default();
            ts.tensors += 1;
            ts.elements = ts.elements.saturating_add(t.n_elements());
            ts.bytes = ts.bytes.saturating_add(t.n_bytes);
            let group = match layer_of(&t.name) {
                Some(i) => s.layers.entry(i).or_default(),
                None => &mut s.globals,
            };
            group.tensors += 1;
            group.bytes = group.bytes.saturating_add(t.n_bytes);
        }
        s
    }

    /// Hyperparameters: the scalar `<arch>.*` keys, without the architecture prefix.
    fn hyperparameters<'a>(&self, md: &'a Metadata) -> Vec<(&'a str, &'a Value)> {
        let Some(arch) = &self.arch else {
            return Vec::new();
        };
        md.iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(arch.as_str())?.strip_prefix('.')?, v)))
            .collect()
    }

    fn write_text(&self, w: &mut impl Write, path: &Path, g: &Gguf) -> io::Result<()> {
        let md = g.metadata();
        let unknown = || "?".to_owned();
        let text = |s: &Option<String>| s.as_deref().map_or_else(unknown, sanitize);
        writeln!(
            w,
            "file:            {}",
            sanitize(&path.display().to_string())
        )?;
        writeln!(
            w,
            "format:          GGUF v{}, {} metadata pairs, {} tensors, alignment {}, data at byte {}",
            g.version(),
            md.len(),
            g.tensors().len(),
            g.alignment(),
            g.data_offset()
        )?;
        writeln!(w, "architecture:    {}", text(&self.arch))?;
        writeln!(w, "name:            {}", text(&self.name))?;
        writeln!(
            w,
            "parameters:      {} ({})",
            group_digits(self.parameters),
            short_count(self.parameters)
        )?;
        writeln!(w, "file type:       {}", self.file_type_text())?;
        let num = |n: Option<u64>| n.map_or_else(unknown, |n| n.to_string());
        writeln!(w, "context length:  {}", num(self.context_length))?;
        writeln!(w, "layers:          {}", num(self.block_count))?;
        writeln!(
            w,
            "tokenizer:       {}{} (pre: {}), vocabulary {}",
            text(&self.tokenizer_model),
            tokenizer_kind(self.tokenizer_model.as_deref())
                .map_or_else(String::new, |k| format!(" = {k}")),
            text(&self.tokenizer_pre),
            num(self.vocab_size.map(|n| n as u64))
        )?;

        let hp = self.hyperparameters(md);
        if !hp.is_empty() {
            writeln!(w, "\nhyperparameters:")?;
            let width = hp
                .iter()
                .map(|(k, _)| k.chars().count())
                .max()
                .unwrap_or(0)
                .min(48);
            for (k, v) in hp {
                writeln!(w, "  {:<width$}  {}", sanitize(k), value_text(v))?;
            }
        }

        writeln!(w, "\ntensor types:")?;
        writeln!(
            w,
            "  {:<8} {:>7} {:>15} {:>12} {:>6}",
            "type", "tensors", "elements", "bytes", "share"
        )?;
        for ((_, name), ts) in &self.types {
            writeln!(
                w,
                "  {:<8} {:>7} {:>15} {:>12} {:>5.1}%",
                name,
                ts.tensors,
                group_digits(ts.elements),
                human_bytes(ts.bytes),
                percent(ts.bytes, self.tensor_bytes)
            )?;
        }
        writeln!(
            w,
            "  {:<8} {:>7} {:>15} {:>12}",
            "total",
            g.tensors().len(),
            group_digits(self.parameters),
            human_bytes(self.tensor_bytes)
        )?;

        writeln!(w, "\nbytes by layer:")?;
        writeln!(
            w,
            "  globals   {:>3} tensors {:>12}",
            self.globals.tensors,
            human_bytes(self.globals.bytes)
        )?;
        for (i, l) in &self.layers {
            writeln!(
                w,
                "  blk.{:<4} {:>3} tensors {:>12}",
                i,
                l.tensors,
                human_bytes(l.bytes)
            )?;
        }
        if let Some(max) = self.layers.values().map(|l| l.bytes).max() {
            writeln!(w, "  largest layer {}", human_bytes(max))?;
        }

        writeln!(w, "\nmetadata:")?;
        let width = md
            .keys()
            .map(|k| k.chars().count())
            .max()
            .unwrap_or(0)
            .min(48);
        for (k, v) in md.iter() {
            writeln!(
                w,
                "  {:<width$}  {:<10} {}",
                sanitize(k),
                short_type(v),
                value_text(v)
            )?;
        }
        Ok(())
    }

    fn file_type_text(&self) -> String {
        match self.file_type {
            Some(id) => match file_type_name(id) {
                Some(name) => format!("{name} ({id})"),
                None => format!("unknown ({id})"),
            },
            None => "?".to_owned(),
        }
    }

    fn write_json(
        &self,
        w: &mut impl Write,
        path: &Path,
        g: &Gguf,
        with_tensors: bool,
    ) -> serde_json::Result<()> {
        let md = g.metadata();
        let doc = JsonDoc {
            file: path.display().to_string(),
            file_size: g.file_len(),
            version: g.version(),
            alignment: g.alignment(),
            data_offset: g.data_offset(),
            metadata_count: md.len(),
            tensor_count: g.tensors().len(),
            architecture: self.arch.as_deref(),
            name: self.name.as_deref(),
            parameters: self.parameters,
            file_type: self.file_type.map(|id| FileType {
                id,
                name: file_type_name(id),
            }),
            context_length: self.context_length,
            block_count: self.block_count,
            hyperparameters: Pairs(self.hyperparameters(md)),
            tokenizer: TokenizerJson {
                model: self.tokenizer_model.as_deref(),
                pre: self.tokenizer_pre.as_deref(),
                kind: tokenizer_kind(self.tokenizer_model.as_deref()),
                vocab_size: self.vocab_size,
            },
            tensor_types: self
                .types
                .iter()
                .map(|(&(_, ty), ts)| TypeJson { ty, stats: ts })
                .collect(),
            tensor_bytes: self.tensor_bytes,
            globals: &self.globals,
            layers: self
                .layers
                .iter()
                .map(|(&layer, stats)| LayerJson { layer, stats })
                .collect(),
            metadata: Pairs(md.iter().collect()),
            tensors: with_tensors.then(|| g.tensors()),
        };
        serde_json::to_writer_pretty(&mut *w, &doc)?;
        w.write_all(b"\n").map_err(serde_json::Error::io)
    }
}

/// The `--json` document.
#[derive(Serialize)]
struct JsonDoc<'a> {
    file: String,
    file_size: u64,
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata_count: usize,
    tensor_count: usize,
    architecture: Option<&'a str>,
    name: Option<&'a str>,
    parameters: u64,
    file_type: Option<FileType>,
    context_length: Option<u64>,
    block_count: Option<u64>,
    hyperparameters: Pairs<'a>,
    tokenizer: TokenizerJson<'a>,
    tensor_types: Vec<TypeJson<'a>>,
    tensor_bytes: u64,
    globals: &'a GroupStats,
    layers: Vec<LayerJson<'a>>,
    metadata: Pairs<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tensors: Option<&'a [TensorInfo]>,
}

#[derive(Serialize)]
struct FileType {
    id: u32,
    name: Option<&'static str>,
}

#[derive(Serialize)]
struct TokenizerJson<'a> {
    model: Option<&'a str>,
    kind: Option<&'static str>,
    pre: Option<&'a str>,
    vocab_size: Option<usize>,
}

#[derive(Serialize)]
struct TypeJson<'a> {
    #[serde(rename = "type")]
    ty: &'static str,
    #[serde(flatten)]
    stats: &'a TypeStats,
}

#[derive(Serialize)]
struct LayerJson<'a> {
    layer: u64,
    #[serde(flatten)]
    stats: &'a GroupStats,
}

/// Metadata pairs as a JSON object, long arrays summarized.
struct Pairs<'a>(Vec<(&'a str, &'a Value)>);

impl Serialize for Pairs<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            match v {
                Value::Array(a) => map.serialize_entry(k, &Summarized(a))?,
                v => map.serialize_entry(k, v)?,
            }
        }
        map.end()
    }
}

/// An array: all elements if it has at most [`ARRAY_SHOWN`], otherwise
/// `{"type": "array of …", "len": n, "head": [first ARRAY_SHOWN]}`; nested arrays likewise.
struct Summarized<'a>(&'a Array);

/// The first [`ARRAY_SHOWN`] elements of an array.
struct Head<'a>(&'a Array);

impl Serialize for Head<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let n = self.0.len().min(ARRAY_SHOWN);
        let mut seq = s.serialize_seq(Some(n))?;
        for e in self.0.iter().take(n) {
            match e {
                Element::Array(inner) => seq.serialize_element(&Summarized(inner))?,
                e => seq.serialize_element(&e)?,
            }
        }
        seq.end()
    }
}

impl Serialize for Summarized<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        if self.0.len() <= ARRAY_SHOWN {
            return Head(self.0).serialize(s);
        }
        let mut map = s.serialize_map(Some(3))?;
        map.serialize_entry("type", &format!("array of {}", elem_type_name(self.0)))?;
        map.serialize_entry("len", &self.0.len())?;
        map.serialize_entry("head", &Head(self.0))?;
        map.end()
    }
}

fn write_tensors(w: &mut impl Write, g: &Gguf) -> io::Result<()> {
    writeln!(w, "\ntensors:")?;
    let width = g
        .tensors()
        .iter()
        .map(|t| t.name.chars().count())
        .max()
        .unwrap_or(0)
        .min(48);
    for t in g.tensors() {
        writeln!(
            w,
            "  {:<width$}  {:<7} {:<22} offset {:>12}  {:>10}",
            sanitize(&t.name),
            t.ty.name(),
            dims_text(t),
            t.offset,
            human_bytes(t.n_bytes)
        )?;
    }
    Ok(())
}

fn dims_text(t: &TensorInfo) -> String {
    let dims: Vec<String> = t.dims.iter().map(u64::to_string).collect();
    format!("[{}]", dims.join(", "))
}

/// A string from the file, made safe for one terminal line: control characters escaped,
/// long strings shortened.
fn sanitize(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == STRING_SHOWN {
            out.push_str(&format!("… ({} bytes)", s.len()));
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn short_type(v: &Value) -> String {
    match v {
        Value::Array(a) => format!("[{}]", elem_type_name(a)),
        v => v.value_type().name().to_owned(),
    }
}

fn elem_type_name(a: &Array) -> String {
    if a.elem_type() == ValueType::Array {
        match a.get(0) {
            Some(Element::Array(inner)) => format!("[{}]", elem_type_name(inner)),
            _ => "array".to_owned(),
        }
    } else {
        a.elem_type().name().to_owned()
    }
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => format!("\"{}\"", sanitize(s)),
        Value::Array(a) => array_text(a),
        Value::F32(x) => x.to_string(),
        Value::F64(x) => x.to_string(),
        Value::Bool(b) => b.to_string(),
        v => v.as_integer().map_or_else(String::new, |i| i.to_string()),
    }
}

fn element_text(e: &Element<'_>) -> String {
    match e {
        Element::String(b) => format!("\"{}\"", sanitize(&String::from_utf8_lossy(b))),
        Element::Array(a) => array_text(a),
        Element::F32(x) => x.to_string(),
        Element::F64(x) => x.to_string(),
        Element::Bool(b) => b.to_string(),
        e => e.as_integer().map_or_else(String::new, |i| i.to_string()),
    }
}

fn array_text(a: &Array) -> String {
    let items: Vec<String> = a
        .iter()
        .take(ARRAY_SHOWN)
        .map(|e| element_text(&e))
        .collect();
    if a.len() > ARRAY_SHOWN {
        format!("[{}, … ] ({} items)", items.join(", "), a.len())
    } else {
        format!("[{}]", items.join(", "))
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// 268098176 → "268,098,176".
fn group_digits(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// 268098176 → "268.1M".
fn short_count(n: u64) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.2}B", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.1}M", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.1}K", n / 1e3)
    } else {
        format!("{n}")
    }
}

/// Bytes in binary units: "178.12 MiB".
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting_helpers() {
        assert_eq!(group_digits(268_098_176), "268,098,176");
        assert_eq!(group_digits(12), "12");
        assert_eq!(short_count(268_098_176), "268.1M");
        assert_eq!(human_bytes(1536), "1.50 KiB");
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(layer_of("blk.17.attn_q.weight"), Some(17));
        assert_eq!(layer_of("token_embd.weight"), None);
        assert_eq!(sanitize("a\nb\x1b"), "a\\nb\\u{1b}");
    }
}

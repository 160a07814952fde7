//! `strata tokenize`: encode text with a model's tokenizer and print ids and pieces.

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use strata_engine::tokenizer::Tokenizer;
use strata_gguf::Gguf;

/// Flags of `strata tokenize`.
#[derive(clap::Args)]
pub struct Args {
    /// The GGUF model file (only its tokenizer metadata is read).
    pub model: PathBuf,
    /// The text to tokenize.
    pub text: String,
    /// Print only the ids, as one JSON array.
    #[arg(long)]
    pub ids_only: bool,
    /// Parse special-token text (e.g. `<start_of_turn>`) into control tokens.
    #[arg(long)]
    pub special: bool,
    /// Do not add the model's BOS/EOS tokens.
    #[arg(long)]
    pub no_add_special: bool,
}

/// Runs `strata tokenize`.
pub fn run(args: Args) -> Result<()> {
    // The GGUF error already names the file.
    let gguf =
        Gguf::open(&args.model).with_context(|| format!("opening {}", args.model.display()))?;
    let tok = Tokenizer::from_gguf(&gguf)
        .with_context(|| format!("building the tokenizer of {}", args.model.display()))?;
    let ids = tok
        .encode(&args.text, !args.no_add_special, args.special)
        .context("tokenizing")?;
    let mut out = BufWriter::new(io::stdout().lock());
    if args.ids_only {
        let list: Vec<String> = ids.iter().map(u32::to_string).collect();
        writeln!(out, "[{}]", list.join(", "))?;
    } else {
        for &id in &ids {
            writeln!(out, "{id:>7} {}", show_piece(tok.token_bytes(id)))?;
        }
        writeln!(out, "{} tokens", ids.len())?;
    }
    out.flush()?;
    Ok(())
}

/// A piece as a quoted string; bytes that are not whole UTF-8 characters as `\xNN`.
fn show_piece(bytes: &[u8]) -> String {
    let mut s = String::from("'");
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\n' => s.push_str("\\n"),
                '\r' => s.push_str("\\r"),
                '\t' => s.push_str("\\t"),
                '\'' => s.push_str("\\'"),
                '\\' => s.push_str("\\\\"),
                c if c.is_control() => s.push_str(&format!("\\u{{{:x}}}", c as u32)),
                c => s.push(c),
            }
        }
        for b in chunk.invalid() {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    s.push('\'');
    s
}

#[cfg(test)]
mod tests {
    use super::show_piece;

    #[test]
    fn pieces_are_escaped() {
        assert_eq!(show_piece(b" Paris"), "' Paris'");
        assert_eq!(show_piece(b"\n\t"), "'\\n\\t'");
        assert_eq!(show_piece(&[0xE6, 0x9D]), "'\\xe6\\x9d'");
        assert_eq!(show_piece("東".as_bytes()), "'東'");
    }
}

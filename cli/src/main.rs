//! `strata`: the command-line front end. Glue only: parse flags, call the libraries, map errors
//! to exit code 1 with a one-line message on stderr.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod chat;
mod generate;
mod inspect;
mod logits;
mod model_opts;
mod serve;
mod tensor;
mod tokenize;

/// Run GGUF language models from a bounded memory budget.
#[derive(Parser)]
#[command(name = "strata", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Summarize a GGUF file: architecture, hyperparameters, tensor types and sizes.
    Inspect(inspect::Args),
    /// Dequantize one tensor of a model to a float32 `.npy` file.
    Tensor(tensor::Args),
    /// Tokenize text with a model's tokenizer and print ids and pieces.
    Tokenize(tokenize::Args),
    /// Generate text from a prompt.
    Generate(generate::Args),
    /// Chat with a model in an interactive REPL.
    Chat(chat::Args),
    /// Evaluate a prompt and print the top logits at every position as JSON.
    Logits(logits::Args),
    /// Measure prompt and generation speed like llama.cpp's llama-bench.
    Bench(bench::Args),
    /// Serve the model over an OpenAI-compatible HTTP API with continuous batching.
    Serve(serve::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(args) => inspect::run(args),
        Command::Tensor(args) => tensor::run(args),
        Command::Tokenize(args) => tokenize::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Chat(args) => chat::run(args),
        Command::Logits(args) => logits::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Serve(args) => serve::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("strata: {}", one_line(&err));
            ExitCode::FAILURE
        }
    }
}

/// The error's context chain on one line, `a: b: c`, leaving out a cause whose text the
/// message before it already ends with (library errors that print their source too) and
/// turning newlines into spaces.
fn one_line(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if out.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out.replace(['\n', '\r'], " ")
}

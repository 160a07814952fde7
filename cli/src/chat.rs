//! `strata chat`: an interactive REPL. Each turn renders the whole conversation with the
//! model's chat template (`strata_engine::ChatTemplate`), tokenizes it,
//! and evaluates only what the KV cache does not already hold.

use std::io::{BufRead, Write};

use anyhow::Result;
use strata_engine::{ChatMessage, ChatTemplate, GenerateOptions};

use crate::generate::SamplingArgs;
use crate::model_opts::{stats_line, ModelOpts};

/// Flags of `strata chat`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelOpts,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Most tokens per reply.
    #[arg(short = 'n', long, default_value_t = 512)]
    n_predict: usize,
    /// A system message placed before the first turn.
    #[arg(long)]
    system: Option<String>,
    /// Print the stats line after every reply.
    #[arg(long)]
    stats: bool,
}

/// Runs `strata chat`.
pub fn run(args: Args) -> Result<()> {
    let engine = args.model.open()?;
    let tok = engine.tokenizer();
    let template = ChatTemplate::for_tokenizer(tok)?;

    let mut messages = Vec::new();
    if let Some(s) = &args.system {
        messages.push(ChatMessage::new("system", s.clone()));
    }
    let mut session = engine.session()?;
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    eprintln!(
        "chat with {} — empty line or Ctrl-D to quit",
        engine.config().arch.name()
    );
    loop {
        write!(out, "> ")?;
        out.flush()?;
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        messages.push(ChatMessage::new("user", line.trim_end()));

        let ids = template.encode(tok, &messages, true)?;
        if std::env::var_os("STRATA_CHAT_DEBUG").is_some() {
            eprintln!(
                "[template] {:?} -> {} tokens",
                template.render(&messages, true)?,
                ids.len()
            );
        }

        // Reuse the cached prefix; evaluate the rest.
        let have = session.tokens();
        let common = have.iter().zip(&ids).take_while(|(a, b)| a == b).count();
        session.truncate(common);
        let keep = session.tokens().len();
        let opts = GenerateOptions {
            max_tokens: args.n_predict,
            sampler: args.sampling.config(),
            stop: Vec::new(),
            stop_at_eog: true,
        };
        let mut reply = String::new();
        {
            let generation = session.generate(&ids[keep..], opts)?;
            for piece in generation {
                let piece = piece?;
                out.write_all(piece.as_bytes())?;
                out.flush()?;
                reply.push_str(&piece);
            }
        }
        writeln!(out)?;
        messages.push(ChatMessage::new("assistant", reply));
        if args.stats {
            eprintln!("{}", stats_line(&engine, session.stats()));
        }
    }
    eprintln!("{}", stats_line(&engine, session.stats()));
    Ok(())
}

//! `strata chat`: an interactive REPL. Each turn renders the whole conversation with the
//! model's chat template (minijinja; Gemma's turn format when the file has none), tokenizes it,
//! and evaluates only what the KV cache does not already hold.

use std::io::{BufRead, Write};

use anyhow::{Context, Result};
use minijinja::{Environment, Error as JinjaError, ErrorKind};
use serde::Serialize;
use strata_engine::GenerateOptions;

use crate::generate::SamplingArgs;
use crate::model_opts::{stats_line, ModelOpts};

/// Gemma's turn format, used when the model file carries no `tokenizer.chat_template`.
const GEMMA_TEMPLATE: &str = "{{ bos_token }}{% for m in messages %}\
<start_of_turn>{{ 'model' if m.role == 'assistant' else m.role }}\n\
{{ m.content | trim }}<end_of_turn>\n{% endfor %}\
{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}";

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

#[derive(Serialize)]
struct Message {
    role: String,
    content: String,
}

/// Runs `strata chat`.
pub fn run(args: Args) -> Result<()> {
    let engine = args.model.open()?;
    let tok = engine.tokenizer();
    let template = tok.chat_template().unwrap_or(GEMMA_TEMPLATE).to_string();
    let mut env = Environment::new();
    env.add_function(
        "raise_exception",
        |msg: String| -> Result<String, JinjaError> {
            Err(JinjaError::new(ErrorKind::InvalidOperation, msg))
        },
    );
    env.add_template("chat", &template)
        .context("the model's chat template does not parse")?;
    let bos_text = tok
        .bos()
        .map(|id| String::from_utf8_lossy(tok.token_text(id)).into_owned());
    let eos_text = tok
        .eos()
        .map(|id| String::from_utf8_lossy(tok.token_text(id)).into_owned());

    let mut messages = Vec::new();
    if let Some(s) = &args.system {
        messages.push(Message {
            role: "system".into(),
            content: s.clone(),
        });
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
        messages.push(Message {
            role: "user".into(),
            content: line.trim_end().to_string(),
        });

        let text = env.get_template("chat")?.render(minijinja::context! {
            messages => &messages,
            add_generation_prompt => true,
            bos_token => bos_text.clone().unwrap_or_default(),
            eos_token => eos_text.clone().unwrap_or_default(),
        })?;
        // The template writes BOS itself when it wants one.
        let starts_with_bos = bos_text
            .as_deref()
            .is_some_and(|b| !b.is_empty() && text.starts_with(b));
        let ids = tok.encode(&text, !starts_with_bos, true)?;
        if std::env::var_os("STRATA_CHAT_DEBUG").is_some() {
            eprintln!("[template] {text:?} -> {} tokens", ids.len());
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
        messages.push(Message {
            role: "assistant".into(),
            content: reply,
        });
        if args.stats {
            eprintln!("{}", stats_line(&engine, session.stats()));
        }
    }
    eprintln!("{}", stats_line(&engine, session.stats()));
    Ok(())
}

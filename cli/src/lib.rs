//! The `grayline` command line over the gRPC APIs: config as code (`apply`, `diff`,
//! `export`), operations (`get`, `list`, `history`, `promote`, `undo`, `restore`,
//! `set-weight`, `simulate`, `proxies`, `stats`), rollouts, `--wait` for every proxy's ACK,
//! named contexts and shell completions. docs/cli.md is the manual.
//!
//! - [`args`]: the command line. [`connect`] and [`context`]: where and as whom.
//! - [`source`] and [`locate`]: service files and where each field is in them.
//! - [`apply`], [`ops`], [`rollout`]: the commands. [`wait`]: waiting for the proxies.
//! - [`output`]: tables, JSON, YAML and diffs. [`exit`]: failures and exit codes.

// The rollout status's JSON (`serde_json::json!`) nests deeper than the default allows.
#![recursion_limit = "256"]

pub mod apply;
pub mod args;
pub mod connect;
pub mod context;
pub mod exit;
pub mod instances;
pub mod locate;
pub mod ops;
pub mod output;
pub mod rollout;
pub mod source;
pub mod wait;
pub mod wire;

use clap::CommandFactory;

use crate::args::{Cli, Command, ContextCommand};
use crate::context::{ConfigFile, Context};
use crate::exit::{Failure, Result};

/// Runs one command line.
pub async fn run(cli: Cli) -> Result<()> {
    let format = cli.output;
    match &cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "grayline",
                &mut std::io::stdout(),
            );
            return Ok(());
        }
        Command::Context(c) => return context_command(c, cli.connection.context.as_deref()),
        _ => {}
    }
    let target = connect::target(&cli.connection)?;
    let mut c = connect::connect(&target).await?;
    let c = &mut c;
    match &cli.command {
        Command::Apply(a) => apply::apply(c, a, format).await,
        Command::Diff(f) => apply::diff(c, f, format).await,
        Command::Export { service } => apply::export(c, service.as_deref(), format).await,
        Command::Get { service } => ops::get(c, service, format).await,
        Command::List(args) => ops::list(c, args, format).await,
        Command::History(h) => ops::history(c, h, format).await,
        Command::Promote(p) => {
            ops::promote(c, &p.service, &p.to, p.expected_revision, &p.wait, format).await
        }
        Command::Undo(u) => ops::undo(c, &u.service, &u.wait, format).await,
        Command::Restore(r) => ops::restore(c, &r.service, r.revision, &r.wait, format).await,
        Command::SetWeight(w) => {
            ops::set_weight(
                c,
                &w.service,
                &w.weights,
                w.expected_revision,
                &w.wait,
                format,
            )
            .await
        }
        Command::Simulate(s) => ops::simulate(c, s, format).await,
        Command::Proxies => ops::proxies(c, format).await,
        Command::Stats(s) => ops::stats(c, s, format).await,
        Command::Instances { service } => instances::list(c, service.as_deref(), format).await,
        Command::Register(r) => instances::register(c, r, format).await,
        Command::Deregister { service, address } => {
            instances::deregister(c, service, address, format).await
        }
        Command::Rollout(r) => rollout::run(c, r, format).await,
        Command::Context(_) | Command::Completions { .. } => Ok(()),
    }
}

fn context_command(c: &ContextCommand, chosen: Option<&str>) -> Result<()> {
    let path = context::path();
    let mut file = ConfigFile::load(&path)?;
    match c {
        ContextCommand::List => {
            let current = chosen.map(str::to_string).or(file.current.clone());
            let mut t = output::Table::new(&["", "NAME", "SERVER", "TOKEN FILE", "ACTOR"]);
            for (name, ctx) in &file.contexts {
                t.row(vec![
                    if Some(name) == current.as_ref() {
                        "*"
                    } else {
                        ""
                    }
                    .into(),
                    name.clone(),
                    ctx.server.clone().unwrap_or_default(),
                    ctx.token_file
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                    ctx.actor.clone().unwrap_or_default(),
                ]);
            }
            println!("{}", t.render());
            Ok(())
        }
        ContextCommand::Current => match file.current {
            Some(name) => {
                println!("{name}");
                Ok(())
            }
            None => Err(Failure::new(exit::Code::NotFound, "no current context")),
        },
        ContextCommand::Use { name } => {
            file.context(Some(name))?;
            file.current = Some(name.clone());
            file.save(&path)?;
            println!("now using context {name} ({})", path.display());
            Ok(())
        }
        ContextCommand::Set {
            name,
            server,
            token_file,
            actor,
            ca,
        } => {
            let ctx = file
                .contexts
                .entry(name.clone())
                .or_insert_with(Context::default);
            if let Some(s) = server {
                ctx.server = Some(s.clone());
            }
            // Files are stored absolute, so the context works from any directory.
            let absolute =
                |p: &std::path::PathBuf| std::path::absolute(p).unwrap_or_else(|_| p.clone());
            if let Some(t) = token_file {
                ctx.token_file = Some(absolute(t));
            }
            if let Some(c) = ca {
                ctx.ca = Some(absolute(c));
            }
            if let Some(a) = actor {
                ctx.actor = Some(a.clone());
            }
            if file.current.is_none() {
                file.current = Some(name.clone());
            }
            file.save(&path)?;
            println!("context {name} saved in {}", path.display());
            Ok(())
        }
        ContextCommand::Delete { name } => {
            file.context(Some(name))?;
            file.contexts.remove(name);
            if file.current.as_deref() == Some(name) {
                file.current = None;
            }
            file.save(&path)?;
            println!("context {name} deleted");
            Ok(())
        }
    }
}

//! Config as code: `apply` makes the server's services what the files say (creating,
//! updating, and with `--prune` deleting), `diff` shows what it would do, `export` writes
//! services in the form `apply` takes back unchanged.
//!
//! An apply first asks the server to check every change (a dry run), so a file with one bad
//! service changes nothing; then writes them in file order, each with the revision it was
//! based on (the file's `revision`, else the one just read), so two pipelines racing on one
//! service get one winner and one conflict.

use std::collections::{BTreeMap, BTreeSet};

use grayline_proto::v1 as pb;
use grayline_routing::Service;
use grayline_routing::api::ServiceRecord;
use serde::Serialize;

use crate::args::{ApplyArgs, FilesArgs, Output};
use crate::connect::Connection;
use crate::exit::{Code, Failure, Result};
use crate::output;
use crate::source::{self, Entry};
use crate::wait;
use crate::wire;

/// What apply does to one service.
#[derive(Debug)]
enum Change {
    Create,
    Update { expected: u64 },
    Unchanged { revision: u64 },
    Delete { expected: u64 },
}

#[derive(Debug)]
struct Planned {
    name: String,
    change: Change,
    /// The file's entry (absent for a prune).
    entry: Option<Entry>,
    current: Option<ServiceRecord>,
}

/// What one service ended as, for `-o json|yaml`.
#[derive(Debug, Serialize)]
pub struct Outcome {
    pub service: String,
    /// created, updated, unchanged, deleted; `would …` in a dry run.
    pub action: String,
    pub revision: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub diff: String,
}

async fn current(c: &mut Connection) -> Result<BTreeMap<String, ServiceRecord>> {
    let list = c
        .config
        .list_services(pb::ListServicesRequest {})
        .await?
        .into_inner();
    let mut out = BTreeMap::new();
    for r in list.services {
        let r = wire::record(r)?;
        out.insert(r.service.name.clone(), r);
    }
    Ok(out)
}

/// What the files ask for, against the server's services now.
async fn plan(
    c: &mut Connection,
    files: &FilesArgs,
    expected: Option<u64>,
) -> Result<Vec<Planned>> {
    let entries = source::read(&files.files)?;
    if entries.is_empty() {
        return Err(Failure::invalid(format!(
            "{}: no services in the files",
            files.files.join(", ")
        )));
    }
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for e in &entries {
        if let Some(first) = seen.insert(e.service.name.clone(), e.at()) {
            return Err(Failure::invalid(format!(
                "{}: service `{}` is also defined at {first}",
                e.at(),
                e.service.name
            )));
        }
    }
    if expected.is_some() && entries.len() > 1 {
        return Err(Failure::invalid(format!(
            "--expected-revision applies to one service, and the files define {}; record a `revision` per service instead",
            entries.len()
        )));
    }
    let now = current(c).await?;
    let mut out = Vec::new();
    for e in entries {
        let existing = now.get(&e.service.name).cloned();
        let change = match &existing {
            None => Create,
            Some(r) if r.service == e.service => Unchanged {
                revision: r.revision,
            },
            Some(r) => Update {
                expected: expected.or(e.revision).unwrap_or(r.revision),
            },
        };
        out.push(Planned {
            name: e.service.name.clone(),
            change,
            entry: Some(e),
            current: existing,
        });
    }
    if files.prune {
        let named: BTreeSet<String> = out.iter().map(|p| p.name.clone()).collect();
        for (name, r) in now {
            if !named.contains(&name) {
                out.push(Planned {
                    name,
                    change: Delete {
                        expected: r.revision,
                    },
                    entry: None,
                    current: Some(r),
                });
            }
        }
    }
    Ok(out)
}

use Change::*;

fn diff_of(p: &Planned) -> String {
    let old = p.current.as_ref().map(|r| &r.service);
    let new = p.entry.as_ref().map(|e| &e.service);
    let old_name = p.current.as_ref().map_or("(none)".to_string(), |r| {
        format!("server: {} at revision {}", r.service.name, r.revision)
    });
    let new_name = p.entry.as_ref().map_or("(deleted)".to_string(), |e| e.at());
    output::diff(old, new, &old_name, &new_name)
}

/// A server's complaint about a service, with the file and line of each field it names.
fn located(e: Failure, entry: &Entry) -> Failure {
    if e.code != Code::Invalid {
        return e.context(format!("{}: service `{}`", entry.at(), entry.service.name));
    }
    let parts: Vec<String> = e
        .message
        .split("; ")
        .map(|part| match part.split_once(": ") {
            Some((field, msg)) if field.starts_with("service") && !field.contains(' ') => {
                format!("{}: {field}: {msg}", entry.locate(field))
            }
            _ => format!("{}: {part}", entry.at()),
        })
        .collect();
    Failure::invalid(parts.join("\n"))
}

fn create_request(s: &Service, dry_run: bool) -> pb::CreateServiceRequest {
    pb::CreateServiceRequest {
        service: Some(s.into()),
        dry_run,
    }
}

fn update_request(s: &Service, expected: u64, dry_run: bool) -> pb::UpdateServiceRequest {
    pb::UpdateServiceRequest {
        service: Some(s.into()),
        expected_revision: Some(expected),
        dry_run,
    }
}

/// Asks the server to check one planned change without making it.
async fn check(c: &mut Connection, p: &Planned) -> Result<()> {
    let Some(e) = &p.entry else { return Ok(()) };
    let result = match p.change {
        Create => c
            .config
            .create_service(create_request(&e.service, true))
            .await
            .map(|_| ()),
        Update { expected } => c
            .config
            .update_service(update_request(&e.service, expected, true))
            .await
            .map(|_| ()),
        _ => Ok(()),
    };
    result.map_err(|s| located(s.into(), e))
}

/// Carries out one planned change; returns the revision it made.
async fn write(c: &mut Connection, p: &Planned) -> Result<u64> {
    match (&p.change, &p.entry) {
        (Create, Some(e)) => Ok(c
            .config
            .create_service(create_request(&e.service, false))
            .await
            .map_err(|s| located(s.into(), e))?
            .into_inner()
            .revision),
        (Update { expected }, Some(e)) => Ok(c
            .config
            .update_service(update_request(&e.service, *expected, false))
            .await
            .map_err(|s| located(s.into(), e))?
            .into_inner()
            .revision),
        (Delete { expected }, _) => Ok(c
            .config
            .delete_service(pb::DeleteServiceRequest {
                name: p.name.clone(),
                expected_revision: Some(*expected),
            })
            .await
            .map_err(|s| Failure::from(s).context(format!("deleting `{}`", p.name)))?
            .into_inner()
            .revision),
        (Unchanged { revision }, _) => Ok(*revision),
        _ => Err(Failure::new(Code::Error, "nothing to write")),
    }
}

pub async fn apply(c: &mut Connection, args: &ApplyArgs, format: Output) -> Result<()> {
    let planned = plan(c, &args.files, args.expected_revision).await?;
    // Every change checked first: a bad service changes nothing.
    let mut problems = Vec::new();
    for p in &planned {
        if let Err(e) = check(c, p).await {
            problems.push(e);
        }
    }
    if let Some(first) = problems.first() {
        let code = first.code;
        let message = problems
            .iter()
            .map(|p| p.message.clone())
            .collect::<Vec<_>>()
            .join("\n");
        return Err(Failure::new(
            code,
            format!("{message}\nnothing was changed"),
        ));
    }
    let mut outcomes = Vec::new();
    for p in &planned {
        let diff = diff_of(p);
        let (action, revision) = if args.dry_run {
            let action = match p.change {
                Create => "would create",
                Update { .. } => "would update",
                Unchanged { .. } => "unchanged",
                Delete { .. } => "would delete",
            };
            let revision = match p.change {
                Unchanged { revision } => revision,
                _ => p.current.as_ref().map_or(0, |r| r.revision),
            };
            (action, revision)
        } else {
            let revision = write(c, p).await?;
            let action = match p.change {
                Create => "created",
                Update { .. } => "updated",
                Unchanged { .. } => "unchanged",
                Delete { .. } => "deleted",
            };
            (action, revision)
        };
        if format == Output::Table {
            let what = match (&p.change, args.dry_run) {
                (Unchanged { .. }, _) => {
                    format!("service {}: unchanged (revision {revision})", p.name)
                }
                (_, true) => format!(
                    "service {}: {action} (checked by the server, nothing changed)",
                    p.name
                ),
                (Update { .. }, false) => format!(
                    "service {}: updated, revision {} → {revision}",
                    p.name,
                    p.current.as_ref().map_or(0, |r| r.revision)
                ),
                (_, false) => format!("service {}: {action} (revision {revision})", p.name),
            };
            println!("{what}");
            // A new service's every default would be noise: diffs only for changes.
            if matches!(p.change, Update { .. }) {
                print!("{diff}");
            }
        }
        outcomes.push(Outcome {
            service: p.name.clone(),
            action: action.to_string(),
            revision,
            diff,
        });
    }
    if format != Output::Table {
        output::print(format, &outcomes, String::new)?;
    }
    if let (Some(timeout), false) = (args.wait.wait, args.dry_run) {
        for o in outcomes.iter().filter(|o| o.action != "deleted") {
            let live = wait::until_live(c, &o.service, o.revision, timeout).await?;
            eprintln!("{}", wait::describe(&o.service, o.revision, &live));
        }
    }
    Ok(())
}

/// Exit 0 when nothing would change, 10 when something would.
pub async fn diff(c: &mut Connection, files: &FilesArgs, format: Output) -> Result<()> {
    let planned = plan(c, files, None).await?;
    let mut changed = Vec::new();
    for p in &planned {
        let d = diff_of(p);
        let action = match p.change {
            Create => "create",
            Update { .. } => "update",
            Unchanged { .. } => continue,
            Delete { .. } => "delete",
        };
        if format == Output::Table {
            println!("service {}: would {action}", p.name);
            if matches!(p.change, Update { .. }) {
                print!("{d}");
            }
        }
        changed.push(Outcome {
            service: p.name.clone(),
            action: format!("would {action}"),
            revision: p.current.as_ref().map_or(0, |r| r.revision),
            diff: d,
        });
    }
    if format != Output::Table {
        output::print(format, &changed, String::new)?;
    }
    if changed.is_empty() {
        if format == Output::Table {
            println!("no changes");
        }
        Ok(())
    } else {
        Err(Failure::new(
            Code::Differs,
            format!("{} service(s) differ from the files", changed.len()),
        ))
    }
}

/// The services as `apply` takes them back: YAML documents of `{service, revision}` (or
/// a JSON list with `-o json`).
pub async fn export(c: &mut Connection, service: Option<&str>, format: Output) -> Result<()> {
    let records: Vec<ServiceRecord> = match service {
        Some(name) => vec![wire::record(
            c.config
                .get_service(pb::GetServiceRequest {
                    name: name.to_string(),
                })
                .await?
                .into_inner(),
        )?],
        None => current(c).await?.into_values().collect(),
    };
    match format {
        Output::Json => output::print(format, &records, String::new),
        _ => {
            let mut text = String::new();
            for r in &records {
                text.push_str("---\n");
                text.push_str(&output::yaml(r)?);
            }
            print!("{text}");
            Ok(())
        }
    }
}

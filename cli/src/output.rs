//! How results are printed: aligned tables for people, JSON or YAML for scripts, and
//! unified diffs of services.

use grayline_routing::Service;
use serde::Serialize;

use crate::args::Output;
use crate::exit::{Code, Failure, Result};

/// Rows under a header, columns padded to the widest cell.
#[derive(Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let cols = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate().take(cols) {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let mut s = String::new();
            for (i, c) in cells.iter().enumerate().take(cols) {
                if i + 1 == cols {
                    s.push_str(c);
                } else {
                    s.push_str(c);
                    s.push_str(&" ".repeat(widths[i] - c.chars().count() + 2));
                }
            }
            s.trim_end().to_string()
        };
        let mut out = line(&self.header);
        for r in &self.rows {
            out.push('\n');
            out.push_str(&line(r));
        }
        out
    }
}

/// Prints `value` as JSON or YAML; `Table` prints `table` instead.
pub fn print<T: Serialize>(
    format: Output,
    value: &T,
    table: impl FnOnce() -> String,
) -> Result<()> {
    let text = match format {
        Output::Table => table(),
        Output::Json => serde_json::to_string_pretty(value).map_err(encode)?,
        Output::Yaml => yaml(value)?.trim_end().to_string(),
    };
    println!("{text}");
    Ok(())
}

/// YAML without tags: enums read as `split: …`, as in the JSON API and the files `apply`
/// takes (a YAML serializer would write `!split`).
pub fn yaml<T: Serialize>(value: &T) -> Result<String> {
    let plain = serde_json::to_value(value).map_err(encode)?;
    serde_norway::to_string(&plain).map_err(encode)
}

fn encode(e: impl std::fmt::Display) -> Failure {
    Failure::new(Code::Error, format!("encoding the output: {e}"))
}

/// A service as YAML, the form diffs compare.
pub fn service_yaml(s: &Service) -> String {
    yaml(s).unwrap_or_default()
}

/// A unified diff of two services; empty when they are equal.
pub fn diff(
    old: Option<&Service>,
    new: Option<&Service>,
    old_name: &str,
    new_name: &str,
) -> String {
    let a = old.map(service_yaml).unwrap_or_default();
    let b = new.map(service_yaml).unwrap_or_default();
    if a == b {
        return String::new();
    }
    similar::TextDiff::from_lines(&a, &b)
        .unified_diff()
        .context_radius(3)
        .header(old_name, new_name)
        .to_string()
}

/// Basis points as a percentage.
pub fn share(bp: u32) -> String {
    grayline_rollout::judge::percent(bp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use grayline_routing::Version;

    #[test]
    fn tables_align() {
        let mut t = Table::new(&["NAME", "REVISION"]);
        t.row(vec!["shop".into(), "12".into()]);
        t.row(vec!["checkout-api".into(), "3".into()]);
        assert_eq!(
            t.render(),
            "NAME          REVISION\nshop          12\ncheckout-api  3"
        );
    }

    #[test]
    fn diffs_show_what_changes() {
        let a = Service::single("shop", Version::new("v1", &["127.0.0.1:1"]));
        let mut b = a.clone();
        b.path_prefix = "/api".into();
        let d = diff(Some(&a), Some(&b), "server", "file");
        assert!(
            d.contains("-path_prefix: /") && d.contains("+path_prefix: /api"),
            "{d}"
        );
        assert_eq!(diff(Some(&a), Some(&a), "x", "y"), "");
        let mut split = a.clone();
        split.policy.default_route =
            Some(grayline_routing::Route::Split(grayline_routing::Split {
                weights: vec![grayline_routing::Weight {
                    version: "v1".into(),
                    weight: 10_000,
                }],
                sticky: None,
            }));
        let text = service_yaml(&split);
        assert!(
            text.contains("default_route:\n    split:") && !text.contains('!'),
            "{text}"
        );
    }
}

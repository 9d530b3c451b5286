//! Service files: YAML (one or more documents) or JSON, each document a service or
//! `{service, revision}` (what `export` writes), or a list of them; from files, directories
//! or standard input. Every entry remembers where it came from, so errors can say
//! `shop.yaml:12: service.versions[0].endpoints[0]: …`.

use std::path::Path;

use grayline_routing::Service;
use serde_json::Value;

use crate::exit::{Failure, Result};
use crate::locate::{self, Lines};

/// Reads one document of any shape from a file (or `-`), with errors that name the file,
/// line and field, as for services.
pub fn read_one<T: serde::de::DeserializeOwned>(name: &str) -> Result<T> {
    let (origin, text) = if name == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
        ("<stdin>".to_string(), text)
    } else {
        let text = std::fs::read_to_string(name).map_err(|e| Failure::from(e).context(name))?;
        (name.to_string(), text)
    };
    let json = origin.ends_with(".json") || text.trim_start().starts_with('{');
    let value: Value = if json {
        serde_json::from_str(&text)
            .map_err(|e| Failure::invalid(format!("{origin}:{}: {e}", e.line())))?
    } else {
        let v: serde_norway::Value = serde_norway::from_str(&text).map_err(|e| {
            let at = e
                .location()
                .map_or(String::new(), |l| format!(":{}", l.line()));
            Failure::invalid(format!("{origin}{at}: {e}"))
        })?;
        serde_json::to_value(v).map_err(|e| Failure::invalid(format!("{origin}: {e}")))?
    };
    let lines = locate::index(&text).into_iter().next().unwrap_or_default();
    serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        let field = if field == "." { String::new() } else { field };
        let at = lines
            .line_of(&field)
            .map_or(origin.clone(), |l| format!("{origin}:{l}"));
        let shown = if field.is_empty() {
            String::new()
        } else {
            format!("{field}: ")
        };
        Failure::invalid(format!("{at}: {shown}{}", e.inner()))
    })
}

/// The line of a field of a document read by [`read_one`], for the server's errors.
pub fn line_in(name: &str, field: &str) -> Option<usize> {
    let text = std::fs::read_to_string(name).ok()?;
    locate::index(&text).into_iter().next()?.line_of(field)
}

/// One service from a file.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The file, or `<stdin>`.
    pub origin: String,
    pub service: Service,
    /// The revision the file says the service is at: the expected revision of an update.
    pub revision: Option<u64>,
    /// The path of the service object within its document (`service`, `[2]`, …).
    base: String,
    lines: Lines,
}

impl Entry {
    /// `file:line` of a field of the service, given as the server names it
    /// (`service.versions[0]`) or relative to the service (`versions[0]`).
    pub fn locate(&self, field: &str) -> String {
        let rel = field
            .strip_prefix("service")
            .map_or(field, |r| r.trim_start_matches('.'));
        let path = match (self.base.is_empty(), rel.is_empty()) {
            (true, _) => rel.to_string(),
            (false, true) => self.base.clone(),
            (false, false) if rel.starts_with('[') => format!("{}{rel}", self.base),
            (false, false) => format!("{}.{rel}", self.base),
        };
        match self.lines.line_of(&path) {
            Some(line) => format!("{}:{line}", self.origin),
            None => self.origin.clone(),
        }
    }

    /// Where the service starts.
    pub fn at(&self) -> String {
        self.locate("")
    }
}

/// Every entry of every file named (a directory: its .yaml, .yml and .json files, sorted).
pub fn read(names: &[String]) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    for name in names {
        if name == "-" {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
            out.extend(parse("<stdin>", &text)?);
            continue;
        }
        let path = Path::new(name);
        if path.is_dir() {
            let mut files: Vec<_> = std::fs::read_dir(path)
                .map_err(|e| Failure::from(e).context(name))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && matches!(
                            p.extension().and_then(|e| e.to_str()),
                            Some("yaml" | "yml" | "json")
                        )
                })
                .collect();
            files.sort();
            if files.is_empty() {
                return Err(Failure::invalid(format!(
                    "{name}: no .yaml, .yml or .json files"
                )));
            }
            for f in files {
                out.extend(read_file(&f)?);
            }
        } else {
            out.extend(read_file(path)?);
        }
    }
    Ok(out)
}

fn read_file(path: &Path) -> Result<Vec<Entry>> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| Failure::from(e).context(&origin))?;
    parse(&origin, &text)
}

/// Parses one file's text.
pub fn parse(origin: &str, text: &str) -> Result<Vec<Entry>> {
    let json = origin.ends_with(".json") || text.trim_start().starts_with(['{', '[']);
    let docs: Vec<Value> = if json {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| Failure::invalid(format!("{origin}:{}: {e}", e.line())))?;
        vec![v]
    } else {
        let mut docs = Vec::new();
        for doc in serde_norway::Deserializer::from_str(text) {
            let v: serde_norway::Value = serde::Deserialize::deserialize(doc).map_err(|e| {
                let at = e
                    .location()
                    .map_or(String::new(), |l| format!(":{}", l.line()));
                Failure::invalid(format!("{origin}{at}: {e}"))
            })?;
            docs.push(
                serde_json::to_value(v).map_err(|e| Failure::invalid(format!("{origin}: {e}")))?,
            );
        }
        docs
    };
    let mut index = locate::index(text);
    index.resize(docs.len(), Lines::default());
    let mut out = Vec::new();
    for (doc, lines) in docs.into_iter().zip(index) {
        match doc {
            Value::Null => {}
            Value::Array(items) => {
                for (i, item) in items.into_iter().enumerate() {
                    out.push(entry(origin, item, format!("[{i}]"), &lines)?);
                }
            }
            other => out.push(entry(origin, other, String::new(), &lines)?),
        }
    }
    Ok(out)
}

fn entry(origin: &str, value: Value, base: String, lines: &Lines) -> Result<Entry> {
    let join = |field: &str| match (base.is_empty(), field.is_empty()) {
        (true, _) => field.to_string(),
        (false, true) => base.clone(),
        (false, false) => format!("{base}.{field}"),
    };
    let at = |path: &str| {
        lines
            .line_of(path)
            .map_or(origin.to_string(), |l| format!("{origin}:{l}"))
    };
    let Value::Object(mut map) = value else {
        return Err(Failure::invalid(format!(
            "{}: a document is a service, or {{service, revision}}, or a list of them",
            at(&base)
        )));
    };
    let (value, revision, base) = if map.contains_key("service") {
        let service = map.remove("service").unwrap_or_default();
        let revision = match map.remove("revision") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64(),
            Some(other) => {
                return Err(Failure::invalid(format!(
                    "{}: {}: {other} is not a revision number",
                    at(&join("revision")),
                    join("revision")
                )));
            }
        };
        if let Some(extra) = map.keys().next() {
            return Err(Failure::invalid(format!(
                "{}: unknown field `{extra}`: a document is a service, or {{service, revision}}",
                at(&join(extra))
            )));
        }
        (service, revision, join("service"))
    } else {
        (Value::Object(map), None, base.clone())
    };
    let service: Service = serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        let field = if field == "." { String::new() } else { field };
        let full = match (base.is_empty(), field.is_empty()) {
            (true, _) => field.clone(),
            (false, true) => base.clone(),
            (false, false) if field.starts_with('[') => format!("{base}{field}"),
            (false, false) => format!("{base}.{field}"),
        };
        let shown = if field.is_empty() {
            "service".to_string()
        } else {
            format!("service.{field}")
        };
        Failure::invalid(format!("{}: {shown}: {}", at(&full), e.inner()))
    })?;
    Ok(Entry {
        origin: origin.to_string(),
        service,
        revision,
        base,
        lines: lines.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHOP: &str = "service:\n  name: shop\n  versions:\n    - name: v1\n      endpoints: [\"127.0.0.1:9001\"]\n  stable: v1\nrevision: 4\n";

    #[test]
    fn wrapped_bare_lists_and_json() {
        let e = parse("shop.yaml", SHOP).unwrap();
        assert_eq!(
            (e[0].service.name.as_str(), e[0].revision),
            ("shop", Some(4))
        );
        assert_eq!(
            e[0].locate("service.versions[0].endpoints[0]"),
            "shop.yaml:5"
        );
        let two = format!(
            "{SHOP}---\nname: blog\nversions: [{{name: v1, endpoints: [\"127.0.0.1:1\"]}}]\nstable: v1\n"
        );
        let e = parse("all.yaml", &two).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[1].revision, None);
        assert_eq!(e[1].locate("service.stable"), "all.yaml:11");
        let json = r#"[{"name": "a", "versions": [{"name": "v1", "endpoints": ["127.0.0.1:1"]}], "stable": "v1"},
 {"service": {"name": "b", "versions": [{"name": "v1", "endpoints": ["127.0.0.1:1"]}], "stable": "v1"}, "revision": 2}]"#;
        let e = parse("x.json", json).unwrap();
        assert_eq!(
            (e[0].service.name.as_str(), e[1].service.name.as_str()),
            ("a", "b")
        );
        assert_eq!(e[1].locate("service.versions[0]"), "x.json:2");
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let bad = SHOP.replace("endpoints:", "endponts:");
        let err = parse("shop.yaml", &bad).unwrap_err();
        assert!(
            err.message
                .starts_with("shop.yaml:5: service.versions[0].endponts: unknown field `endponts`"),
            "{err}"
        );
        let bad = SHOP.replace("revision: 4", "revision: soon");
        let err = parse("shop.yaml", &bad).unwrap_err();
        assert!(err.message.starts_with("shop.yaml:7: revision:"), "{err}");
        let err = parse("shop.yaml", "service: [\n").unwrap_err();
        assert!(err.message.starts_with("shop.yaml:"), "{err}");
        let err = parse("x.json", "{\"name\": }").unwrap_err();
        assert!(err.message.starts_with("x.json:1:"), "{err}");
        let err = parse("y.yaml", "- 3\n").unwrap_err();
        assert!(err.message.contains("a document is a service"), "{err}");
    }
}

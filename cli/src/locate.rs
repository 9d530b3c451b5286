//! Where in a YAML (or JSON) text each field is: the line of every path
//! (`service.versions[0].endpoints[1]`), per document, so an error about a field can name the
//! file and line it came from.

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Lines of the paths of one document.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lines {
    paths: Vec<(String, usize)>,
}

impl Lines {
    /// The line of `path`, or of the nearest enclosing path that has one.
    pub fn line_of(&self, path: &str) -> Option<usize> {
        let mut p = path;
        loop {
            if let Some((_, line)) = self.paths.iter().find(|(k, _)| k == p) {
                return Some(*line);
            }
            if p.is_empty() {
                return None;
            }
            p = parent(p);
        }
    }
}

/// `a.b[2].c` → `a.b[2]` → `a.b` → `a` → ``.
fn parent(path: &str) -> &str {
    match path.rfind(['.', '[']) {
        Some(i) => &path[..i],
        None => "",
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

#[derive(Debug)]
enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, next: usize },
}

#[derive(Debug, Default)]
struct Index {
    docs: Vec<Lines>,
    stack: Vec<Frame>,
}

impl Index {
    fn record(&mut self, path: String, line: usize) {
        if let Some(doc) = self.docs.last_mut()
            && !doc.paths.iter().any(|(p, _)| *p == path)
        {
            doc.paths.push((path, line));
        }
    }

    /// The path of the node that starts now, or `None` for a mapping key.
    fn node(&mut self, ev: &Event, line: usize) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Seq { path, next }) => {
                let p = format!("{path}[{next}]");
                *next += 1;
                Some(p)
            }
            Some(Frame::Map { path, key }) => match key.take() {
                Some(k) => Some(join(path, &k)),
                None => {
                    let k = match ev {
                        Event::Scalar(v, ..) => v.clone(),
                        _ => String::from("?"),
                    };
                    let p = join(path, &k);
                    *key = Some(k);
                    self.record(p, line);
                    None
                }
            },
        }
    }
}

impl MarkedEventReceiver for Index {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let line = mark.line();
        match &ev {
            Event::DocumentStart => {
                self.docs.push(Lines::default());
                self.stack.clear();
            }
            Event::Scalar(..)
            | Event::Alias(..)
            | Event::MappingStart(..)
            | Event::SequenceStart(..) => {
                let Some(path) = self.node(&ev, line) else {
                    return;
                };
                self.record(path.clone(), line);
                match ev {
                    Event::MappingStart(..) => self.stack.push(Frame::Map { path, key: None }),
                    Event::SequenceStart(..) => self.stack.push(Frame::Seq { path, next: 0 }),
                    _ => {}
                }
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

/// The lines of every document of `text`; empty if it does not parse (the parse error is
/// reported elsewhere, with its own line).
pub fn index(text: &str) -> Vec<Lines> {
    let mut idx = Index::default();
    let mut parser = Parser::new_from_str(text);
    if parser.load(&mut idx, true).is_err() {
        return Vec::new();
    }
    idx.docs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_of_yaml_and_json() {
        let yaml = "service:\n  name: shop\n  versions:\n    - name: v1\n      endpoints:\n        - 10.0.0.1:80\n        - nope\nrevision: 3\n---\nname: blog\n";
        let docs = index(yaml);
        assert_eq!(docs.len(), 2);
        let d = &docs[0];
        assert_eq!(d.line_of("service.name"), Some(2));
        assert_eq!(d.line_of("service.versions[0].endpoints[1]"), Some(7));
        assert_eq!(
            d.line_of("service.versions[0].timeout_ms"),
            Some(4),
            "the enclosing version"
        );
        assert_eq!(d.line_of("revision"), Some(8));
        assert_eq!(docs[1].line_of("name"), Some(10));
        let json =
            "[\n {\"name\": \"a\",\n  \"versions\": [{\"name\": \"v1\"}]},\n {\"name\": \"b\"}\n]";
        let docs = index(json);
        assert_eq!(docs[0].line_of("[0].versions[0].name"), Some(3));
        assert_eq!(docs[0].line_of("[1].name"), Some(4));
        assert!(index("a: [").is_empty());
    }
}

//! The only module that parses YAML.
//!
//! serde_yaml turns a file into the typed structs of `raw.rs` and reports
//! structural errors (syntax, unknown keys, wrong types) with their location.
//! serde_yaml keeps no positions once parsing is done, so a second, event-level
//! pass (saphyr-parser) records where every field sits; later validation steps
//! ask that index for the line and column of a field path. Swapping the YAML
//! library means changing this file only.

use std::collections::HashMap;
use std::path::Path;

use saphyr_parser::{Event, Parser, ScalarStyle};
use serde::de::DeserializeOwned;

use super::diagnostic::{Diagnostic, did_you_mean};

/// Where each field of one file sits, keyed by dotted path (`requests.tag.path`,
/// `order.lines.0`). Positions are 1-based line and column.
#[derive(Debug, Clone, Default)]
pub struct SpanIndex {
    values: HashMap<String, FieldSpan>,
}

#[derive(Debug, Clone, Copy)]
struct FieldSpan {
    line: usize,
    col: usize,
    /// A `|` or `>` block scalar (positioned at its first content line).
    block: bool,
}

impl SpanIndex {
    /// Line and column of the field, or of its nearest ancestor that exists
    /// (a missing field is reported where it should have been written).
    pub fn locate(&self, path: &str) -> (usize, usize) {
        let mut p = path;
        loop {
            if let Some(s) = self.values.get(p) {
                return (s.line, s.col);
            }
            match p.rfind('.') {
                Some(i) => p = &p[..i],
                None => return self.values.get("").map_or((1, 1), |s| (s.line, s.col)),
            }
        }
    }

    /// Position of line `line` (1-based) of a multi-line string value, for
    /// errors inside templates and scripts embedded in YAML.
    pub fn locate_within(&self, path: &str, line: usize, col: usize) -> (usize, usize) {
        match self.values.get(path) {
            // A block scalar's position is that of its first content line.
            Some(s) if s.block => (s.line + line.saturating_sub(1), s.col + col.saturating_sub(1)),
            Some(s) if line <= 1 => (s.line, s.col + col.saturating_sub(1)),
            Some(s) => (s.line + line - 1, col),
            None => self.locate(path),
        }
    }
}

/// A parsed file: the typed value and where each of its fields was written.
pub struct Parsed<T> {
    pub value: T,
    pub spans: SpanIndex,
}

/// Parse one YAML file into `T`, or one diagnostic naming file, line and column.
pub fn parse<T: DeserializeOwned>(file: &Path, text: &str) -> Result<Parsed<T>, Diagnostic> {
    if text.trim().is_empty() || text.lines().all(|l| l.trim().is_empty() || l.trim_start().starts_with('#')) {
        return Err(Diagnostic::new(file, (1, 1), "", "the file is empty; expected a YAML mapping"));
    }
    let spans = index_spans(file, text)?;
    match serde_yaml::from_str::<T>(text) {
        Ok(value) => Ok(Parsed { value, spans }),
        Err(err) => Err(structural_error(file, &err)),
    }
}

/// Turn a serde_yaml error into a diagnostic, adding "did you mean" for unknown keys.
fn structural_error(file: &Path, err: &serde_yaml::Error) -> Diagnostic {
    let (line, col) = err.location().map_or((1, 1), |l| (l.line(), l.column()));
    let mut text = err.to_string();
    if let Some(i) = text.rfind(" at line ") {
        text.truncate(i);
    }
    // serde_yaml prefixes nested errors with the field path: "a.b: message".
    let (field, message) = match text.split_once(": ") {
        Some((f, m)) if !f.contains(' ') => (f.to_string(), m.to_string()),
        _ => (String::new(), text),
    };
    let mut d = Diagnostic::new(file, (line, col), field, message.clone());
    if let Some(help) = suggestion(&message) {
        d = d.with_help(help);
    }
    d
}

/// "unknown field `metod`, expected one of `method`, `path`" → "did you mean `method`?"
fn suggestion(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `").or_else(|| message.strip_prefix("unknown variant `"))?;
    let (unknown, rest) = rest.split_once('`')?;
    let candidates: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    match did_you_mean(unknown, candidates.iter().copied()) {
        Some(best) => Some(format!("did you mean `{best}`?")),
        None if !candidates.is_empty() => Some(format!("expected one of: {}", candidates.join(", "))),
        None => None,
    }
}

enum Frame {
    Mapping { path: String, key: Option<String> },
    Sequence { path: String, next: usize },
}

fn join(parent: &str, child: &str) -> String {
    if parent.is_empty() { child.to_string() } else { format!("{parent}.{child}") }
}

/// Walk the YAML events once and record the position of every value.
fn index_spans(file: &Path, text: &str) -> Result<SpanIndex, Diagnostic> {
    let mut index = SpanIndex::default();
    let mut stack: Vec<Frame> = Vec::new();
    let mut parser = Parser::new_from_str(text);
    while let Some(next) = parser.next_event() {
        let (event, span) = next.map_err(|e| {
            let m = e.marker();
            Diagnostic::new(file, (m.line(), m.col() + 1), "", format!("invalid YAML: {}", e.info()))
        })?;
        let here = FieldSpan { line: span.start.line(), col: span.start.col() + 1, block: false };
        // The path this event's value lives at, if the event is a value.
        let value_path = |stack: &mut Vec<Frame>| -> Option<String> {
            match stack.last_mut() {
                None => Some(String::new()),
                Some(Frame::Sequence { path, next }) => {
                    let p = join(path, &next.to_string());
                    *next += 1;
                    Some(p)
                }
                Some(Frame::Mapping { path, key }) => key.take().map(|k| join(path, &k)),
            }
        };
        match event {
            Event::Scalar(value, style, _, _) => {
                let is_key = matches!(stack.last(), Some(Frame::Mapping { key: None, .. }));
                if is_key {
                    if let Some(Frame::Mapping { key, .. }) = stack.last_mut() {
                        *key = Some(value.into_owned());
                    }
                } else if let Some(p) = value_path(&mut stack) {
                    let block = matches!(style, ScalarStyle::Literal | ScalarStyle::Folded);
                    index.values.entry(p).or_insert(FieldSpan { block, ..here });
                }
            }
            Event::MappingStart(..) => {
                let p = value_path(&mut stack).unwrap_or_default();
                index.values.entry(p.clone()).or_insert(here);
                stack.push(Frame::Mapping { path: p, key: None });
            }
            Event::SequenceStart(..) => {
                let p = value_path(&mut stack).unwrap_or_default();
                index.values.entry(p.clone()).or_insert(here);
                stack.push(Frame::Sequence { path: p, next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
            }
            Event::Alias(_) => {
                value_path(&mut stack);
            }
            _ => {}
        }
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Req {
        method: String,
        path: String,
    }

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Doc {
        name: String,
        requests: std::collections::BTreeMap<String, Req>,
    }

    #[test]
    fn unknown_key_names_line_column_and_suggestion() {
        let text = "name: x\nrequests:\n  tag:\n    metod: GET\n    path: /x\n";
        let err = parse::<Doc>(Path::new("c.yaml"), text).err().unwrap();
        assert_eq!((err.line, err.col), (4, 5), "{err}");
        assert_eq!(err.help.as_deref(), Some("did you mean `method`?"), "{err}");
    }

    #[test]
    fn index_finds_nested_fields_and_sequence_items() {
        let text = "name: x\nrequests:\n  tag:\n    method: GET\n    path: |\n      /a\n      /b\nlist:\n  - a\n  - b\n";
        let spans = index_spans(Path::new("c.yaml"), text).unwrap();
        assert_eq!(spans.locate("requests.tag.method"), (4, 13));
        assert_eq!(spans.locate("list.1"), (10, 5));
        assert_eq!(spans.locate("requests.tag.nothing"), (4, 5));
        assert_eq!(spans.locate_within("requests.tag.path", 2, 3), (7, 9));
    }

    #[test]
    fn syntax_error_has_a_position() {
        let err = parse::<Doc>(Path::new("c.yaml"), "name: [x\nrequests: {}\n").err().unwrap();
        assert!(err.line >= 1 && err.message.contains("YAML"), "{err}");
    }

    #[test]
    fn empty_file_is_reported() {
        let err = parse::<Doc>(Path::new("c.yaml"), "# only a comment\n").err().unwrap();
        assert!(err.message.contains("empty"));
    }
}

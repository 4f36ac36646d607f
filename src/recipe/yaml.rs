//! The one YAML loader: parses with `saphyr` (the maintained successor of yaml-rust) into a
//! JSON value plus a map from JSON pointer to source position, so that every later check (schema
//! and semantic) can name the file, line and column of what it complains about.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};
use serde_json::{Map, Number, Value};

/// A problem in an input file, with its position (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

/// Source positions of every node, keyed by JSON pointer (`/provision/0/run`). Keys of a
/// mapping are also recorded under `pointer + "#key"` so "unknown key" errors point at the key.
#[derive(Debug, Default, Clone)]
pub struct Positions {
    map: HashMap<String, (usize, usize)>,
}

impl Positions {
    /// Position of the node at `pointer`, or of its nearest recorded ancestor.
    pub fn get(&self, pointer: &str) -> (usize, usize) {
        let mut p = pointer.to_string();
        loop {
            if let Some(pos) = self.map.get(&p) {
                return *pos;
            }
            match p.rfind('/') {
                Some(i) => p.truncate(i),
                None => return (1, 1),
            }
        }
    }

    pub fn key(&self, pointer: &str) -> (usize, usize) {
        self.map
            .get(&format!("{pointer}#key"))
            .copied()
            .unwrap_or_else(|| self.get(pointer))
    }
}

/// A loaded YAML document.
#[derive(Debug, Clone)]
pub struct Document {
    pub file: PathBuf,
    pub value: Value,
    pub positions: Positions,
}

impl Document {
    pub fn diag(&self, pointer: &str, message: impl Into<String>) -> Diagnostic {
        let (line, column) = self.positions.get(pointer);
        Diagnostic {
            file: self.file.clone(),
            line,
            column,
            message: message.into(),
        }
    }

    pub fn diag_key(&self, pointer: &str, message: impl Into<String>) -> Diagnostic {
        let (line, column) = self.positions.key(pointer);
        Diagnostic {
            file: self.file.clone(),
            line,
            column,
            message: message.into(),
        }
    }
}

/// Escape one JSON pointer segment (RFC 6901).
pub fn pointer_segment(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

/// Read and parse `path`. Exactly one document is expected.
pub fn load_file(path: &Path) -> Result<Document, Vec<Diagnostic>> {
    let text = crate::hostfile::read_regular(path, MAX_BYTES as u64)
        .and_then(|b| String::from_utf8(b).map_err(|_| std::io::Error::other("not UTF-8 text")))
        .map_err(|e| {
            vec![Diagnostic {
                file: path.to_path_buf(),
                line: 1,
                column: 1,
                message: format!("cannot read file: {e}"),
            }]
        })?;
    load_str(path, &text)
}

/// The largest recipe or element file kiln reads.
pub const MAX_BYTES: usize = 1 << 20;
/// The deepest nesting of sequences and mappings a recipe may have.
pub const MAX_DEPTH: usize = 64;

/// Refuse, from the parser's events alone (nothing is built yet), what would make building the
/// tree blow up: aliases (a few hundred bytes of them expand to gigabytes) and nesting deep
/// enough to overflow the stack.
fn precheck(text: &str) -> Result<(), (usize, usize, String)> {
    use saphyr_parser::{Event, Parser};
    if text.len() > MAX_BYTES {
        return Err((
            1,
            1,
            format!("the file is larger than {} KiB", MAX_BYTES >> 10),
        ));
    }
    let mut depth = 0usize;
    for ev in Parser::new_from_str(text) {
        // Syntax errors are reported by the loader, with its own message.
        let Ok((ev, span)) = ev else { return Ok(()) };
        let at = (span.start.line(), span.start.col() + 1);
        match ev {
            Event::Alias(_) => {
                return Err((
                    at.0,
                    at.1,
                    "YAML aliases (*name) are not supported: repeat the value, or use vars".into(),
                ))
            }
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err((at.0, at.1, format!("nested deeper than {MAX_DEPTH} levels")));
                }
            }
            Event::SequenceEnd | Event::MappingEnd => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Parse YAML text; `path` is only used in diagnostics.
pub fn load_str(path: &Path, text: &str) -> Result<Document, Vec<Diagnostic>> {
    let diag = |line: usize, column: usize, message: String| Diagnostic {
        file: path.to_path_buf(),
        line,
        column,
        message,
    };
    precheck(text).map_err(|(l, c, m)| vec![diag(l, c, m)])?;
    let docs = MarkedYaml::load_from_str(text).map_err(|e| {
        let m = e.marker();
        vec![diag(
            m.line(),
            m.col() + 1,
            format!("invalid YAML: {}", e.info()),
        )]
    })?;
    let root = match docs.len() {
        0 => {
            return Err(vec![diag(
                1,
                1,
                "the file is empty: expected a mapping".into(),
            )])
        }
        1 => &docs[0],
        _ => {
            return Err(vec![diag(
                docs[1].span.start.line(),
                1,
                "expected exactly one YAML document, found several".into(),
            )])
        }
    };
    let mut positions = Positions::default();
    let mut errors = Vec::new();
    let value = convert(root, "", &mut positions, &mut errors, path);
    if errors.is_empty() {
        Ok(Document {
            file: path.to_path_buf(),
            value,
            positions,
        })
    } else {
        Err(errors)
    }
}

fn convert(
    node: &MarkedYaml,
    pointer: &str,
    positions: &mut Positions,
    errors: &mut Vec<Diagnostic>,
    file: &Path,
) -> Value {
    let start = node.span.start;
    positions
        .map
        .insert(pointer.to_string(), (start.line(), start.col() + 1));
    match &node.data {
        YamlData::Value(s) => scalar(s),
        YamlData::Representation(raw, _, _) => Value::String(raw.to_string()),
        YamlData::Sequence(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| convert(item, &format!("{pointer}/{i}"), positions, errors, file))
                .collect(),
        ),
        YamlData::Mapping(map) => {
            let mut out = Map::new();
            for (k, v) in map.iter() {
                let key = match &k.data {
                    YamlData::Value(Scalar::String(s)) => s.to_string(),
                    YamlData::Value(other) => match scalar(other) {
                        Value::String(s) => s,
                        v => v.to_string(),
                    },
                    _ => {
                        errors.push(Diagnostic {
                            file: file.to_path_buf(),
                            line: k.span.start.line(),
                            column: k.span.start.col() + 1,
                            message: "mapping keys must be plain strings".into(),
                        });
                        continue;
                    }
                };
                let child = format!("{pointer}/{}", pointer_segment(&key));
                positions.map.insert(
                    format!("{child}#key"),
                    (k.span.start.line(), k.span.start.col() + 1),
                );
                let value = convert(v, &child, positions, errors, file);
                out.insert(key, value);
            }
            Value::Object(out)
        }
        YamlData::Tagged(_, inner) => convert(inner, pointer, positions, errors, file),
        YamlData::Alias(_) | YamlData::BadValue => {
            errors.push(Diagnostic {
                file: file.to_path_buf(),
                line: start.line(),
                column: start.col() + 1,
                message: "unsupported or invalid YAML value".into(),
            });
            Value::Null
        }
    }
}

fn scalar(s: &Scalar) -> Value {
    match s {
        Scalar::Null => Value::Null,
        Scalar::Boolean(b) => Value::Bool(*b),
        Scalar::Integer(i) => Value::Number((*i).into()),
        Scalar::FloatingPoint(f) => Number::from_f64(f.into_inner())
            .map(Value::Number)
            .unwrap_or(Value::Null),
        Scalar::String(s) => Value::String(s.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_depth_and_size_are_refused_before_the_tree_is_built() {
        // Billion laughs inside complex keys: refused at the first alias, at once.
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 0..9 {
            bomb.push_str(&format!(
                "b{i}: &b{i} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n",
                p = if i == 0 {
                    "a".to_string()
                } else {
                    format!("b{}", i - 1)
                }
            ));
        }
        bomb.push_str("? [*b8, *b8]\n: x\n");
        let t = std::time::Instant::now();
        let e = load_str(Path::new("b.yaml"), &bomb).unwrap_err();
        assert!(e[0].message.contains("aliases"), "{:?}", e);
        assert_eq!(e[0].line, 2);
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
        // Block sequences have no limit of their own in the parser.
        let deep = "- ".repeat(10_000) + "x\n";
        let e = load_str(Path::new("d.yaml"), &deep).unwrap_err();
        assert!(e[0].message.contains("nested deeper than 64"), "{:?}", e);
        let flow = "[".repeat(10_000) + &"]".repeat(10_000);
        assert!(load_str(Path::new("f.yaml"), &flow).is_err());
        let big = format!("a: \"{}\"\n", "x".repeat(MAX_BYTES));
        assert!(load_str(Path::new("s.yaml"), &big).unwrap_err()[0]
            .message
            .contains("larger than"));
    }

    #[test]
    fn positions_point_at_values_and_keys() {
        let doc = load_str(
            Path::new("r.yaml"),
            "name: demo\nvm:\n  memory: 2G\n  vcpus: 2\nlist:\n  - a\n  - b: 1\n",
        )
        .unwrap();
        assert_eq!(doc.positions.get("/vm/vcpus"), (4, 10));
        assert_eq!(doc.positions.key("/vm/vcpus"), (4, 3));
        assert_eq!(doc.positions.get("/list/1/b"), (7, 8));
        // Unknown pointers fall back to the nearest ancestor.
        assert_eq!(doc.positions.get("/vm/nothing"), (3, 3));
        assert_eq!(doc.value["vm"]["vcpus"], 2);
        assert_eq!(doc.value["vm"]["memory"], "2G");
    }

    #[test]
    fn quoted_numbers_stay_strings() {
        let doc = load_str(Path::new("r.yaml"), "version: \"1.0\"\nn: 1.0\n").unwrap();
        assert_eq!(doc.value["version"], "1.0");
        assert!(doc.value["n"].is_f64());
    }

    #[test]
    fn syntax_errors_have_positions() {
        let err = load_str(Path::new("bad.yaml"), "a: 1\nb: [1, 2\n").unwrap_err();
        assert_eq!(err.len(), 1);
        assert!(err[0].to_string().starts_with("bad.yaml:"), "{}", err[0]);
        assert!(err[0].message.contains("invalid YAML"));
    }

    #[test]
    fn duplicate_keys_are_rejected() {
        let err = load_str(Path::new("d.yaml"), "a: 1\na: 2\n").unwrap_err();
        assert!(err[0].line >= 1, "{:?}", err);
    }
}

//! Checks a loaded YAML document against the JSON Schema generated from kiln's own types
//! (the same schema `kiln schema` prints), collecting every error with its position instead of
//! stopping at the first one as serde would. One source of truth: the Rust types.

use serde_json::Value;

use super::yaml::{pointer_segment, Diagnostic, Document};
use crate::suggest::suggest;

/// Validate `doc` against `schema`; returns all problems found.
pub fn check(doc: &Document, schema: &Value) -> Vec<Diagnostic> {
    findings(doc, schema).into_iter().map(|f| f.diag).collect()
}

/// One schema problem and the node it is about.
#[derive(Debug, Clone)]
pub struct Finding {
    pub diag: Diagnostic,
    /// JSON pointer of the offending node (for an unknown key: that key's entry).
    pub pointer: String,
    /// An unknown key: dropping it leaves the rest of the document meaning what it meant.
    pub unknown_key: bool,
}

impl Finding {
    fn at(doc: &Document, ptr: &str, message: impl Into<String>) -> Self {
        Finding {
            diag: doc.diag(ptr, message),
            pointer: ptr.to_string(),
            unknown_key: false,
        }
    }

    fn key(doc: &Document, ptr: &str, message: impl Into<String>) -> Self {
        Finding {
            diag: doc.diag_key(ptr, message),
            pointer: ptr.to_string(),
            unknown_key: true,
        }
    }
}

/// Like [`check`], with the node of each problem.
pub fn findings(doc: &Document, schema: &Value) -> Vec<Finding> {
    let mut out = Vec::new();
    walk(doc, schema, schema, &doc.value, "", &mut out);
    out
}

/// `value` without the nodes the findings are about, so the rest can still be checked for its
/// meaning, and the pointers of what was removed. A bad list item takes its whole list with it
/// (removing one item would renumber its siblings, and so misplace their errors). Findings
/// about the whole document or a missing key cannot be dropped: None.
pub fn without(value: &Value, findings: &[Finding]) -> Option<(Value, Vec<String>)> {
    let mut v = value.clone();
    let mut removed = Vec::new();
    for f in findings {
        if f.diag.message.starts_with("missing required key") {
            return None;
        }
        // The nearest enclosing mapping entry.
        let mut ptr = f.pointer.as_str();
        loop {
            let (parent, _) = ptr.rsplit_once('/')?;
            if v.pointer(parent).is_some_and(Value::is_object) || parent.is_empty() {
                break;
            }
            ptr = parent;
        }
        let (parent, last) = ptr.rsplit_once('/')?;
        let key = last.replace("~1", "/").replace("~0", "~");
        if let Some(Value::Object(m)) = v.pointer_mut(parent) {
            m.remove(&key);
        }
        if !f.unknown_key {
            removed.push(ptr.to_string());
        }
    }
    Some((v, removed))
}

fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    suggest(word, candidates)
        .map(|s| format!(" (did you mean `{s}`?)"))
        .unwrap_or_default()
}

fn resolve<'a>(root: &'a Value, schema: &'a Value) -> &'a Value {
    let mut s = schema;
    // Follow local references ("#/$defs/Name"); schemars only emits those.
    for _ in 0..32 {
        match s.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let ptr = r.trim_start_matches('#');
                match root.pointer(ptr) {
                    Some(target) => s = target,
                    None => return s,
                }
            }
            None => return s,
        }
    }
    s
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing (null)",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "string" => v.is_string(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        _ => true,
    }
}

fn type_name(t: &str) -> &'static str {
    match t {
        "null" => "nothing",
        "boolean" => "a boolean (true/false)",
        "integer" => "an integer",
        "number" => "a number",
        "string" => "a string",
        "array" => "a list",
        "object" => "a mapping",
        _ => "a value",
    }
}

fn types_of(schema: &Value) -> Vec<&str> {
    match schema.get("type") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    }
}

/// Allowed literal values, when the schema is an enum (or a union of consts/enums).
fn literals(root: &Value, schema: &Value) -> Option<Vec<Value>> {
    let schema = resolve(root, schema);
    if let Some(Value::Array(e)) = schema.get("enum") {
        return Some(e.clone());
    }
    if let Some(c) = schema.get("const") {
        return Some(vec![c.clone()]);
    }
    let branches = schema
        .get("oneOf")
        .or_else(|| schema.get("anyOf"))?
        .as_array()?;
    let mut all = Vec::new();
    for b in branches {
        all.extend(literals(root, b)?);
    }
    Some(all)
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn walk(
    doc: &Document,
    root: &Value,
    schema: &Value,
    value: &Value,
    ptr: &str,
    out: &mut Vec<Finding>,
) {
    let schema = resolve(root, schema);
    if schema == &Value::Bool(true) {
        return;
    }
    if schema == &Value::Bool(false) {
        out.push(Finding::at(doc, ptr, "no value is allowed here"));
        return;
    }

    if let Some(lits) = literals(root, schema) {
        if !lits.contains(value) {
            let names: Vec<String> = lits.iter().map(show).collect();
            let found = show(value);
            let hint = did_you_mean(&found, names.iter().map(String::as_str));
            out.push(Finding::at(
                doc,
                ptr,
                format!(
                    "expected one of {}, found `{found}`{hint}",
                    names.join(", ")
                ),
            ));
        }
        return;
    }

    if let Some(branches) = schema
        .get("anyOf")
        .or_else(|| schema.get("oneOf"))
        .and_then(Value::as_array)
    {
        union(doc, root, branches, value, ptr, out);
        return;
    }

    let types = types_of(schema);
    if !types.is_empty() && !types.iter().any(|t| type_matches(t, value)) {
        let expected: Vec<&str> = types
            .iter()
            .filter(|t| **t != "null")
            .map(|t| type_name(t))
            .collect();
        out.push(Finding::at(
            doc,
            ptr,
            format!("expected {}, found {}", expected.join(" or "), kind(value)),
        ));
        return;
    }

    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            if let Some(req) = schema.get("required").and_then(Value::as_array) {
                for r in req.iter().filter_map(Value::as_str) {
                    if !map.contains_key(r) {
                        out.push(Finding::at(doc, ptr, format!("missing required key `{r}`")));
                    }
                }
            }
            for (k, v) in map {
                let child = format!("{ptr}/{}", pointer_segment(k));
                if let Some(s) = props.and_then(|p| p.get(k)) {
                    walk(doc, root, s, v, &child, out);
                    continue;
                }
                match schema.get("additionalProperties") {
                    Some(Value::Bool(false)) => {
                        let known: Vec<&str> = props
                            .map(|p| p.keys().map(String::as_str).collect())
                            .unwrap_or_default();
                        let hint = did_you_mean(k, known.iter().copied());
                        out.push(Finding::key(
                            doc,
                            &child,
                            format!(
                                "unknown key `{k}`{hint}; expected one of: {}",
                                known.join(", ")
                            ),
                        ));
                    }
                    Some(s @ Value::Object(_)) => walk(doc, root, s, v, &child, out),
                    _ => {}
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    walk(doc, root, item_schema, item, &format!("{ptr}/{i}"), out);
                }
            }
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64) {
                if (items.len() as u64) < min {
                    out.push(Finding::at(
                        doc,
                        ptr,
                        format!("expected at least {min} item(s)"),
                    ));
                }
            }
        }
        Value::Number(n) => {
            if let (Some(min), Some(x)) =
                (schema.get("minimum").and_then(Value::as_f64), n.as_f64())
            {
                if x < min {
                    out.push(Finding::at(
                        doc,
                        ptr,
                        format!("expected a number >= {min}, found {n}"),
                    ));
                }
            }
            // schemars states the width of Rust's integer types as a format, not a maximum.
            let max = match schema.get("format").and_then(Value::as_str) {
                Some("uint8") => Some(u64::from(u8::MAX)),
                Some("uint16") => Some(u64::from(u16::MAX)),
                Some("uint32") => Some(u64::from(u32::MAX)),
                _ => None,
            };
            if let Some(max) = max {
                if n.as_u64().is_some_and(|x| x > max)
                    || (n.is_f64() && n.as_f64().is_some_and(|x| x > max as f64))
                {
                    out.push(Finding::at(
                        doc,
                        ptr,
                        format!("expected a number <= {max}, found {n}"),
                    ));
                }
            }
        }
        _ => {}
    }
}

/// Externally tagged enums (`- run: [...]`) are unions of single-key objects: report the
/// unknown tag with the list of known ones instead of every branch's complaint.
fn union(
    doc: &Document,
    root: &Value,
    branches: &[Value],
    value: &Value,
    ptr: &str,
    out: &mut Vec<Finding>,
) {
    let mut results = Vec::new();
    for b in branches {
        let mut errs = Vec::new();
        walk(doc, root, b, value, ptr, &mut errs);
        if errs.is_empty() {
            return;
        }
        results.push((resolve(root, b), errs));
    }

    let tags: Option<Vec<&str>> = results
        .iter()
        .map(|(s, _)| {
            let req = s.get("required")?.as_array()?;
            (types_of(s) == ["object"] && req.len() == 1)
                .then(|| req[0].as_str())
                .flatten()
        })
        .collect();
    if let (Some(tags), Value::Object(map)) = (&tags, value) {
        if map.len() != 1 {
            out.push(Finding::at(
                doc,
                ptr,
                format!(
                    "expected a mapping with exactly one of the keys {}",
                    tags.join(", ")
                ),
            ));
            return;
        }
        let (k, _) = map.iter().next().unwrap();
        if let Some(i) = tags.iter().position(|t| t == k) {
            out.append(&mut results[i].1);
        } else {
            let child = format!("{ptr}/{}", pointer_segment(k));
            let hint = did_you_mean(k, tags.iter().copied());
            out.push(Finding::key(
                doc,
                &child,
                format!(
                    "unknown key `{k}`{hint}; expected one of: {}",
                    tags.join(", ")
                ),
            ));
        }
        return;
    }

    // Prefer the branch whose type matches the value: its errors are the useful ones.
    let matching: Vec<usize> = results
        .iter()
        .enumerate()
        .filter(|(_, (s, _))| {
            let t = types_of(s);
            if !t.is_empty() {
                t.iter().any(|t| type_matches(t, value))
            } else if literals(root, s).is_some() {
                // An enum of scalars cannot be what a mapping or list was meant to be.
                !value.is_object() && !value.is_array()
            } else {
                true
            }
        })
        .map(|(i, _)| i)
        .collect();
    if let Some(&i) = matching.iter().min_by_key(|&&i| results[i].1.len()) {
        out.append(&mut results[i].1);
        return;
    }
    let mut expected: Vec<&str> = results
        .iter()
        .flat_map(|(s, _)| types_of(s))
        .filter(|t| *t != "null")
        .map(type_name)
        .collect();
    expected.dedup();
    out.push(Finding::at(
        doc,
        ptr,
        format!("expected {}, found {}", expected.join(" or "), kind(value)),
    ));
}

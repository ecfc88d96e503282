//! JSON values written as block-style YAML, for the OpenSLO export. Strings that could read
//! as anything but a string are written double-quoted with JSON escapes, which YAML reads
//! the same way; everything else is plain. Small enough to not need a YAML library.

use serde_json::Value;

/// `docs` as a multi-document YAML stream.
pub fn documents(docs: &[Value]) -> String {
    let mut out = String::new();
    for doc in docs {
        out.push_str("---\n");
        out.push_str(&to_yaml(doc));
    }
    out
}

/// One value as a YAML document body.
pub fn to_yaml(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Object(_) | Value::Array(_) => block(&mut out, v, 0),
        scalar => {
            out.push_str(&inline(scalar));
            out.push('\n');
        }
    }
    out
}

fn is_empty_collection(v: &Value) -> bool {
    matches!(v, Value::Object(m) if m.is_empty()) || matches!(v, Value::Array(a) if a.is_empty())
}

/// A mapping or sequence, each line indented by `indent` spaces.
fn block(out: &mut String, v: &Value, indent: usize) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(map) => {
            for (k, val) in map {
                out.push_str(&pad);
                out.push_str(&string(k));
                out.push(':');
                if is_empty_collection(val) || !matches!(val, Value::Object(_) | Value::Array(_)) {
                    out.push(' ');
                    out.push_str(&inline(val));
                    out.push('\n');
                } else {
                    out.push('\n');
                    block(out, val, indent + 2);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                if is_empty_collection(item) || !matches!(item, Value::Object(_) | Value::Array(_))
                {
                    out.push_str(&pad);
                    out.push_str("- ");
                    out.push_str(&inline(item));
                    out.push('\n');
                } else {
                    // The item's first line goes after the dash; the rest keep its indent.
                    let mut nested = String::new();
                    block(&mut nested, item, indent + 2);
                    let first = nested.get(indent + 2..).unwrap_or("");
                    out.push_str(&pad);
                    out.push_str("- ");
                    out.push_str(first);
                }
            }
        }
        scalar => {
            out.push_str(&pad);
            out.push_str(&inline(scalar));
            out.push('\n');
        }
    }
}

fn inline(v: &Value) -> String {
    match v {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => string(s),
        Value::Object(m) if m.is_empty() => "{}".to_owned(),
        Value::Array(a) if a.is_empty() => "[]".to_owned(),
        other => other.to_string(), // flow style (JSON is YAML); not produced by `block`
    }
}

/// Plain when it cannot be mistaken for another type or for YAML syntax, else quoted.
fn string(s: &str) -> String {
    let plain_chars = s.chars().all(|c| {
        c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | ' ' | '(' | ')' | ',')
    });
    let reserved = matches!(
        s.to_ascii_lowercase().as_str(),
        "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n" | "null" | "~"
    );
    let looks_numeric = s.parse::<f64>().is_ok() || s.starts_with(['.', '-', '+']);
    let edges_ok = !s.starts_with(' ') && !s.ends_with(' ');
    if !s.is_empty() && plain_chars && !reserved && !looks_numeric && edges_ok {
        s.to_owned()
    } else {
        serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn mappings_and_sequences_are_written_in_block_style() {
        // Keys in alphabetical order, so the test holds with or without serde_json's
        // preserve_order feature.
        let doc = json!({
            "apiVersion": "openslo/v1",
            "spec": {
                "empty": [],
                "tags": ["a", "b"],
                "target": 0.995,
                "timeWindow": [{"duration": "30d", "isRolling": true}],
            },
        });
        assert_eq!(
            to_yaml(&doc),
            "apiVersion: openslo/v1\n\
             spec:\n  empty: []\n  tags:\n    - a\n    - b\n  target: 0.995\n  \
             timeWindow:\n    - duration: 30d\n      isRolling: true\n"
        );
    }

    #[test]
    fn strings_that_would_read_as_something_else_are_quoted() {
        assert_eq!(string("true"), "\"true\"");
        assert_eq!(string("1.5"), "\"1.5\"");
        assert_eq!(string("sum(x{a=\"b\"})"), "\"sum(x{a=\\\"b\\\"})\"");
        assert_eq!(string("a: b"), "\"a: b\"");
        assert_eq!(string(""), "\"\"");
        assert_eq!(string("fleet-in-service"), "fleet-in-service");
        assert_eq!(string("-x"), "\"-x\"");
    }

    #[test]
    fn documents_are_separated() {
        let out = documents(&[json!({"a": 1}), json!({"b": null})]);
        assert_eq!(out, "---\na: 1\n---\nb: null\n");
    }
}

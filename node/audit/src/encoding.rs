//! The byte encodings that hashes and signatures cover: length-prefixed fields after a domain
//! prefix, and canonical JSON for the free-form `fields` of an entry.
//!
//! # Canonical JSON
//!
//! JSON text has many spellings of one value (key order, whitespace, escapes, `1` and `1.0`),
//! so the hash never covers JSON as received. It covers this one spelling:
//!
//! - no whitespace anywhere;
//! - object members sorted by key, comparing the keys' UTF-8 bytes; duplicate keys cannot
//!   occur (a parsed object keeps one of them);
//! - strings in double quotes; `"` and `\` escaped as `\"` and `\\`; U+0008, U+0009, U+000A,
//!   U+000C and U+000D as `\b`, `\t`, `\n`, `\f`, `\r`; every other character below U+0020 as
//!   `\u00xx` with lowercase hex digits; every other character as its UTF-8 bytes;
//! - integers in decimal without leading zeros or a plus sign (they must fit `i64` or `u64`);
//!   numbers with a fraction or an exponent are refused: JSON tools disagree on how to print
//!   them, and nothing in the audit log needs them (amounts are satoshis);
//! - `true`, `false`, `null`;
//! - at most [`MAX_JSON_DEPTH`] nested arrays and objects.

use serde_json::Value;

use crate::entry::FormatError;

/// Deepest nesting of arrays and objects the canonical encoding accepts.
pub const MAX_JSON_DEPTH: usize = 32;

/// Appends `u32 BE length || bytes` fields after a domain prefix.
pub(crate) struct Encoder {
    out: Vec<u8>,
}

impl Encoder {
    pub(crate) fn new(domain: &[u8]) -> Self {
        Encoder {
            out: domain.to_vec(),
        }
    }

    pub(crate) fn field(&mut self, name: &'static str, bytes: &[u8]) -> Result<(), FormatError> {
        let len = u32::try_from(bytes.len()).map_err(|_| FormatError::TooLong {
            field: name,
            len: bytes.len(),
        })?;
        self.out.extend_from_slice(&len.to_be_bytes());
        self.out.extend_from_slice(bytes);
        Ok(())
    }

    pub(crate) fn finish(self) -> Vec<u8> {
        self.out
    }
}

/// The canonical JSON text of `value` (see the [module docs](self)).
pub fn canonical_json(value: &Value) -> Result<String, FormatError> {
    let mut out = String::new();
    write_value(&mut out, value, "", 0)?;
    Ok(out)
}

fn write_value(
    out: &mut String,
    value: &Value,
    path: &str,
    depth: usize,
) -> Result<(), FormatError> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.push_str(&i.to_string());
            } else if let Some(u) = n.as_u64() {
                out.push_str(&u.to_string());
            } else {
                return Err(FormatError::NotAnInteger {
                    path: display_path(path),
                });
            }
        }
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            let depth = nest(depth, path)?;
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item, &format!("{path}[{i}]"), depth)?;
            }
            out.push(']');
        }
        Value::Object(map) => {
            let depth = nest(depth, path)?;
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (key, item)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, key);
                out.push(':');
                write_value(out, item, &format!("{path}.{key}"), depth)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

fn nest(depth: usize, path: &str) -> Result<usize, FormatError> {
    let depth = depth + 1;
    if depth > MAX_JSON_DEPTH {
        return Err(FormatError::TooDeep {
            path: display_path(path),
        });
    }
    Ok(depth)
}

fn display_path(path: &str) -> String {
    if path.is_empty() {
        "fields".to_owned()
    } else {
        format!("fields{path}")
    }
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn keys_are_sorted_and_whitespace_dropped() {
        let a: Value = serde_json::from_str(
            r#"{ "b": 1, "a": [true, null, "x"], "c": {"z": -3, "y": 18446744073709551615} }"#,
        )
        .unwrap();
        assert_eq!(
            canonical_json(&a).unwrap(),
            r#"{"a":[true,null,"x"],"b":1,"c":{"y":18446744073709551615,"z":-3}}"#
        );
    }

    #[test]
    fn strings_escape_exactly_the_specified_characters() {
        let v = json!("q\"b\\\u{8}\t\n\u{c}\r\u{1}\u{1f}é/€\u{7f}");
        assert_eq!(
            canonical_json(&v).unwrap(),
            "\"q\\\"b\\\\\\b\\t\\n\\f\\r\\u0001\\u001fé/€\u{7f}\""
        );
        // The canonical text parses back to the same value.
        let back: Value = serde_json::from_str(&canonical_json(&v).unwrap()).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn floats_are_refused_with_their_path() {
        let err = canonical_json(&json!({"a": [1, {"b": 1.5}]})).unwrap_err();
        assert_eq!(
            err,
            FormatError::NotAnInteger {
                path: "fields.a[1].b".into()
            }
        );
    }

    #[test]
    fn nesting_is_bounded() {
        let mut v = json!(1);
        for _ in 0..MAX_JSON_DEPTH {
            v = json!([v]);
        }
        assert!(canonical_json(&v).is_ok());
        assert!(matches!(
            canonical_json(&json!([v])),
            Err(FormatError::TooDeep { .. })
        ));
    }

    #[test]
    fn fields_carry_their_length() {
        let mut a = Encoder::new(b"d\0");
        a.field("x", b"ab").unwrap();
        a.field("y", b"c").unwrap();
        let mut b = Encoder::new(b"d\0");
        b.field("x", b"a").unwrap();
        b.field("y", b"bc").unwrap();
        assert_ne!(a.finish(), b.finish());
    }
}

//! The few Python built-ins whose exact behaviour decides what a hint matches: `str.strip`
//! and `str.lower`, `urllib.parse.quote`, `float()` and `int()` of a string, `str()` and
//! `repr()` of a JSON value (for IPA's error texts) and truthiness. `ast.literal_eval`
//! lives in `literal`.
//!
//! Nothing here knows about hints; `parse`, `specs` and the matcher call these so that
//! the Python semantics live in one place.

use serde_json::Value;

/// Python's `str.isspace()` for one character (Rust's `is_whitespace` plus the four
/// information separators U+001C..U+001F, which Python also counts as whitespace).
pub fn is_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.strip()` without arguments.
pub fn strip(s: &str) -> &str {
    s.trim_matches(is_space)
}

/// Python's `urllib.parse.quote(s)` (safe `/`): UTF-8 bytes other than ASCII letters,
/// digits and `_.-~/` become `%XX` with upper-case hex.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Inverse of [`quote`]: `%XX` sequences decoded; `None` when the result is not UTF-8.
pub fn unquote(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Python's `float(s)` for a string; `None` where Python raises `ValueError`.
pub fn float(s: &str) -> Option<f64> {
    let t = strip(s);
    if !underscores_between_digits(t) {
        return None;
    }
    let cleaned: String = t.chars().filter(|c| *c != '_').collect();
    // Rust and Python agree on the rest: signs, `1.`, `.5`, exponents, inf/nan words.
    cleaned.parse::<f64>().ok()
}

/// Python's `int(s)` of a decimal string: `None` when it would raise, else whether the
/// integer is > 0 (the only property hint validation needs; Python ints never overflow).
pub fn int_is_positive(s: &str) -> Option<bool> {
    let t = strip(s);
    let (negative, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    if digits.is_empty()
        || !digits.chars().all(|c| c.is_ascii_digit() || c == '_')
        || !underscores_between_digits(digits)
    {
        return None;
    }
    let nonzero = digits.chars().any(|c| matches!(c, '1'..='9'));
    Some(nonzero && !negative)
}

/// PEP 515: an underscore is only allowed between two digits.
fn underscores_between_digits(s: &str) -> bool {
    let chars: Vec<char> = s.chars().collect();
    chars.iter().enumerate().all(|(i, c)| {
        *c != '_'
            || (i > 0
                && chars[i - 1].is_ascii_digit()
                && chars.get(i + 1).is_some_and(char::is_ascii_digit))
    })
}

/// Python's truthiness of a JSON value (`None`, `False`, `0`, `""`, `[]`, `{}` are false).
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// Python's `str()` of the value `json.loads` would give (what `%s` prints).
pub fn str_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => repr_of(other),
    }
}

/// Python's `repr()` of the value `json.loads` would give (dicts keep the map's order).
pub fn repr_of(v: &Value) -> String {
    match v {
        Value::Null => "None".to_owned(),
        Value::Bool(true) => "True".to_owned(),
        Value::Bool(false) => "False".to_owned(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => repr_str(s),
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(repr_of).collect();
            format!("[{}]", inner.join(", "))
        }
        Value::Object(map) => {
            let inner: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}: {}", repr_str(k), repr_of(v)))
                .collect();
            format!("{{{}}}", inner.join(", "))
        }
    }
}

/// Python's `repr()` of a string: single quotes unless the text holds `'` and no `"`.
fn repr_str(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quote_matches_python() {
        assert_eq!(quote("foo model"), "foo%20model");
        assert_eq!(quote("1:0:0:0"), "1%3A0%3A0%3A0");
        assert_eq!(quote("/dev/disk/by-path/a:b"), "/dev/disk/by-path/a%3Ab");
        assert_eq!(quote("a_b.c-d~e"), "a_b.c-d~e");
        assert_eq!(quote("é<>"), "%C3%A9%3C%3E");
        assert_eq!(unquote("%C3%A9%3C%3E%2"), Some("é<>%2".to_owned()));
    }

    #[test]
    fn float_and_int_like_python() {
        let floats = [
            ("3", Some(3.0)),
            (" 3.0 ", Some(3.0)),
            ("1_000.5", Some(1000.5)),
            ("1__0", None),
            ("_1", None),
            ("1e3", Some(1000.0)),
            (".5", Some(0.5)),
            ("-inf", Some(f64::NEG_INFINITY)),
            ("abc", None),
            ("%5B", None),
            ("", None),
        ];
        for (s, want) in floats {
            assert_eq!(float(s), want, "{s:?}");
        }
        let ints = [
            ("12345", Some(true)),
            ("+5", Some(true)),
            ("0", Some(false)),
            ("-123", Some(false)),
            ("007", Some(true)),
            ("1_0", Some(true)),
            ("1.5", None),
            ("not-int", None),
            ("[", None),
            ("", None),
        ];
        for (s, want) in ints {
            assert_eq!(int_is_positive(s), want, "{s:?}");
        }
    }

    #[test]
    fn repr_like_python() {
        let v = json!({"size": ">= 10", "rotational": true, "x": null, "l": [1, "it's"]});
        assert_eq!(
            repr_of(&v),
            "{'l': [1, \"it's\"], 'rotational': True, 'size': '>= 10', 'x': None}"
        );
        assert_eq!(str_of(&json!("a b")), "a b");
        assert_eq!(str_of(&json!(123)), "123");
        assert!(!truthy(&json!({})) && !truthy(&json!("")) && truthy(&json!({"a": 1})));
    }
}

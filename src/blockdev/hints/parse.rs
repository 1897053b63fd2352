//! Parsing and normalising a root-device hint set (IPA: `device_hints.py`,
//! `parse_root_device_hints`), with IPA's validation messages.
//!
//! String hints are trimmed, lower-cased, split into operator and values, each value
//! URL-quoted, and given `s== ` when no operator was written. `size` values must be
//! positive integers; its expression is kept as written (IPA does not lower-case it)
//! with `== ` prepended when it has no operator. `rotational` becomes a bool.

use serde_json::{Map, Value};

use super::py;
use super::specs;
use super::{HintKind, HintName, HintSpec, RootDeviceHints};

/// A hint set that IPA would reject (its `ValueError` texts, where IPA has one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HintError {
    /// Unknown hint names.
    #[error("The hints \"{invalid}\" are invalid. Valid hints are: \"{valid}\"")]
    UnknownHints {
        /// The unknown names, comma-separated.
        invalid: String,
        /// Every valid name, comma-separated, in IPA's order.
        valid: String,
    },
    /// A string hint given as another JSON type.
    #[error("Root device hint \"{name}\" is not a string value. Hint expression: {expression}")]
    NotString {
        /// The hint.
        name: &'static str,
        /// The value as Python prints it.
        expression: String,
    },
    /// A `size` value that is not an integer.
    #[error("Root device hint \"{name}\" is not an integer value. Current value: {expression}")]
    NotInteger {
        /// The hint.
        name: &'static str,
        /// The whole expression as Python prints it.
        expression: String,
    },
    /// A `size` value that is zero or negative.
    #[error(
        "Root device hint \"{name}\" should be a positive integer. Current value: {expression}"
    )]
    NotPositive {
        /// The hint.
        name: &'static str,
        /// The whole expression as Python prints it.
        expression: String,
    },
    /// A `rotational` value that is not a boolean word.
    #[error("Root device hint \"{name}\" is not a Boolean value. Current value: {expression}")]
    NotBoolean {
        /// The hint.
        name: &'static str,
        /// The value as Python prints it.
        expression: String,
    },
    /// An empty or blank expression.
    #[error("Root device hint {name} expression is empty")]
    Empty {
        /// The hint.
        name: &'static str,
    },
    /// An expression the grammar cannot parse, such as a lone operator (IPA fails with
    /// an unhandled parser exception here).
    #[error("Root device hint {name} expression {expression:?} cannot be parsed")]
    Syntax {
        /// The hint.
        name: &'static str,
        /// The expression as given.
        expression: String,
    },
    /// The hints are not a JSON object (IPA fails with a Python type error here).
    #[error("Root device hints must be an object, got {0}")]
    NotAnObject(String),
}

/// Why a value could not be normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NormalizeError {
    /// Blank after trimming.
    Empty,
    /// Not parseable by the grammar.
    Syntax,
}

/// Operator (empty when none was written) and values of an expression, trimmed and
/// lower-cased (IPA: `_extract_hint_operator_and_values`).
pub fn extract_operator_and_values(
    expression: &str,
) -> Result<(String, Vec<String>), NormalizeError> {
    let expr = py::strip(expression).to_lowercase();
    if expr.is_empty() {
        return Err(NormalizeError::Empty);
    }
    let tokens = specs::parse(&expr).map_err(|_| NormalizeError::Syntax)?;
    if tokens.len() <= 1 {
        return Ok((String::new(), vec![expr.clone()]));
    }
    let op = tokens[0].to_owned();
    // IPA splits the whole text on the operator (`re.split`), so an operator repeated
    // inside the text separates values too.
    let values = expr
        .split(op.as_str())
        .filter(|v| !v.is_empty())
        .map(|v| py::strip(v).to_owned())
        .collect();
    Ok((op, values))
}

/// `<op> quote(v1) <op> quote(v2) ...`, or `quote(v)` without an operator (IPA:
/// `_normalize_hint_expression`); applied to hint and device values alike.
pub fn normalize_expression(expression: &str) -> Result<String, NormalizeError> {
    let (op, values) = extract_operator_and_values(expression)?;
    let joined = values
        .iter()
        .map(|v| format!(" {} ", py::quote(v)))
        .collect::<Vec<_>>()
        .join(&op);
    Ok(py::strip(&format!("{op}{joined}")).to_owned())
}

/// Whether the grammar finds an operator in `spec` (more than one token).
fn has_operator(spec: &str) -> Result<bool, NormalizeError> {
    specs::parse(spec)
        .map(|tokens| tokens.len() > 1)
        .map_err(|_| NormalizeError::Syntax)
}

/// `strutils.bool_from_string(value, strict=True)`.
pub fn bool_from_value(value: &Value) -> Option<bool> {
    if let Value::Bool(b) = value {
        return Some(*b);
    }
    match py::strip(&py::str_of(value)).to_lowercase().as_str() {
        "1" | "t" | "true" | "on" | "y" | "yes" => Some(true),
        "0" | "f" | "false" | "off" | "n" | "no" => Some(false),
        _ => None,
    }
}

/// Parses a hint object; `Ok(None)` when it is empty or otherwise falsy.
pub fn parse_hints(value: &Value) -> Result<Option<RootDeviceHints>, HintError> {
    if !py::truthy(value) {
        return Ok(None);
    }
    let Value::Object(map) = value else {
        return Err(HintError::NotAnObject(py::repr_of(value)));
    };
    check_names(map)?;
    // Two passes like IPA: every hint is validated before any operator is added, so a
    // validation error of a later hint wins over a parse failure of an earlier one.
    let mut validated = Vec::with_capacity(map.len());
    for (key, expression) in map {
        let name = HintName::from_name(key).expect("check_names accepted every key");
        validated.push((name, validate_one(name, expression)?));
    }
    let mut hints = Vec::with_capacity(validated.len());
    for (name, spec) in validated {
        let spec = match spec {
            HintSpec::Expr(text) => {
                let default = if name.kind() == HintKind::Int {
                    "=="
                } else {
                    "s=="
                };
                let with_op =
                    with_default_operator(&text, default).map_err(|_| HintError::Syntax {
                        name: name.as_str(),
                        expression: text.clone(),
                    })?;
                HintSpec::Expr(with_op)
            }
            other => other,
        };
        hints.push((name, spec));
    }
    Ok(Some(RootDeviceHints { hints }))
}

fn check_names(map: &Map<String, Value>) -> Result<(), HintError> {
    let invalid: Vec<&str> = map
        .keys()
        .filter(|k| HintName::from_name(k).is_none())
        .map(String::as_str)
        .collect();
    if invalid.is_empty() {
        return Ok(());
    }
    let valid: Vec<&str> = HintName::ALL.iter().map(|n| n.as_str()).collect();
    Err(HintError::UnknownHints {
        invalid: invalid.join(", "),
        valid: valid.join(", "),
    })
}

/// Validates one hint: string hints normalised, `size` values checked (its text kept
/// as written: IPA does not lower-case it), `rotational` turned into a bool.
fn validate_one(name: HintName, expression: &Value) -> Result<HintSpec, HintError> {
    let n = name.as_str();
    let syntax = |e: NormalizeError, text: &str| match e {
        NormalizeError::Empty => HintError::Empty { name: n },
        NormalizeError::Syntax => HintError::Syntax {
            name: n,
            expression: text.to_owned(),
        },
    };
    match name.kind() {
        HintKind::Str => {
            let Value::String(text) = expression else {
                return Err(HintError::NotString {
                    name: n,
                    expression: py::str_of(expression),
                });
            };
            normalize_expression(text)
                .map(HintSpec::Expr)
                .map_err(|e| syntax(e, text))
        }
        HintKind::Int => {
            let text = py::str_of(expression);
            let (_, values) = extract_operator_and_values(&text).map_err(|e| syntax(e, &text))?;
            for v in &values {
                match py::int_is_positive(v) {
                    None => {
                        return Err(HintError::NotInteger {
                            name: n,
                            expression: text,
                        })
                    }
                    Some(false) => {
                        return Err(HintError::NotPositive {
                            name: n,
                            expression: text,
                        })
                    }
                    Some(true) => {}
                }
            }
            Ok(HintSpec::Expr(text))
        }
        HintKind::Bool => bool_from_value(expression)
            .map(HintSpec::Bool)
            .ok_or_else(|| HintError::NotBoolean {
                name: n,
                expression: py::str_of(expression),
            }),
    }
}

/// IPA: `_append_operator_to_hints`: `<default> <spec>` unless the spec has an operator.
fn with_default_operator(spec: &str, default: &str) -> Result<String, NormalizeError> {
    if has_operator(spec)? {
        Ok(spec.to_owned())
    } else {
        Ok(format!("{default} {spec}"))
    }
}

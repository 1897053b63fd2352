//! oslo.utils `specs_matcher`: the expression grammar behind root device hints and the
//! `match(value, spec)` that evaluates one expression against one device value.
//!
//! The grammar is pyparsing's, reproduced token by token because its quirks decide
//! what IPA matches: operators are literals matched by prefix in a fixed order (`==`
//! before `=`, `<in>` before `<=` before `<`), an atom is any run of non-whitespace that
//! does not start with an operator, the first alternative that parses wins
//! (`<or>` chain, `<all-in>`, `<range-in>` with four atoms, unary operator, bare atom),
//! and trailing text is ignored. So `<range-in> [ 10 ]` parses as the operator `<`
//! with the atom `range-in>`, and `<in> a <in> b` only tests `a`.
//!
//! Evaluation errors keep Python's classes ([`PyErrorKind`]) because IPA catches only
//! `ValueError` in some places.

use super::literal::{literal_eval, Literal, LiteralError};
use super::py;

/// Unary operators in pyparsing's match order.
pub const UNARY_OPS: [&str; 14] = [
    "==", "=", "!=", "<in>", ">=", "<=", ">", "<", "s==", "s!=", "s<=", "s<", "s>=", "s>",
];
const ALL_IN: &str = "<all-in>";
const OR: &str = "<or>";
const RANGE_IN: &str = "<range-in>";

/// Every keyword: an atom may not start with one of these.
const KEYWORDS: [&str; 17] = [
    "==", "=", "!=", "<in>", ">=", "<=", ">", "<", "s==", "s!=", "s<=", "s<", "s>=", "s>", ALL_IN,
    OR, RANGE_IN,
];

/// The expression does not parse (pyparsing's `ParseException`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot parse expression {0:?}")]
pub struct SyntaxError(pub String);

/// Python exception class an evaluation error would have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PyErrorKind {
    /// `ValueError` (a value that is not a number, a malformed literal).
    Value,
    /// `TypeError`, `SyntaxError` or `KeyError`: never caught by IPA's matcher.
    Other,
}

/// Evaluating an expression failed where Python raises.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct EvalError {
    /// Python's exception class.
    pub kind: PyErrorKind,
    /// What went wrong, worded like Python.
    pub message: String,
}

impl EvalError {
    fn value(message: impl Into<String>) -> Self {
        Self {
            kind: PyErrorKind::Value,
            message: message.into(),
        }
    }

    fn other(message: impl Into<String>) -> Self {
        Self {
            kind: PyErrorKind::Other,
            message: message.into(),
        }
    }
}

/// The value compared against an expression: a (normalised) string, or a number (the
/// device size in GiB).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Operand<'a> {
    /// A string value.
    Str(&'a str),
    /// A float value.
    Num(f64),
}

/// pyparsing's whitespace (skipped before every token): space, tab, newline, CR.
fn skip_ws(s: &str, pos: usize) -> usize {
    pos + s[pos..]
        .bytes()
        .take_while(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .count()
}

/// `lit` at `pos` after whitespace: the end of the match.
fn literal(s: &str, pos: usize, lit: &str) -> Option<usize> {
    let p = skip_ws(s, pos);
    s[p..].starts_with(lit).then(|| p + lit.len())
}

/// The first unary operator (in match order) at `pos`: (token, end).
fn unary_op(s: &str, pos: usize) -> Option<(&str, usize)> {
    let p = skip_ws(s, pos);
    UNARY_OPS
        .iter()
        .find(|op| s[p..].starts_with(**op))
        .map(|op| (&s[p..p + op.len()], p + op.len()))
}

/// An atom at `pos`: not a keyword, then `\S+`.
fn atom(s: &str, pos: usize) -> Option<(&str, usize)> {
    let p = skip_ws(s, pos);
    if KEYWORDS.iter().any(|k| s[p..].starts_with(k)) {
        return None;
    }
    let len: usize = s[p..]
        .chars()
        .take_while(|c| !py::is_space(*c))
        .map(char::len_utf8)
        .sum();
    (len > 0).then(|| (&s[p..p + len], p + len))
}

/// Parses `spec` into pyparsing's token list: `[atom]` for a bare value, else the
/// operator followed by its operands (`["<or>", a, b]`, `["<range-in>", "[", lo, hi, "]"]`).
pub fn parse(spec: &str) -> Result<Vec<&str>, SyntaxError> {
    parse_disjunction(spec)
        .or_else(|| parse_prefixed(spec, ALL_IN, None))
        .or_else(|| parse_prefixed(spec, RANGE_IN, Some(4)))
        .or_else(|| {
            let (op, end) = unary_op(spec, 0)?;
            let (value, _) = atom(spec, end)?;
            Some(vec![op, value])
        })
        .or_else(|| atom(spec, 0).map(|(value, _)| vec![value]))
        .ok_or_else(|| SyntaxError(spec.to_owned()))
}

/// `OneOrMore("<or>" + atom)`, tokens `["<or>", a1, a2, ...]`.
fn parse_disjunction(spec: &str) -> Option<Vec<&str>> {
    let mut tokens = Vec::new();
    let mut pos = 0;
    while let Some(after_or) = literal(spec, pos, OR) {
        let Some((value, end)) = atom(spec, after_or) else {
            break;
        };
        if tokens.is_empty() {
            let start = skip_ws(spec, pos);
            tokens.push(&spec[start..after_or]);
        }
        tokens.push(value);
        pos = end;
    }
    (!tokens.is_empty()).then_some(tokens)
}

/// `keyword` followed by exactly `count` atoms, or one or more when `count` is `None`.
fn parse_prefixed<'a>(spec: &'a str, keyword: &str, count: Option<usize>) -> Option<Vec<&'a str>> {
    let end = literal(spec, 0, keyword)?;
    let start = skip_ws(spec, 0);
    let mut tokens = vec![&spec[start..end]];
    let mut pos = end;
    while count.is_none_or(|n| tokens.len() <= n) {
        match atom(spec, pos) {
            Some((value, next)) => {
                tokens.push(value);
                pos = next;
            }
            None => break,
        }
    }
    let wanted = count.unwrap_or(1);
    let ok = match count {
        Some(n) => tokens.len() == n + 1,
        None => tokens.len() > wanted,
    };
    ok.then_some(tokens)
}

/// oslo's `match(value, spec)`: whether `value` satisfies `spec`. An unparseable spec
/// is compared as a whole string, like oslo does.
pub fn matches(value: Operand<'_>, spec: &str) -> Result<bool, EvalError> {
    let tokens = parse(spec).unwrap_or_else(|_| vec![spec]);
    let [op, args @ ..] = tokens.as_slice() else {
        return Ok(false);
    };
    if args.is_empty() {
        return Ok(matches!(value, Operand::Str(s) if s == *op));
    }
    let first = args[0];
    match *op {
        "=" | "==" | "!=" | "<=" | "<" | ">=" | ">" => {
            let x = to_float(value)?;
            let y = str_to_float(first)?;
            Ok(match *op {
                "=" | ">=" => x >= y,
                "==" => x == y,
                "!=" => x != y,
                "<=" => x <= y,
                "<" => x < y,
                _ => x > y,
            })
        }
        "s==" | "s!=" => {
            let equal = matches!(value, Operand::Str(s) if s == first);
            Ok((*op == "s==") == equal)
        }
        "s<" | "s<=" | "s>" | "s>=" => {
            let Operand::Str(x) = value else {
                return Err(EvalError::other(format!(
                    "'{}' not supported between instances of 'float' and 'str'",
                    &op[1..]
                )));
            };
            Ok(match *op {
                "s<" => x < first,
                "s<=" => x <= first,
                "s>" => x > first,
                _ => x >= first,
            })
        }
        "<in>" => match value {
            Operand::Str(x) => Ok(x.contains(first)),
            Operand::Num(_) => Err(EvalError::other("argument of type 'float' is not iterable")),
        },
        "<or>" => Ok(matches!(value, Operand::Str(x) if args.contains(&x))),
        "<all-in>" => all_in(value, args),
        "<range-in>" => range_in(value, args),
        other => Err(EvalError::other(format!("KeyError: {other:?}"))),
    }
}

/// Python `float(x)` of the compared value.
fn to_float(value: Operand<'_>) -> Result<f64, EvalError> {
    match value {
        Operand::Num(n) => Ok(n),
        Operand::Str(s) => str_to_float(s),
    }
}

fn str_to_float(s: &str) -> Result<f64, EvalError> {
    py::float(s)
        .ok_or_else(|| EvalError::value(format!("could not convert string to float: '{s}'")))
}

/// `ast.literal_eval` of the compared value.
fn literal_of(value: Operand<'_>) -> Result<Literal, EvalError> {
    match value {
        Operand::Num(n) => Err(EvalError::value(format!("malformed node or string: {n:?}"))),
        Operand::Str(s) => literal_eval(s).map_err(|e| match e {
            LiteralError::Malformed => EvalError::value(format!("malformed node or string: '{s}'")),
            LiteralError::Syntax => EvalError::other(format!("invalid syntax: '{s}'")),
        }),
    }
}

/// `<all-in>`: every operand is an element of the list literal `value`.
fn all_in(value: Operand<'_>, args: &[&str]) -> Result<bool, EvalError> {
    let Literal::List(items) = literal_of(value)? else {
        return Err(EvalError::other(
            "<all-in> must compare with a list literal string, EG \"['aes', 'mmx']\"",
        ));
    };
    Ok(args
        .iter()
        .all(|a| items.iter().any(|i| matches!(i, Literal::Str(s) if s == a))))
}

/// `<range-in> [ lo hi )`: brackets choose inclusive (`[`, `]`) or exclusive bounds.
fn range_in(value: Operand<'_>, args: &[&str]) -> Result<bool, EvalError> {
    let x = literal_of(value)?;
    let [open, lo, hi, close] = args else {
        return Err(EvalError::other(
            "<range-in> operator has to be followed by 2 space separated numeric value \
             surrounded by brackets \"range_in [ 10 20 ] \"",
        ));
    };
    let x = match x {
        Literal::Num(n) => n,
        Literal::Bool(b) => f64::from(u8::from(b)),
        Literal::Str(s) => str_to_float(&s)?,
        Literal::List(_) | Literal::Other => {
            return Err(EvalError::other(
                "float() argument must be a string or a real number",
            ))
        }
    };
    let (lo, hi) = (str_to_float(lo)?, str_to_float(hi)?);
    if lo > hi {
        return Err(EvalError::other(
            "<range-in> operator's first argument has to be smaller or equal to the second \
             argument",
        ));
    }
    let lower = match *open {
        "[" => x >= lo,
        "(" => x > lo,
        _ => {
            return Err(EvalError::other(
                "The first element should be an opening bracket (\"(\" or \"[\")",
            ))
        }
    };
    let upper = match *close {
        "]" => x <= hi,
        ")" => x < hi,
        _ => {
            return Err(EvalError::other(
                "The last element should be a closing bracket (\")\" or \"]\")",
            ))
        }
    };
    Ok(lower && upper)
}

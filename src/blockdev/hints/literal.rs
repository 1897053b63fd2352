//! Python's `ast.literal_eval` as far as `<all-in>` and `<range-in>` need it: numbers,
//! strings, booleans and lists are values; other valid expressions (names,
//! attributes, arithmetic) are `ValueError`; anything else is `SyntaxError`. The class
//! matters because IPA's list-mode matcher only skips values that raise `ValueError`.

use super::py::float;

/// A value `ast.literal_eval` can produce, as far as the matcher cares.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// An int or float.
    Num(f64),
    /// A string.
    Str(String),
    /// `True` / `False`.
    Bool(bool),
    /// A list.
    List(Vec<Literal>),
    /// Anything else valid (`None`, tuples, sets, dicts, complex numbers).
    Other,
}

/// How `ast.literal_eval` fails: `ValueError` (valid syntax, not a literal, e.g. a
/// bare name or `a/b`) or `SyntaxError` (anything else).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiteralError {
    /// `ValueError: malformed node or string`.
    Malformed,
    /// `SyntaxError`.
    Syntax,
}

/// Python keywords other than `True`/`False`/`None`: never a name in an expression.
const KEYWORDS: [&str; 32] = [
    "and", "as", "assert", "async", "await", "break", "class", "continue", "def", "del", "elif",
    "else", "except", "finally", "for", "from", "global", "if", "import", "in", "is", "lambda",
    "nonlocal", "not", "or", "pass", "raise", "return", "try", "while", "with", "yield",
];

/// `ast.literal_eval(s)` for the literals the matcher meets: numbers, strings,
/// booleans, lists (other containers and `None` as [`Literal::Other`]). Expressions of
/// names, attributes, calls, subscripts and arithmetic are recognised as valid syntax
/// (so `ValueError`), anything else is a `SyntaxError`.
pub fn literal_eval(s: &str) -> Result<Literal, LiteralError> {
    let mut p = LitParser {
        s: s.trim_start_matches([' ', '\t']),
        i: 0,
    };
    let value = p.tuple_or_expr(None)?;
    p.ws();
    if p.i != p.s.len() {
        return Err(LiteralError::Syntax);
    }
    value.ok_or(LiteralError::Malformed)
}

/// Recursive-descent reader; `Ok(None)` is valid syntax that is not a literal.
struct LitParser<'a> {
    s: &'a str,
    i: usize,
}

type Parsed = Result<Option<Literal>, LiteralError>;

impl LitParser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.i).copied()
    }

    fn peek_at(&self, n: usize) -> Option<u8> {
        self.s.as_bytes().get(self.i + n).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        let hit = self.peek() == Some(c);
        if hit {
            self.i += 1;
        }
        hit
    }

    fn ws(&mut self) {
        while self.peek().is_some_and(|c| c == b' ' || c == b'\t') {
            self.i += 1;
        }
    }

    /// Byte length of the identifier character at the cursor (Python allows Unicode
    /// letters and digits in names, not other symbols such as U+00A0).
    fn name_char(&self) -> Option<usize> {
        let c = self.s.get(self.i..)?.chars().next()?;
        (c.is_ascii_alphanumeric() || c == '_' || (!c.is_ascii() && c.is_alphanumeric()))
            .then(|| c.len_utf8())
    }

    /// `a, b, ...` (a tuple) or a single expression; `close` ends a bracketed list.
    fn tuple_or_expr(&mut self, close: Option<u8>) -> Parsed {
        let first = self.expr()?;
        self.ws();
        if self.peek() != Some(b',') {
            return Ok(first);
        }
        let mut literal = first.is_some();
        while self.eat(b',') {
            self.ws();
            if self.peek().is_none() || self.peek() == close {
                break;
            }
            literal &= self.expr()?.is_some();
            self.ws();
        }
        Ok(literal.then_some(Literal::Other))
    }

    /// term (binop term)*; a binary operation is never a literal (complex sums aside).
    fn expr(&mut self) -> Parsed {
        let mut value = self.term()?;
        loop {
            self.ws();
            let op_len = match (self.peek(), self.peek_at(1)) {
                (Some(b'/'), Some(b'/')) | (Some(b'*'), Some(b'*')) => 2,
                (Some(b'<'), Some(b'<')) | (Some(b'>'), Some(b'>')) => 2,
                (Some(b'+' | b'-' | b'*' | b'/' | b'%' | b'@' | b'&' | b'|' | b'^'), _) => 1,
                _ => return Ok(value),
            };
            self.i += op_len;
            let rhs = self.term()?;
            // `1+2j` is a complex literal; any other operation is not a literal.
            value = match (value, rhs) {
                (Some(Literal::Num(_)), Some(Literal::Other)) if op_len == 1 => {
                    Some(Literal::Other)
                }
                _ => None,
            };
        }
    }

    /// unary* primary trailer*.
    fn term(&mut self) -> Parsed {
        self.ws();
        match self.peek() {
            Some(op @ (b'-' | b'+' | b'~')) => {
                self.i += 1;
                Ok(match (op, self.term()?) {
                    (b'-', Some(Literal::Num(n))) => Some(Literal::Num(-n)),
                    (b'+', Some(Literal::Num(n))) => Some(Literal::Num(n)),
                    (b'-' | b'+', Some(Literal::Other)) => Some(Literal::Other),
                    _ => None,
                })
            }
            _ => {
                let mut value = self.primary()?;
                // Trailers: attribute, call, subscript: valid, but not literals.
                loop {
                    self.ws();
                    match self.peek() {
                        Some(b'.') if self.peek_at(1).is_some_and(|c| !c.is_ascii_digit()) => {
                            self.i += 1;
                            self.ws();
                            self.name()?;
                        }
                        Some(b'(') => {
                            self.i += 1;
                            self.bracketed(b')')?;
                        }
                        Some(b'[') => {
                            self.i += 1;
                            self.bracketed(b']')?;
                        }
                        _ => return Ok(value),
                    }
                    value = None;
                }
            }
        }
    }

    fn primary(&mut self) -> Parsed {
        self.ws();
        match self.peek().ok_or(LiteralError::Syntax)? {
            b'[' => {
                self.i += 1;
                Ok(self.bracketed(b']')?.map(Literal::List))
            }
            b'(' => {
                self.i += 1;
                let start = self.i;
                let items = self.bracketed(b')')?;
                // `(x)` is x; `(x,)` and `()` are tuples.
                let had_comma = self.s[start..self.i].contains(',');
                Ok(items.map(|items| match items.len() {
                    1 if !had_comma => items.into_iter().next().unwrap_or(Literal::Other),
                    _ => Literal::Other,
                }))
            }
            b'{' => {
                self.i += 1;
                Ok(self.bracketed(b'}')?.map(|_| Literal::Other))
            }
            b'\'' | b'"' => self.string().map(Some),
            c if c.is_ascii_digit()
                || (c == b'.' && self.peek_at(1).is_some_and(|d| d.is_ascii_digit())) =>
            {
                self.number().map(Some)
            }
            _ if self.name_char().is_some() => match self.name()? {
                "True" => Ok(Some(Literal::Bool(true))),
                "False" => Ok(Some(Literal::Bool(false))),
                "None" => Ok(Some(Literal::Other)),
                _ => Ok(None),
            },
            _ => Err(LiteralError::Syntax),
        }
    }

    /// A name that is not a keyword.
    fn name(&mut self) -> Result<&str, LiteralError> {
        let start = self.i;
        if self.peek().is_some_and(|c| c.is_ascii_digit()) {
            return Err(LiteralError::Syntax);
        }
        while let Some(len) = self.name_char() {
            self.i += len;
        }
        let name = &self.s[start..self.i];
        if name.is_empty() || KEYWORDS.contains(&name) {
            return Err(LiteralError::Syntax);
        }
        Ok(name)
    }

    /// Comma-separated expressions (dict `k: v` pairs accepted) up to `close`;
    /// `None` when one of them is not a literal.
    fn bracketed(&mut self, close: u8) -> Result<Option<Vec<Literal>>, LiteralError> {
        let mut out = Some(Vec::new());
        loop {
            self.ws();
            if self.eat(close) {
                return Ok(out);
            }
            let item = self.expr()?;
            self.ws();
            if close == b'}' && self.eat(b':') {
                if self.expr()?.is_none() {
                    out = None;
                }
                self.ws();
            }
            match (out.as_mut(), item) {
                (Some(items), Some(item)) => items.push(item),
                _ => out = None,
            }
            if !self.eat(b',') {
                self.ws();
                return if self.eat(close) {
                    Ok(out)
                } else {
                    Err(LiteralError::Syntax)
                };
            }
        }
    }

    fn string(&mut self) -> Result<Literal, LiteralError> {
        let quote = self.peek().ok_or(LiteralError::Syntax)?;
        self.i += 1;
        let mut out = Vec::new();
        loop {
            let c = self.peek().ok_or(LiteralError::Syntax)?;
            self.i += 1;
            match c {
                b'\n' => return Err(LiteralError::Syntax),
                b'\\' => {
                    let e = self.peek().ok_or(LiteralError::Syntax)?;
                    self.i += 1;
                    match e {
                        b'n' => out.push(b'\n'),
                        b't' => out.push(b'\t'),
                        b'r' => out.push(b'\r'),
                        b'\\' | b'\'' | b'"' => out.push(e),
                        other => out.extend_from_slice(&[b'\\', other]),
                    }
                }
                c if c == quote => break,
                c => out.push(c),
            }
        }
        String::from_utf8(out)
            .map(Literal::Str)
            .map_err(|_| LiteralError::Syntax)
    }

    fn number(&mut self) -> Result<Literal, LiteralError> {
        let start = self.i;
        let radix = match (self.peek(), self.peek_at(1).map(|c| c.to_ascii_lowercase())) {
            (Some(b'0'), Some(b'x')) => 16,
            (Some(b'0'), Some(b'o')) => 8,
            (Some(b'0'), Some(b'b')) => 2,
            _ => 10,
        };
        if radix != 10 {
            self.i += 2;
            let digits_start = self.i;
            while self
                .peek()
                .is_some_and(|c| c.is_ascii_hexdigit() || c == b'_')
            {
                self.i += 1;
            }
            let digits: String = self.s[digits_start..self.i]
                .chars()
                .filter(|c| *c != '_')
                .collect();
            if self.name_char().is_some() {
                return Err(LiteralError::Syntax);
            }
            return u128::from_str_radix(&digits, radix)
                .map(|v| Literal::Num(v as f64))
                .map_err(|_| LiteralError::Syntax);
        }
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_digit() || matches!(c, b'_' | b'.'))
        {
            self.i += 1;
        }
        if self.peek().is_some_and(|c| c == b'e' || c == b'E')
            && (self.peek_at(1).is_some_and(|c| c.is_ascii_digit())
                || (matches!(self.peek_at(1), Some(b'+' | b'-'))
                    && self.peek_at(2).is_some_and(|c| c.is_ascii_digit())))
        {
            self.i += 2;
            while self.peek().is_some_and(|c| c.is_ascii_digit() || c == b'_') {
                self.i += 1;
            }
        }
        let text = self.s[start..self.i].to_owned();
        if self.peek().is_some_and(|c| c == b'j' || c == b'J') {
            self.i += 1;
            if self.name_char().is_some() {
                return Err(LiteralError::Syntax);
            }
            return float(&text)
                .map(|_| Literal::Other)
                .ok_or(LiteralError::Syntax);
        }
        // A number glued to a name (`20ssd`, `3cy`) is "invalid decimal literal".
        if self.name_char().is_some() {
            return Err(LiteralError::Syntax);
        }
        // Python forbids leading zeros in non-zero decimal ints (`010`).
        let is_int = !text.contains(['.', 'e', 'E']);
        if is_int && text.starts_with('0') && text.chars().any(|c| c != '0' && c != '_') {
            return Err(LiteralError::Syntax);
        }
        float(&text).map(Literal::Num).ok_or(LiteralError::Syntax)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_eval_cases() {
        assert_eq!(
            literal_eval("['aes', 'mmx']"),
            Ok(Literal::List(vec![
                Literal::Str("aes".into()),
                Literal::Str("mmx".into())
            ]))
        );
        assert_eq!(literal_eval(" 23"), Ok(Literal::Num(23.0)));
        assert_eq!(literal_eval("-1.5e1"), Ok(Literal::Num(-15.0)));
        assert_eq!(literal_eval("0x10"), Ok(Literal::Num(16.0)));
        assert_eq!(literal_eval("(5)"), Ok(Literal::Num(5.0)));
        assert_eq!(literal_eval("(5,)"), Ok(Literal::Other));
        assert_eq!(literal_eval("{'aes': 1}"), Ok(Literal::Other));
        assert_eq!(literal_eval("abc"), Err(LiteralError::Malformed));
        assert_eq!(literal_eval("^&*($"), Err(LiteralError::Syntax));
        assert_eq!(literal_eval("20ssd"), Err(LiteralError::Syntax));
        assert_eq!(literal_eval("/dev/sda"), Err(LiteralError::Syntax));
        assert_eq!(literal_eval("010"), Err(LiteralError::Syntax));
        assert_eq!(literal_eval("'a"), Err(LiteralError::Syntax));
        // Valid expressions that are not literals are ValueError, the rest SyntaxError.
        assert_eq!(literal_eval("a/b"), Err(LiteralError::Malformed));
        assert_eq!(literal_eval("a.b"), Err(LiteralError::Malformed));
        assert_eq!(literal_eval("-x"), Err(LiteralError::Malformed));
        assert_eq!(literal_eval("x%3cy"), Err(LiteralError::Syntax));
        assert_eq!(literal_eval("\u{a0}x"), Err(LiteralError::Syntax));
        assert_eq!(literal_eval("in"), Err(LiteralError::Syntax));
        assert_eq!(literal_eval("1+2j"), Ok(Literal::Other));
        assert_eq!(literal_eval("[1, x]"), Err(LiteralError::Malformed));
    }
}

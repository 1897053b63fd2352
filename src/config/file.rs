//! IPA's configuration file: an oslo.config style ini text, parsed without I/O.
//!
//! What it accepts, following oslo.config's ini reader:
//! - `[section]` headers (`[DEFAULT]` holds almost every option; `[ssl]` holds the
//!   static TLS files);
//! - `name = value` or `name: value`, split at the first `=` or `:`; the value may be
//!   wrapped in matching `"` or `'`, which are removed;
//! - indented lines continue the previous value (joined with `\n`); a blank line ends it;
//! - `#` and `;` start a comment line (inline comments are part of the value, as in oslo);
//! - a later duplicate of a name wins; dashes in names read as underscores, so
//!   `guard-special-filesystems` and `guard_special_filesystems` are one option.
//!
//! What each name means is `resolve.rs`'s business; unknown names are kept and ignored
//! there, because other oslo libraries share the file.

use std::collections::BTreeMap;

/// A syntax error in the config file, with its 1-based line number.
///
/// Messages never quote the line: a malformed line might hold the agent token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    /// `[` without a closing `]`, or an empty name.
    #[error("line {line}: a section header must look like [name]")]
    BadSection {
        /// Line number.
        line: usize,
    },
    /// A line that is neither a header, a comment nor `name = value`.
    #[error("line {line}: expected `name = value`")]
    NoValue {
        /// Line number.
        line: usize,
    },
    /// `= value` with nothing before it.
    #[error("line {line}: empty option name")]
    EmptyName {
        /// Line number.
        line: usize,
    },
    /// An option before the first `[section]`.
    #[error("line {line}: option outside of any [section]")]
    NoSection {
        /// Line number.
        line: usize,
    },
    /// An indented line with no option to continue.
    #[error("line {line}: indented line does not continue any option")]
    Continuation {
        /// Line number.
        line: usize,
    },
}

/// A parsed ini file: section name -> option name -> value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IniFile {
    sections: BTreeMap<String, BTreeMap<String, String>>,
}

/// An option being read, kept open for continuation lines.
struct Pending {
    section: String,
    name: String,
    lines: Vec<String>,
}

impl IniFile {
    /// Parses the text of a config file.
    pub fn parse(text: &str) -> Result<Self, FileError> {
        let mut file = Self::default();
        let mut section: Option<String> = None;
        let mut pending: Option<Pending> = None;

        for (index, raw) in text.lines().enumerate() {
            let line_no = index + 1;
            let line = raw.trim_end();
            let body = line.trim_start();

            if body.is_empty() {
                file.flush(pending.take());
                continue;
            }
            if body.starts_with('#') || body.starts_with(';') {
                continue;
            }
            if body.len() != line.len() {
                // Indented: continues the previous value (oslo.config's rule).
                match pending.as_mut() {
                    Some(p) => p.lines.push(body.to_owned()),
                    None => return Err(FileError::Continuation { line: line_no }),
                }
                continue;
            }
            file.flush(pending.take());

            if let Some(rest) = line.strip_prefix('[') {
                let name = rest
                    .strip_suffix(']')
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                    .ok_or(FileError::BadSection { line: line_no })?;
                section = Some(name.to_owned());
                file.sections.entry(name.to_owned()).or_default();
                continue;
            }

            let split = line
                .find(['=', ':'])
                .ok_or(FileError::NoValue { line: line_no })?;
            let name = line[..split].trim();
            if name.is_empty() {
                return Err(FileError::EmptyName { line: line_no });
            }
            let current = section
                .clone()
                .ok_or(FileError::NoSection { line: line_no })?;
            pending = Some(Pending {
                section: current,
                name: normalize_name(name),
                lines: vec![unquote(line[split + 1..].trim_start()).to_owned()],
            });
        }
        file.flush(pending.take());
        Ok(file)
    }

    /// The value of `name` in `section` (`name` in either dash or underscore form).
    pub fn get(&self, section: &str, name: &str) -> Option<&str> {
        self.sections
            .get(section)?
            .get(&normalize_name(name))
            .map(String::as_str)
    }

    /// Section names present in the file, sorted.
    pub fn sections(&self) -> impl Iterator<Item = &str> {
        self.sections.keys().map(String::as_str)
    }

    /// Stores a finished option; a later duplicate replaces an earlier one.
    fn flush(&mut self, pending: Option<Pending>) {
        if let Some(p) = pending {
            self.sections
                .entry(p.section)
                .or_default()
                .insert(p.name, p.lines.join("\n"));
        }
    }
}

/// Option names compare with dashes read as underscores.
fn normalize_name(name: &str) -> String {
    name.replace('-', "_")
}

/// Strips one pair of matching surrounding quotes, as oslo.config does.
fn unquote(value: &str) -> &str {
    for quote in ['"', '\''] {
        if let Some(inner) = value
            .strip_prefix(quote)
            .and_then(|v| v.strip_suffix(quote))
        {
            return inner;
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> IniFile {
        IniFile::parse(text).unwrap()
    }

    #[test]
    fn basic_default_section() {
        let f = parse(
            "# comment\n; other comment\n[DEFAULT]\napi_url = http://a:6385\nlisten_port=9998\n\
             insecure: true\n",
        );
        assert_eq!(f.get("DEFAULT", "api_url"), Some("http://a:6385"));
        assert_eq!(f.get("DEFAULT", "listen_port"), Some("9998"));
        assert_eq!(f.get("DEFAULT", "insecure"), Some("true"));
        assert_eq!(f.get("DEFAULT", "missing"), None);
        assert_eq!(f.get("ssl", "api_url"), None);
    }

    #[test]
    fn sections_are_separate_and_merge_on_repeat() {
        let f = parse("[ssl]\ncert_file = /a\n[DEFAULT]\ndebug = 1\n[ssl]\nkey_file = /b\n");
        assert_eq!(f.get("ssl", "cert_file"), Some("/a"));
        assert_eq!(f.get("ssl", "key_file"), Some("/b"));
        assert_eq!(f.get("DEFAULT", "cert_file"), None);
        assert_eq!(f.sections().collect::<Vec<_>>(), ["DEFAULT", "ssl"]);
    }

    #[test]
    fn value_details() {
        let f = parse(
            "[DEFAULT]\n\
             a = x=y\n\
             b = \"quoted value\"\n\
             c = 'single'\n\
             d = \"unbalanced\n\
             e = value # not a comment\n\
             f =\n\
             g = first\n  second\n\tthird\n\n\
             a = later\n\
             guard-special-filesystems = false\n",
        );
        assert_eq!(f.get("DEFAULT", "a"), Some("later"));
        assert_eq!(f.get("DEFAULT", "b"), Some("quoted value"));
        assert_eq!(f.get("DEFAULT", "c"), Some("single"));
        assert_eq!(f.get("DEFAULT", "d"), Some("\"unbalanced"));
        assert_eq!(f.get("DEFAULT", "e"), Some("value # not a comment"));
        assert_eq!(f.get("DEFAULT", "f"), Some(""));
        assert_eq!(f.get("DEFAULT", "g"), Some("first\nsecond\nthird"));
        assert_eq!(f.get("DEFAULT", "guard_special_filesystems"), Some("false"));
        assert_eq!(f.get("DEFAULT", "guard-special-filesystems"), Some("false"));
    }

    #[test]
    fn errors_carry_line_numbers() {
        let cases: &[(&str, FileError)] = &[
            ("[DEFAULT\n", FileError::BadSection { line: 1 }),
            ("[ ]\n", FileError::BadSection { line: 1 }),
            ("[DEFAULT]\njunk\n", FileError::NoValue { line: 2 }),
            ("[DEFAULT]\n= v\n", FileError::EmptyName { line: 2 }),
            ("# c\na = 1\n", FileError::NoSection { line: 2 }),
            (
                "[DEFAULT]\n\n  stray\n",
                FileError::Continuation { line: 3 },
            ),
        ];
        for (text, want) in cases {
            assert_eq!(IniFile::parse(text).as_ref(), Err(want), "input {text:?}");
        }
    }

    #[test]
    fn error_message_does_not_quote_the_line() {
        let err = IniFile::parse("[DEFAULT]\nsecret-token-value\n").unwrap_err();
        let msg = err.to_string();
        assert_eq!(msg, "line 2: expected `name = value`");
    }

    #[test]
    fn empty_text_is_empty_file() {
        assert_eq!(parse(""), IniFile::default());
        assert_eq!(parse("\n# only comments\n"), IniFile::default());
    }
}

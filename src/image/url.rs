//! URLs as logs and errors may show them: signed URLs carry their signature in the
//! query string, and user info may hold a password, so neither ever leaves this module.

use std::fmt;

/// A URL that is not an http(s) URL (holds its redacted form).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0} is not a valid http(s) URL")]
pub struct InvalidUrl(pub String);

/// A URL for logs and errors: scheme, host, port and path; the query string and any
/// user info are replaced by `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct RedactedUrl(String);

/// The redacted form of `url` (also for URLs that do not parse).
pub fn redact(url: &str) -> String {
    let (base, had_query) = match url.find(['?', '#']) {
        Some(i) => (&url[..i], true),
        None => (url, false),
    };
    let mut out = match base.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = match authority.rsplit_once('@') {
                Some((_, host)) => format!("***@{host}"),
                None => authority.to_owned(),
            };
            format!("{scheme}://{host}{path}")
        }
        None => base.to_owned(),
    };
    if had_query {
        out.push_str("?***");
    }
    out
}

impl RedactedUrl {
    /// Checks that `url` is an http(s) URL and keeps its redacted form.
    pub fn parse(url: &str) -> Result<Self, InvalidUrl> {
        match reqwest::Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(Self(redact(url))),
            _ => Err(InvalidUrl(redact(url))),
        }
    }
}

impl fmt::Display for RedactedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RedactedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedactedUrl({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction() {
        assert_eq!(
            redact("https://h:1/a/b.img?sig=x&e=1"),
            "https://h:1/a/b.img?***"
        );
        assert_eq!(redact("http://u:p@h/x"), "http://***@h/x");
        assert_eq!(redact("http://h/x#frag"), "http://h/x?***");
        assert_eq!(redact("http://h"), "http://h");
        let r = RedactedUrl::parse("https://h/x?temp_url_sig=abc").unwrap();
        assert!(!format!("{r} {r:?}").contains("abc"));
        assert!(RedactedUrl::parse("ftp://h/x").is_err());
    }
}

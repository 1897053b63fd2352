//! Typed value parsers shared by every configuration source.
//!
//! Each parser takes the text as given (kernel parameter, file value or flag) and
//! returns the typed value or an [`Invalid`] saying what was expected. `resolve.rs`
//! wraps that with the option name and its source. To add a type: a function here
//! returning `Result<T, Invalid>` plus a row in the tests.

use std::net::IpAddr;
use std::time::Duration;

/// Why a value was refused; `resolve.rs` adds the option name and source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// The value does not have the expected form (the text says what would).
    Expected(&'static str),
    /// `mdns` where only URLs are accepted (it stands alone as `ipa-api-url`).
    Mdns,
}

/// Result of a value parser.
pub type ValueResult<T> = Result<T, Invalid>;

/// Booleans as oslo.config and IPA's kernel parsing accept them.
pub fn boolean(v: &str) -> ValueResult<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(Invalid::Expected(
            "a boolean (1/0, true/false, yes/no, on/off)",
        )),
    }
}

/// A non-negative number of seconds, integer or float (`30`, `2.5`).
pub fn seconds(v: &str) -> ValueResult<Duration> {
    const EXPECTED: Invalid = Invalid::Expected("a non-negative number of seconds");
    let t = v.trim();
    // f64 parsing also takes "inf" and "NaN"; only digits, one dot and an exponent
    // make sense for a timeout.
    if t.is_empty()
        || !t
            .bytes()
            .all(|b| b.is_ascii_digit() || b".eE+-".contains(&b))
    {
        return Err(EXPECTED);
    }
    let secs: f64 = t.parse().map_err(|_| EXPECTED)?;
    if secs < 0.0 {
        return Err(EXPECTED);
    }
    Duration::try_from_secs_f64(secs).map_err(|_| EXPECTED)
}

/// A TCP port, 0 allowed (the OS picks one; tests bind this way).
pub fn port(v: &str) -> ValueResult<u16> {
    v.trim()
        .parse()
        .map_err(|_| Invalid::Expected("a port number (0-65535)"))
}

/// A port that can appear in a URL (1-65535).
pub fn nonzero_port(v: &str) -> ValueResult<u16> {
    match v.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(Invalid::Expected("a port number (1-65535)")),
    }
}

/// A non-negative integer count.
pub fn count(v: &str) -> ValueResult<u32> {
    v.trim()
        .parse()
        .map_err(|_| Invalid::Expected("a non-negative integer"))
}

/// A count of at least one.
pub fn positive_count(v: &str) -> ValueResult<u32> {
    match v.trim().parse::<u32>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(Invalid::Expected("an integer of at least 1")),
    }
}

/// An integer within `lo..=hi`.
pub fn int_in_range(v: &str, lo: i64, hi: i64, expected: &'static str) -> ValueResult<i64> {
    match v.trim().parse::<i64>() {
        Ok(n) if (lo..=hi).contains(&n) => Ok(n),
        _ => Err(Invalid::Expected(expected)),
    }
}

/// An IP address to bind; `[::1]` brackets are accepted; empty = wildcard (None).
pub fn ip_addr(v: &str) -> ValueResult<Option<IpAddr>> {
    let t = v.trim();
    if t.is_empty() {
        return Ok(None);
    }
    let bare = t
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(t);
    bare.parse()
        .map(Some)
        .map_err(|_| Invalid::Expected("an IP address"))
}

/// Free text; empty means "not set".
pub fn opt_string(v: &str) -> Option<String> {
    let t = v.trim();
    (!t.is_empty()).then(|| t.to_owned())
}

/// An absolute path.
pub fn absolute_path(v: &str) -> ValueResult<std::path::PathBuf> {
    let t = v.trim();
    if t.starts_with('/') {
        Ok(std::path::PathBuf::from(t))
    } else {
        Err(Invalid::Expected("an absolute path"))
    }
}

/// A comma-separated list; items trimmed, empty items dropped.
pub fn list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// One of a fixed set of lowercase words (matched case-insensitively).
pub fn choice(v: &str, choices: &[&str], expected: &'static str) -> ValueResult<String> {
    let t = v.trim().to_ascii_lowercase();
    if choices.contains(&t.as_str()) {
        Ok(t)
    } else {
        Err(Invalid::Expected(expected))
    }
}

/// One `http://` or `https://` URL with a host part; `mdns` is refused with its own error.
fn http_url(v: &str, expected: &'static str) -> ValueResult<String> {
    let t = v.trim();
    if t.eq_ignore_ascii_case("mdns") {
        return Err(Invalid::Mdns);
    }
    let rest = t
        .strip_prefix("http://")
        .or_else(|| t.strip_prefix("https://"))
        .ok_or(Invalid::Expected(expected))?;
    // A host must follow the scheme, and a URL never holds whitespace.
    if rest.is_empty() || rest.starts_with('/') || t.chars().any(char::is_whitespace) {
        return Err(Invalid::Expected(expected));
    }
    Ok(t.to_owned())
}

/// Ironic API URLs: comma-separated, each http(s), trailing slashes stripped.
pub fn api_urls(v: &str) -> ValueResult<Vec<String>> {
    const EXPECTED: &str = "http:// or https:// URLs, comma-separated";
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|u| http_url(u, EXPECTED).map(|u| u.trim_end_matches('/').to_owned()))
        .collect()
}

/// The inspection callback URL(s): every comma-separated part must be http(s); kept
/// as written because the inspection client decides how to use several.
pub fn callback_url(v: &str) -> ValueResult<Option<String>> {
    const EXPECTED: &str = "http:// or https:// URL";
    let t = v.trim();
    for part in t.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        http_url(part, EXPECTED)?;
    }
    Ok(opt_string(t))
}

/// An Ironic API version `X.Y`.
pub fn api_version(v: &str) -> ValueResult<Option<(u32, u32)>> {
    const EXPECTED: Invalid = Invalid::Expected("an API version X.Y, such as 1.68");
    let t = v.trim();
    if t.is_empty() {
        return Ok(None);
    }
    let (major, minor) = t.split_once('.').ok_or(EXPECTED)?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(major) || !digits(minor) {
        return Err(EXPECTED);
    }
    Ok(Some((
        major.parse().map_err(|_| EXPECTED)?,
        minor.parse().map_err(|_| EXPECTED)?,
    )))
}

/// A value that goes into an HTTP header: visible ASCII only, so no header injection.
pub fn header_token(v: &str) -> ValueResult<Option<String>> {
    let t = v.trim();
    if t.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(opt_string(t))
    } else {
        Err(Invalid::Expected(
            "a request id of visible ASCII, such as req-<UUID>",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans() {
        for v in ["1", "true", "TRUE", "Yes", "on", " On "] {
            assert_eq!(boolean(v), Ok(true), "{v}");
        }
        for v in ["0", "false", "False", "no", "NO", "off"] {
            assert_eq!(boolean(v), Ok(false), "{v}");
        }
        for v in ["", "2", "y", "enable", "truee"] {
            assert!(boolean(v).is_err(), "{v}");
        }
    }

    #[test]
    fn seconds_table() {
        let ok: &[(&str, Duration)] = &[
            ("0", Duration::ZERO),
            ("30", Duration::from_secs(30)),
            ("2.5", Duration::from_millis(2500)),
            (".25", Duration::from_millis(250)),
            ("1e1", Duration::from_secs(10)),
            (" 7 ", Duration::from_secs(7)),
        ];
        for (v, want) in ok {
            assert_eq!(seconds(v), Ok(*want), "{v}");
        }
        for v in ["", "abc", "-1", "inf", "NaN", "1s", "1e400", "1,5"] {
            assert!(seconds(v).is_err(), "{v}");
        }
    }

    #[test]
    fn integers() {
        assert_eq!(port("0"), Ok(0));
        assert_eq!(port("65535"), Ok(65535));
        assert!(port("65536").is_err());
        assert!(port("-1").is_err());
        assert!(nonzero_port("0").is_err());
        assert_eq!(nonzero_port("443"), Ok(443));
        assert_eq!(count("0"), Ok(0));
        assert!(count("1.5").is_err());
        assert!(positive_count("0").is_err());
        assert_eq!(positive_count("3"), Ok(3));
        assert_eq!(int_in_range("99", 0, 99, "x"), Ok(99));
        assert_eq!(int_in_range("100", 0, 99, "x"), Err(Invalid::Expected("x")));
        assert_eq!(int_in_range("-1", 0, 99, "x"), Err(Invalid::Expected("x")));
    }

    #[test]
    fn addresses() {
        assert_eq!(ip_addr(""), Ok(None));
        assert_eq!(ip_addr("::"), Ok(Some("::".parse().unwrap())));
        assert_eq!(ip_addr("[::1]"), Ok(Some("::1".parse().unwrap())));
        assert_eq!(ip_addr("10.1.2.3"), Ok(Some("10.1.2.3".parse().unwrap())));
        assert!(ip_addr("example.com").is_err());
        assert!(ip_addr("10.1.2").is_err());
    }

    #[test]
    fn urls() {
        assert_eq!(
            api_urls("http://a:6385/, https://b/v1//"),
            Ok(vec!["http://a:6385".to_owned(), "https://b/v1".to_owned()])
        );
        assert_eq!(api_urls(""), Ok(vec![]));
        assert_eq!(api_urls("mdns"), Err(Invalid::Mdns));
        assert_eq!(api_urls("http://a,MDNS"), Err(Invalid::Mdns));
        for bad in ["ftp://a", "a:6385", "http://", "https:///x", "http://a,b"] {
            assert!(matches!(api_urls(bad), Err(Invalid::Expected(_))), "{bad}");
        }
        assert_eq!(
            callback_url("http://i:5050/v1/continue"),
            Ok(Some("http://i:5050/v1/continue".to_owned()))
        );
        assert_eq!(callback_url(""), Ok(None));
        assert_eq!(callback_url("mdns"), Err(Invalid::Mdns));
        assert!(callback_url("i:5050").is_err());
    }

    #[test]
    fn versions_and_choices() {
        assert_eq!(api_version("1.68"), Ok(Some((1, 68))));
        assert_eq!(api_version(""), Ok(None));
        for bad in ["1", "1.", ".1", "1.2.3", "a.b", "-1.2", "1.+2"] {
            assert!(api_version(bad).is_err(), "{bad}");
        }
        assert_eq!(
            choice("P384", &["p256", "p384"], "x"),
            Ok("p384".to_owned())
        );
        assert!(choice("p999", &["p256", "p384"], "x").is_err());
    }

    #[test]
    fn lists_and_headers() {
        assert_eq!(list(" a, ,b ,"), ["a", "b"]);
        assert!(list("").is_empty());
        assert_eq!(header_token("req-1234"), Ok(Some("req-1234".to_owned())));
        assert_eq!(header_token(""), Ok(None));
        assert!(header_token("req-1\r\nX-Evil: 1").is_err());
        assert!(header_token("req é").is_err());
    }
}

//! The agent token check of the `/commands` routes and the query parameters they read.
//!
//! The token travels only as the query parameter `agent_token` (spec 1.3); it is
//! compared in constant time by [`AgentState::token_matches`] and never logged, which is
//! why request logs carry the path without its query string.

use std::borrow::Cow;

use crate::api::error::ApiError;
use crate::state::AgentState;

/// The first value of query parameter `name`, percent-decoded (`+` is a space, as in
/// HTML forms, which is how Werkzeug reads `request.args`).
pub fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<Cow<'a, str>> {
    query?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(key) == name).then(|| decode(value))
    })
}

/// True when the `wait` parameter, lower-cased, is `true` (spec 1.2).
pub fn wants_wait(query: Option<&str>) -> bool {
    query_param(query, "wait").is_some_and(|v| v.to_lowercase() == "true")
}

/// Accepts the request only if it carries the token the agent holds; rejects when no
/// token is held yet or the parameter is absent.
pub fn check_token(state: &AgentState, query: Option<&str>) -> Result<(), ApiError> {
    match query_param(query, "agent_token") {
        Some(candidate) if state.token_matches(&candidate) => Ok(()),
        _ => Err(ApiError::Unauthorized),
    }
}

/// Percent-decodes one query component; invalid escapes are kept as they are.
fn decode(text: &str) -> Cow<'_, str> {
    if !text.contains(['%', '+']) {
        return Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

fn hex(byte: u8) -> Option<u8> {
    (byte as char)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_first_value_and_decodes() {
        let q = Some("wait=false&agent_token=a%2Bb+c&agent_token=second");
        assert_eq!(query_param(q, "agent_token").as_deref(), Some("a+b c"));
        assert_eq!(query_param(q, "wait").as_deref(), Some("false"));
        assert_eq!(query_param(q, "missing"), None);
        assert_eq!(query_param(None, "wait"), None);
        assert_eq!(query_param(Some("flag"), "flag").as_deref(), Some(""));
        assert_eq!(query_param(Some("x=%zz%4"), "x").as_deref(), Some("%zz%4"));
    }

    #[test]
    fn wait_is_case_insensitive_true_only() {
        assert!(wants_wait(Some("wait=TRUE")));
        assert!(wants_wait(Some("agent_token=x&wait=True")));
        assert!(!wants_wait(Some("wait=1")));
        assert!(!wants_wait(Some("wait=false")));
        assert!(!wants_wait(None));
    }
}

//! Bounds on what clients may make the API hold (INVARIANTS 5): header size, body
//! size, JSON nesting, connections, long-polls and time. The server and the router read
//! them from one [`ServerLimits`] value so tests can shrink the timeouts to milliseconds.

use std::time::Duration;

/// Every bound the API enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLimits {
    /// Request line plus headers, in bytes (hyper answers 431 above it).
    pub max_header_bytes: usize,
    /// Number of request headers.
    pub max_headers: usize,
    /// Request body, in bytes. The conductor's `write_image` carries a base64 config
    /// drive inside the JSON, so this is generous (spec 1.1).
    pub max_body_bytes: usize,
    /// Deepest allowed nesting of JSON arrays and objects in a body.
    pub max_json_depth: usize,
    /// Connections held at the same time (handshakes, idle keep-alives and requests in
    /// flight); more wait in the listen backlog.
    pub max_connections: usize,
    /// Open connections above which the server is under pressure; it is also under
    /// pressure when all `max_connections` are taken.
    pub busy_connections: usize,
    /// Under pressure, a connection that has not yet sent a complete request head is
    /// closed this long after it was accepted, so the oldest unfinished ones go first
    /// and a client that sent a request is never shed for one that has not.
    pub pressure_header_timeout: Duration,
    /// Time a client has to send a complete request head (and the TLS handshake); also
    /// closes idle keep-alive connections.
    pub header_read_timeout: Duration,
    /// `GET /v1/commands/<id>?wait=true` polls waiting at the same time; beyond it a poll
    /// answers at once with the command as it is, as a poll without `wait` would.
    pub max_long_polls: usize,
    /// Time a client has to send a complete request body.
    pub body_read_timeout: Duration,
    /// How long stopping waits for in-flight requests before dropping them.
    pub shutdown_grace: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_header_bytes: 16 * 1024,
            max_headers: 64,
            max_body_bytes: 128 * 1024 * 1024,
            max_json_depth: 64,
            max_connections: 512,
            busy_connections: 64,
            pressure_header_timeout: Duration::from_secs(2),
            header_read_timeout: Duration::from_secs(30),
            max_long_polls: 16,
            body_read_timeout: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Nesting depth of the JSON text `body` (arrays and objects), stopping as soon as it
/// exceeds `max`. Brackets inside strings do not count. Runs before the parser so a
/// deeply nested body costs one linear scan and no recursion.
pub fn json_depth_exceeds(body: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &byte in body {
        if in_string {
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_counts_brackets_outside_strings() {
        assert!(!json_depth_exceeds(br#"{"a": [1, {"b": 2}]}"#, 3));
        assert!(json_depth_exceeds(br#"{"a": [1, {"b": 2}]}"#, 2));
        assert!(!json_depth_exceeds(br#"{"a": "[[[[[[[[[[{{{{{{"}"#, 1));
        assert!(!json_depth_exceeds(br#"{"a": "\"[[[[[[\\"}"#, 1));
        assert!(json_depth_exceeds(br#"{"a": "\\", "b": [[1]]}"#, 2));
    }

    #[test]
    fn deep_nesting_is_caught_early() {
        let deep = "[".repeat(100_000);
        assert!(json_depth_exceeds(deep.as_bytes(), 64));
        let ok = format!("{}{}", "[".repeat(64), "]".repeat(64));
        assert!(!json_depth_exceeds(ok.as_bytes(), 64));
    }
}

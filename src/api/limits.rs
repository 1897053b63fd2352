//! Bounds on what clients may make the API hold (INVARIANTS 5): header size, body
//! size, JSON nesting, connections, long-polls and time. The server and the router read
//! them from one [`ServerLimits`] value so tests can shrink the timeouts to milliseconds.

use std::sync::atomic::{AtomicUsize, Ordering};
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
    /// Bytes all request bodies being read may hold together beyond each one's first
    /// [`BODY_ALLOWANCE`]; a body that would take more is refused with 413 as soon as it
    /// does, like one above `max_body_bytes`.
    pub max_total_body_bytes: usize,
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
            max_total_body_bytes: 160 * 1024 * 1024,
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

/// Bytes of each body not charged to the shared [`BodyBudget`], so that the small JSON
/// bodies of the conductor's commands are never refused because large ones hold the
/// budget. Together they are bounded by `max_connections`.
pub const BODY_ALLOWANCE: usize = 64 * 1024;

/// The byte budget all request bodies being read share (`max_total_body_bytes`).
#[derive(Debug)]
pub struct BodyBudget {
    limit: usize,
    free_per_body: usize,
    used: AtomicUsize,
}

impl BodyBudget {
    /// A budget of `limit` bytes, none taken, charging each body beyond `free_per_body`.
    pub fn new(limit: usize, free_per_body: usize) -> Self {
        Self {
            limit,
            free_per_body,
            used: AtomicUsize::new(0),
        }
    }

    /// An empty share of the budget, for one body.
    pub fn share(&self) -> BodyShare<'_> {
        BodyShare {
            budget: self,
            bytes: 0,
            charged: 0,
        }
    }

    /// Bytes charged to every share now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

/// Bytes one body holds of a [`BodyBudget`], given back when it drops.
#[derive(Debug)]
pub struct BodyShare<'a> {
    budget: &'a BodyBudget,
    bytes: usize,
    charged: usize,
}

impl BodyShare<'_> {
    /// Bytes this share lets its body hold.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Grows the share to `total` bytes; false (and unchanged) when the budget lacks them.
    pub fn grow_to(&mut self, total: usize) -> bool {
        if total <= self.bytes {
            return true;
        }
        let charge = total.saturating_sub(self.budget.free_per_body);
        let more = charge - self.charged;
        let limit = self.budget.limit;
        let taken = more == 0
            || self
                .budget
                .used
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                    used.checked_add(more).filter(|after| *after <= limit)
                })
                .is_ok();
        if taken {
            self.bytes = total;
            self.charged = charge;
        }
        taken
    }
}

impl Drop for BodyShare<'_> {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.charged, Ordering::AcqRel);
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
    fn body_shares_stay_within_the_budget_and_return_on_drop() {
        let budget = BodyBudget::new(100, 10);
        let mut a = budget.share();
        assert!(a.grow_to(10));
        assert_eq!(budget.used(), 0, "the allowance is free");
        assert!(a.grow_to(70));
        let mut b = budget.share();
        assert!(!b.grow_to(51));
        assert_eq!((b.bytes(), budget.used()), (0, 60));
        assert!(b.grow_to(50));
        assert!(a.grow_to(50), "shrinking requests are no-ops");
        assert_eq!((a.bytes(), budget.used()), (70, 100));
        drop(a);
        assert_eq!(budget.used(), 40);
        assert!(b.grow_to(110));
        drop(b);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn deep_nesting_is_caught_early() {
        let deep = "[".repeat(100_000);
        assert!(json_depth_exceeds(deep.as_bytes(), 64));
        let ok = format!("{}{}", "[".repeat(64), "]".repeat(64));
        assert!(!json_depth_exceeds(ok.as_bytes(), 64));
    }
}

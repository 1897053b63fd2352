//! The block-device allow-list (`--device-allowlist`): shell-style globs on `/dev` paths.
//!
//! Empty means IPA's behaviour (every device visible and writable). A non-empty list
//! hides every device it does not match from the disk listing and from the write door.
//! The glob dialect is small on purpose: `*` (any run of characters), `?` (one
//! character), `[...]` (a set, with ranges `a-z` and negation `[!..]` or `[^..]`). None
//! of them matches `/`, so `/dev/*` names device nodes, not `/dev/disk/by-id/...` links.

use std::path::Path;

/// Glob allow-list of block devices (`--device-allowlist`); empty = all visible.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    globs: Vec<String>,
}

impl AllowList {
    /// Builds the list from globs such as `/dev/loop7` or `/dev/vd*`; blank ones are dropped.
    pub fn new(globs: Vec<String>) -> Self {
        Self {
            globs: globs
                .into_iter()
                .map(|g| g.trim().to_owned())
                .filter(|g| !g.is_empty())
                .collect(),
        }
    }

    /// Builds the list from a comma-separated value (`/dev/loop7,/dev/vd[b-c]`).
    pub fn parse(list: &str) -> Self {
        Self::new(list.split(',').map(str::to_owned).collect())
    }

    /// True when no glob is set: everything is permitted.
    pub fn is_empty(&self) -> bool {
        self.globs.is_empty()
    }

    /// The globs, trimmed, in the order given.
    pub fn globs(&self) -> &[String] {
        &self.globs
    }

    /// Whether `path` may be listed and written: always when the list is empty.
    pub fn permits(&self, path: &Path) -> bool {
        self.is_empty() || self.names(path)
    }

    /// Whether a glob of a non-empty list matches `path` (used to show devices that are
    /// hidden by default, such as loop devices, only when asked for explicitly).
    pub fn names(&self, path: &Path) -> bool {
        let text = path.to_string_lossy();
        self.globs.iter().any(|g| glob_match(g, &text))
    }
}

/// Matches `text` against a glob of `*`, `?` and `[...]`; none of them matches `/`.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    // Where to resume after the last `*`: (pattern index after it, text index it covers to).
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if let Some(next) = step(&p, pi, t[ti]) {
            if next == usize::MAX {
                star = Some((pi + 1, ti));
                pi += 1;
                continue;
            }
            pi = next;
            ti += 1;
            continue;
        }
        // Mismatch: let the last `*` swallow one more character, unless that is a `/`.
        match star {
            Some((sp, st)) if t[st] != '/' => {
                star = Some((sp, st + 1));
                pi = sp;
                ti = st + 1;
            }
            _ => return false,
        }
    }
    p[pi.min(p.len())..].iter().all(|c| *c == '*')
}

/// Tries pattern element `pi` against `c`: the next pattern index on a match,
/// `usize::MAX` for a `*` (handled by the caller), `None` on a mismatch.
fn step(p: &[char], pi: usize, c: char) -> Option<usize> {
    match *p.get(pi)? {
        '*' => Some(usize::MAX),
        '?' => (c != '/').then_some(pi + 1),
        '[' => match class(p, pi, c) {
            Some((true, next)) => Some(next),
            Some((false, _)) => None,
            // No closing bracket: a literal `[`.
            None => (c == '[').then_some(pi + 1),
        },
        lit => (lit == c).then_some(pi + 1),
    }
}

/// Evaluates the set starting at `p[open] == '['` for `c`: (matched, index after `]`),
/// or `None` when the set is not closed.
fn class(p: &[char], open: usize, c: char) -> Option<(bool, usize)> {
    let mut i = open + 1;
    let negate = matches!(p.get(i), Some('!' | '^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let ch = *p.get(i)?;
        // A `]` right after `[` or `[!` is a literal member.
        if ch == ']' && !first {
            break;
        }
        first = false;
        if p.get(i + 1) == Some(&'-') && p.get(i + 2).is_some_and(|e| *e != ']') {
            let end = p[i + 2];
            matched |= ch <= c && c <= end;
            i += 3;
        } else {
            matched |= ch == c;
            i += 1;
        }
    }
    Some((c != '/' && matched != negate, i + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_table() {
        let cases = [
            ("/dev/loop0", "/dev/loop0", true),
            ("/dev/loop0", "/dev/loop01", false),
            ("/dev/loop*", "/dev/loop12", true),
            ("/dev/*", "/dev/disk/by-id/x", false),
            ("/dev/*/x", "/dev/disk/x", true),
            ("/dev/sd?", "/dev/sdb", true),
            ("/dev/sd?", "/dev/sdbb", false),
            ("/dev/vd[b-c]", "/dev/vdc", true),
            ("/dev/vd[b-c]", "/dev/vda", false),
            ("/dev/vd[!a]", "/dev/vda", false),
            ("/dev/vd[^a]", "/dev/vdb", true),
            ("/dev/x[]]", "/dev/x]", true),
            ("/dev/x[", "/dev/x[", true),
            ("*", "", true),
            ("", "", true),
            ("", "a", false),
            ("/dev/nvme*n1", "/dev/nvme10n1", true),
            ("/dev/nvme*n1", "/dev/nvme1n2", false),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
        ];
        for (pattern, text, want) in cases {
            assert_eq!(glob_match(pattern, text), want, "{pattern} vs {text}");
        }
    }

    #[test]
    fn list_semantics() {
        let empty = AllowList::parse(" , ");
        assert!(empty.is_empty());
        assert!(empty.permits(Path::new("/dev/sda")));
        assert!(!empty.names(Path::new("/dev/loop0")));

        let list = AllowList::parse("/dev/loop0, /dev/vd[b-z]");
        assert_eq!(list.globs(), ["/dev/loop0", "/dev/vd[b-z]"]);
        assert!(list.permits(Path::new("/dev/loop0")));
        assert!(list.permits(Path::new("/dev/vdb")));
        assert!(!list.permits(Path::new("/dev/vda")));
        assert!(list.names(Path::new("/dev/loop0")));
    }
}

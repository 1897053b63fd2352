//! SHA-256 crypt (`$5$`, Ulrich Drepper's "Unix crypt using SHA-256 and SHA-512"), the
//! scheme Ironic uses for rescue passwords (`[conductor]rescue_password_hash_algorithm`
//! default), and a shape check for the `$5$`/`$6$` hashes the conductor sends.
//!
//! Pure functions over bytes; the digests come from ring. Checked against the
//! specification's known answers (glibc's `tst-sha256crypt` vectors) below.

use ring::digest::{Context, SHA256};

/// Rounds when a setting names none (the specification's default).
pub const DEFAULT_ROUNDS: u32 = 5000;
const MIN_ROUNDS: u32 = 1000;
const MAX_ROUNDS: u32 = 999_999_999;
/// Longest salt the scheme uses; longer ones are cut.
pub const MAX_SALT: usize = 16;
/// The crypt(3) base-64 alphabet.
const ALPHABET: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const DIGEST: usize = 32;

/// A malformed `$5$` setting or hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptError {
    /// The text does not start with `$5$`.
    #[error("not a SHA-256 crypt setting (expected $5$...)")]
    Scheme,
    /// `rounds=` holds no number.
    #[error("bad rounds= value")]
    Rounds,
}

/// Hashes `password` with `salt` (at most [`MAX_SALT`] bytes are used) and `rounds`
/// (`None`: the default, and no `rounds=` in the output; values are clamped to the
/// specification's range), giving the full `$5$...` string.
pub fn hash_with(password: &[u8], salt: &[u8], rounds: Option<u32>) -> String {
    let salt = &salt[..salt.len().min(MAX_SALT)];
    let r = rounds.map_or(DEFAULT_ROUNDS, |r| r.clamp(MIN_ROUNDS, MAX_ROUNDS));
    let digest = digest(password, salt, r);
    let mut out = String::from("$5$");
    if rounds.is_some() {
        out.push_str(&format!("rounds={r}$"));
    }
    out.push_str(&String::from_utf8_lossy(salt));
    out.push('$');
    encode(&digest, &mut out);
    out
}

/// Hashes `password` with a fresh random 16-character salt and the default rounds.
pub fn hash(password: &[u8]) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    let salt: Vec<u8> = (0..MAX_SALT)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())])
        .collect();
    hash_with(password, &salt, None)
}

/// Hashes `password` with the salt and rounds of `setting` (a `$5$` hash or setting),
/// as crypt(3) does.
pub fn crypt(password: &[u8], setting: &str) -> Result<String, CryptError> {
    let rest = setting.strip_prefix("$5$").ok_or(CryptError::Scheme)?;
    let (rounds, rest) = match rest.strip_prefix("rounds=") {
        Some(r) => {
            let (num, rest) = r.split_once('$').ok_or(CryptError::Rounds)?;
            let n: u64 = num.parse().map_err(|_| CryptError::Rounds)?;
            (Some(u32::try_from(n).unwrap_or(MAX_ROUNDS)), rest)
        }
        None => (None, rest),
    };
    let salt = rest.split('$').next().unwrap_or_default();
    Ok(hash_with(password, salt.as_bytes(), rounds))
}

/// True when `hash` is the `$5$` hash of `password` (compared in constant time).
pub fn verify(password: &[u8], hash: &str) -> bool {
    use subtle::ConstantTimeEq;
    crypt(password, hash).is_ok_and(|h| h.as_bytes().ct_eq(hash.as_bytes()).into())
}

/// True when `text` has the shape of a SHA-256 (`$5$`) or SHA-512 (`$6$`) crypt hash:
/// optional `rounds=N$`, a salt of 1-16 characters of the crypt alphabet, then 43 or 86
/// characters of it.
pub fn is_sha_crypt_hash(text: &str) -> bool {
    let (rest, len) = if let Some(r) = text.strip_prefix("$5$") {
        (r, 43)
    } else if let Some(r) = text.strip_prefix("$6$") {
        (r, 86)
    } else {
        return false;
    };
    let rest = match rest.strip_prefix("rounds=") {
        Some(r) => match r.split_once('$') {
            Some((n, tail))
                if !n.is_empty() && n.len() <= 9 && n.bytes().all(|b| b.is_ascii_digit()) =>
            {
                tail
            }
            _ => return false,
        },
        None => rest,
    };
    let Some((salt, digest)) = rest.split_once('$') else {
        return false;
    };
    let crypt_chars = |s: &str| s.bytes().all(|b| ALPHABET.contains(&b));
    (1..=MAX_SALT).contains(&salt.len())
        && crypt_chars(salt)
        && digest.len() == len
        && crypt_chars(digest)
}

fn sha(parts: &[&[u8]]) -> [u8; DIGEST] {
    let mut ctx = Context::new(&SHA256);
    for p in parts {
        ctx.update(p);
    }
    finish(ctx)
}

fn finish(ctx: Context) -> [u8; DIGEST] {
    let mut out = [0u8; DIGEST];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// `len` bytes of `block` repeated (the specification's P and S sequences).
fn repeat_to(block: &[u8; DIGEST], len: usize) -> Vec<u8> {
    block.iter().copied().cycle().take(len).collect()
}

fn digest(password: &[u8], salt: &[u8], rounds: u32) -> [u8; DIGEST] {
    let b = sha(&[password, salt, password]);

    let mut a = Context::new(&SHA256);
    a.update(password);
    a.update(salt);
    a.update(&repeat_to(&b, password.len()));
    let mut n = password.len();
    while n > 0 {
        if n & 1 == 1 {
            a.update(&b);
        } else {
            a.update(password);
        }
        n >>= 1;
    }
    let a = finish(a);

    let mut dp = Context::new(&SHA256);
    for _ in 0..password.len() {
        dp.update(password);
    }
    let p = repeat_to(&finish(dp), password.len());

    let mut ds = Context::new(&SHA256);
    for _ in 0..16 + usize::from(a[0]) {
        ds.update(salt);
    }
    let s = repeat_to(&finish(ds), salt.len());

    let mut c = a;
    for i in 0..rounds {
        let mut ctx = Context::new(&SHA256);
        if i % 2 == 1 {
            ctx.update(&p);
        } else {
            ctx.update(&c);
        }
        if i % 3 != 0 {
            ctx.update(&s);
        }
        if i % 7 != 0 {
            ctx.update(&p);
        }
        if i % 2 == 1 {
            ctx.update(&c);
        } else {
            ctx.update(&p);
        }
        c = finish(ctx);
    }
    c
}

/// The specification's byte order for the 32 digest bytes, three at a time.
const ORDER: [[usize; 3]; 10] = [
    [0, 10, 20],
    [21, 1, 11],
    [12, 22, 2],
    [3, 13, 23],
    [24, 4, 14],
    [15, 25, 5],
    [6, 16, 26],
    [27, 7, 17],
    [18, 28, 8],
    [9, 19, 29],
];

fn encode(d: &[u8; DIGEST], out: &mut String) {
    let mut put = |b2: u8, b1: u8, b0: u8, n: usize| {
        let mut w = (u32::from(b2) << 16) | (u32::from(b1) << 8) | u32::from(b0);
        for _ in 0..n {
            out.push(char::from(ALPHABET[(w & 0x3f) as usize]));
            w >>= 6;
        }
    };
    for [x, y, z] in ORDER {
        put(d[x], d[y], d[z], 4);
    }
    put(0, d[31], d[30], 3);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The specification's SHA-256 crypt test vectors (glibc's `tst-sha256crypt`); each
    /// output also checked with `openssl passwd -5` and libxcrypt's crypt(3).
    const VECTORS: &[(&str, &str, &str)] = &[
        (
            "$5$saltstring",
            "Hello world!",
            "$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5",
        ),
        (
            "$5$rounds=10000$saltstringsaltstring",
            "Hello world!",
            "$5$rounds=10000$saltstringsaltst$3xv.VbSHBb41AL9AvLeujZkZRBAwqFMz2.opqey6IcA",
        ),
        (
            "$5$rounds=5000$toolongsaltstring",
            "This is just a test",
            "$5$rounds=5000$toolongsaltstrin$Un/5jzAHMgOGZ5.mWJpuVolil07guHPvOW8mGRcvxa5",
        ),
        (
            "$5$rounds=1400$anotherlongsaltstring",
            "a very much longer text to encrypt.  This one even stretches over morethan one line.",
            "$5$rounds=1400$anotherlongsalts$Rx.j8H.h8HjEDGomFU8bDkXm3XIUnzyxf12oP84Bnq1",
        ),
        (
            "$5$rounds=77777$short",
            "we have a short salt string but not a short password",
            "$5$rounds=77777$short$JiO1O3ZpDAxGJeaDIuqCoEFysAe1mZNJRs3pw0KQRd/",
        ),
        (
            "$5$rounds=123456$asaltof16chars..",
            "a short string",
            "$5$rounds=123456$asaltof16chars..$gP3VQ/6X7UUEW3HkBn2w1/Ptq2jxPyzV/cZKmF/wJvD",
        ),
        (
            "$5$rounds=10$roundstoolow",
            "the minimum number is still observed",
            "$5$rounds=1000$roundstoolow$yfvwcWrQ8l/K0DAWyuPMDNHpIVlTQebY9l/gL972bIC",
        ),
    ];

    #[test]
    fn known_answers() {
        for (setting, password, expected) in VECTORS {
            assert_eq!(
                crypt(password.as_bytes(), setting).unwrap(),
                *expected,
                "{setting}"
            );
            assert!(verify(password.as_bytes(), expected), "{expected}");
            assert!(is_sha_crypt_hash(expected), "{expected}");
        }
    }

    #[test]
    fn random_salt_hashes_verify_and_differ() {
        let a = hash(b"s3cret pass");
        let b = hash(b"s3cret pass");
        assert_ne!(a, b, "fresh salt each time");
        for h in [&a, &b] {
            assert!(h.starts_with("$5$"), "{h}");
            assert!(is_sha_crypt_hash(h), "{h}");
            assert!(verify(b"s3cret pass", h));
            assert!(!verify(b"s3cret pasS", h));
            assert!(!verify(b"", h));
        }
        assert_eq!(a.len(), 3 + MAX_SALT + 1 + 43);
    }

    #[test]
    fn empty_password_and_salt() {
        let h = hash_with(b"", b"", None);
        assert_eq!(h.len(), 3 + 1 + 43);
        assert!(verify(b"", &h));
    }

    #[test]
    fn hash_shapes() {
        let sha512 = format!("$6$abcdefgh${}", "A".repeat(86));
        let good = [
            "$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5",
            sha512.as_str(),
        ];
        for g in good {
            assert!(is_sha_crypt_hash(g), "{g}");
        }
        let bad = [
            "",
            "plain password",
            "$1$salt$abcdefghijklmnopqrstuv",
            "$5$$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZF4UjZLn.",
            "$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZF4UjZLn",
            "$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZF4UjZLn.\n",
            "$5$salt:string$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZF4UjZLn.",
            "$5$rounds=$salt$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZF4UjZLn.",
            "$5$0123456789abcdefg$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZF4UjZLn.",
            "$6$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZF4UjZLn.",
        ];
        for b in bad {
            assert!(!is_sha_crypt_hash(b), "{b:?}");
        }
    }

    #[test]
    fn bad_settings() {
        assert_eq!(crypt(b"x", "$6$salt$"), Err(CryptError::Scheme));
        assert_eq!(crypt(b"x", "$5$rounds=abc$salt"), Err(CryptError::Rounds));
        assert!(!verify(b"x", "not a hash"));
    }
}

//! SHA-256 and SHA-512 speed of ring and of OpenSSL (the `openssl-sha` feature) in this
//! build, for `bench/README.md`: which code bounds the hash stage on this CPU.
//!
//! usage: hash_speed [MIB] (default 1024): hashes MIB MiB from memory in 1 MiB updates,
//! each algorithm and library once, and prints one JSON line per run (MB/s, CPU s).
//! `OPENSSL_ia32cap=":~0x20000000"` hides SHA-NI from OpenSSL (its AVX2 code then runs,
//! as on a CPU without SHA extensions); ring has no such switch.

use std::time::Instant;

fn cpu_seconds() -> f64 {
    // utime + stime of this process, in clock ticks (fields 14 and 15 of /proc/self/stat).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = after
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    f.get(11)
        .zip(f.get(12))
        .map_or(0.0, |(u, s)| (u + s) / 100.0)
}

fn run(name: &str, mib: usize, buf: &[u8], mut update: impl FnMut(&[u8]), finish: impl FnOnce()) {
    let (t, c) = (Instant::now(), cpu_seconds());
    for _ in 0..mib {
        update(buf);
    }
    finish();
    let (s, cpu) = (t.elapsed().as_secs_f64(), cpu_seconds() - c);
    let mb = (mib << 20) as f64 / 1e6;
    println!(
        "{{\"run\": \"{name}\", \"mib\": {mib}, \"seconds\": {s:.3}, \"mb_s\": {:.0}, \"cpu_s\": {cpu:.2}}}",
        mb / s
    );
}

fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    // Not zeros, not constant: a cheap xorshift fill.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let buf: Vec<u8> = (0..1 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect();
    for (name, alg) in [
        ("ring_sha256", &ring::digest::SHA256),
        ("ring_sha512", &ring::digest::SHA512),
    ] {
        let mut c = ring::digest::Context::new(alg);
        let mut d = Some(&mut c);
        run(
            name,
            mib,
            &buf,
            |b| d.as_mut().map_or((), |c| c.update(b)),
            || (),
        );
        std::hint::black_box(c.finish());
    }
    #[cfg(feature = "openssl-sha")]
    {
        let mut c = openssl::sha::Sha256::new();
        run("openssl_sha256", mib, &buf, |b| c.update(b), || ());
        std::hint::black_box(c.finish());
        let mut c = openssl::sha::Sha512::new();
        run("openssl_sha512", mib, &buf, |b| c.update(b), || ());
        std::hint::black_box(c.finish());
    }
}

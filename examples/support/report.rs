//! What the benchmark examples share: one JSON line on stdout on success, the error on
//! stderr on failure, and the peak resident memory the process reached.

use std::process::ExitCode;

/// The process's peak resident set (`VmHWM`) in KiB; 0 when it cannot be read.
pub fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Prints the result line (or `prefix` and the error) and returns the exit code.
pub fn finish(prefix: &str, result: Result<String, String>) -> ExitCode {
    match result {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(msg) => {
            eprintln!("{prefix}{msg}");
            ExitCode::FAILURE
        }
    }
}

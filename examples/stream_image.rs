//! Streams one image through ira's pipeline onto a target, for `bench/stream.sh`.
//!
//! usage: stream_image URL TARGET (sha256|sha512|md5) HEX [--writers N] [--buffers N]
//!        [--chunk-kib N] [--reader-buffers N] [--reader-chunk-kib N] [--buffered]
//!        [--no-decompress] [--disk-format raw|qcow2]
//!
//! TARGET is opened through the allow-listed write door with an allow-list naming only
//! TARGET. Prints one JSON line: seconds, MB/s, bytes, peak RSS (VmHWM) and the report.

// The agent's own allocator (src/main.rs).
#[global_allocator]
static GLOBAL: ira::sys::alloc::LargeBlockCache = ira::sys::alloc::LargeBlockCache;

#[path = "support/report.rs"]
mod report;
#[path = "support/stream_run.rs"]
mod stream_run;

fn main() -> std::process::ExitCode {
    stream_run::main()
}

//! `stream_image` with mimalloc as the global allocator, to measure what the allocator
//! changes in a static musl build (musl's malloc maps and unmaps every large block).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "support/report.rs"]
mod report;
#[path = "support/stream_run.rs"]
mod stream_run;

fn main() -> std::process::ExitCode {
    stream_run::main()
}

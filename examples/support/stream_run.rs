//! The body shared by `stream_image` and `stream_image_mimalloc`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ira::blockdev::{open_for_write, AllowList};
use ira::deploy::format_gate::stage_for;
use ira::image::info::ImageInfo;
use ira::image::pipeline::{write_image, WriteOptions};
use ira::image::progress::Progress;
use ira::image::source::SourceOptions;
use ira::ironic::LookupSettings;

const USAGE: &str = "usage: stream_image URL TARGET (sha256|sha512|md5) HEX [--writers N] [--buffers N] [--chunk-kib N] [--reader-buffers N] [--reader-chunk-kib N] [--buffered] [--no-decompress] [--disk-format F]";

/// Runs the benchmark client; the allocator is chosen by the example that includes this.
#[tokio::main]
pub async fn main() -> ExitCode {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    crate::report::finish("", run().await)
}

async fn run() -> Result<String, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        return Err(USAGE.to_owned());
    }
    let (url, target, algo, hex) = (&args[0], PathBuf::from(&args[1]), &args[2], &args[3]);
    let mut opts = WriteOptions {
        md5_enabled: algo == "md5",
        source: SourceOptions {
            timeout: Duration::from_secs(60),
            retries: 0,
            retry_interval: Duration::from_secs(1),
            tls: None,
        },
        target_name: target.clone(),
        progress: Arc::new(Progress::new()),
        ..WriteOptions::default()
    };
    let mut disk_format = "raw".to_owned();
    let mut rest = args[4..].iter();
    while let Some(a) = rest.next() {
        let mut num = || -> Result<usize, String> {
            rest.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| USAGE.to_owned())
        };
        match a.as_str() {
            "--writers" => opts.writers = num()?,
            "--buffers" => opts.buffers = num()?,
            "--chunk-kib" => opts.chunk_size = num()? << 10,
            "--reader-buffers" => opts.reader_buffers = num()?,
            "--reader-chunk-kib" => opts.reader_chunk_size = num()? << 10,
            "--buffered" => opts.direct_io = false,
            "--no-decompress" => opts.decompress = false,
            "--disk-format" => disk_format = rest.next().ok_or_else(|| USAGE.to_owned())?.clone(),
            _ => return Err(USAGE.to_owned()),
        }
    }
    let info = ImageInfo::from_value(
        &serde_json::json!({"id": "bench", "urls": [url], "disk_format": disk_format,
            "stream_raw_images": true, "os_hash_algo": algo, "os_hash_value": hex}),
        opts.md5_enabled,
    )
    .map_err(|e| e.to_string())?;
    let allow = AllowList::new(vec![target.display().to_string()]);
    let file = open_for_write(&target, &allow).map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    // The decode stage the agent's write_image command picks for this image_info.
    let decode = stage_for(&info, &LookupSettings::default());
    let r = write_image(&info, file, &opts, decode)
        .await
        .map_err(|e| format!("error: {e}"))?;
    let s = t0.elapsed().as_secs_f64();
    Ok(format!(
        "{{\"seconds\": {s:.3}, \"mb_s\": {:.0}, \"bytes\": {}, \"maxrss_kib\": {}, \"stream_bytes\": {}, \"direct_io\": {}, \"requests\": {}}}",
        r.image_size as f64 / s / 1e6,
        r.image_size,
        crate::report::peak_rss_kib(),
        r.stream_size,
        r.direct_io,
        r.requests
    ))
}

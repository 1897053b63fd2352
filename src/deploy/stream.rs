//! Streaming an image onto a disk or partition, shared by whole-disk and partition
//! images: download options, the pipeline's options, progress in the status line.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::image::pipeline::{self, WriteOptions, WriteReport};
use crate::image::progress::Progress;
use crate::image::source::SourceOptions;
use crate::image::ImageInfo;

use super::env::DeployEnv;
use super::error::DeployError;
use super::status::StatusReporter;
use super::target::open_target;

/// How often the heartbeat status line is refreshed during a write.
const STATUS_EVERY: Duration = Duration::from_secs(2);

/// A write in progress: its counters, published in the status line until dropped.
#[derive(Debug)]
pub struct Writing {
    /// Counters the pipeline updates.
    pub progress: Arc<Progress>,
    _status: StatusReporter,
}

impl Writing {
    /// Starts publishing progress of `what` onto `target`.
    pub fn start(env: &DeployEnv, target: &Path, what: &str) -> Self {
        let progress = Arc::new(Progress::new());
        let label = format!("{what} to {}", target.display());
        let status = StatusReporter::start(
            Arc::clone(&env.status),
            &label,
            Arc::clone(&progress),
            STATUS_EVERY,
        );
        Self {
            progress,
            _status: status,
        }
    }
}

/// The pipeline options for writing onto `target` under the agent's configuration.
pub fn write_options(
    env: &DeployEnv,
    target: &Path,
    writing: &Writing,
) -> Result<WriteOptions, DeployError> {
    let source = source_options(env)?;
    Ok(WriteOptions {
        md5_enabled: env.settings.md5_enabled,
        source,
        target_name: target.to_path_buf(),
        progress: Arc::clone(&writing.progress),
        ..WriteOptions::default()
    })
}

/// Download options (timeouts, retries, TLS) from the agent's configuration.
pub fn source_options(env: &DeployEnv) -> Result<SourceOptions, DeployError> {
    let c = &env.config;
    let mut source = SourceOptions::from_config(c)
        .map_err(|e| DeployError::Execution(format!("image download set-up: {e}")))?;
    source.timeout = c.image_download_connection_timeout;
    source.retries = c.image_download_connection_retries;
    source.retry_interval = c.image_download_connection_retry_interval;
    Ok(source)
}

/// Streams `info` onto `target` (a disk or a partition) with progress in the status line.
pub async fn stream(
    env: &DeployEnv,
    target: &Path,
    info: &ImageInfo,
) -> Result<WriteReport, DeployError> {
    let file = open_target(env, target)?;
    let writing = Writing::start(env, target, "write_image");
    let opts = write_options(env, target, &writing)?;
    let decode = super::format_gate::stage_for(info, &env.settings);
    pipeline::write_image(info, file, &opts, decode)
        .await
        .map_err(|e| DeployError::image(&info.id, e))
}

//! `standby.prepare_image` and `standby.cache_image` (protocol spec 2.1/2.3, hardware
//! spec 8): validate `image_info`, decode the config drive before anything is written
//! (bad input leaves the disk untouched), pick the install device, write the whole-disk
//! or partition image unless this process already wrote the same image id there, and
//! remember what `get_partition_uuids` reports.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::commands::registry::blocking;
use crate::errors::CommandError;
use crate::image::pipeline::{Progress, WriteOptions};
use crate::image::source::SourceOptions;
use crate::image::ImageInfo;
use crate::partition::configdrive::ConfigDriveImage;
use crate::state::{AgentState, LookupSettings};

use super::status::StatusReporter;
use super::target::install_device;
use super::{PartitionUuids, Written};

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
    pub fn start(state: &Arc<AgentState>, target: &Path, what: &str) -> Self {
        let progress = Arc::new(Progress::new());
        let label = format!("{what} to {}", target.display());
        let status = StatusReporter::start(
            Arc::clone(state),
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
    state: &AgentState,
    target: &Path,
    writing: &Writing,
    settings: &LookupSettings,
) -> Result<WriteOptions, CommandError> {
    let source = source_options(state)?;
    Ok(WriteOptions {
        md5_enabled: settings.md5_enabled,
        source,
        target_name: target.to_path_buf(),
        progress: Arc::clone(&writing.progress),
        ..WriteOptions::default()
    })
}

/// Download options (timeouts, retries, TLS) from the agent's configuration.
pub fn source_options(state: &AgentState) -> Result<SourceOptions, CommandError> {
    let c = &state.config;
    let mut source = SourceOptions::from_config(c)
        .map_err(|e| CommandError::CommandExecution(format!("image download set-up: {e}")))?;
    source.timeout = c.image_download_connection_timeout;
    source.retries = c.image_download_connection_retries;
    source.retry_interval = c.image_download_connection_retry_interval;
    Ok(source)
}

/// Parses and validates `image_info` as IPA does (400 `InvalidCommandParamsError`).
pub fn parse_image_info(state: &AgentState, image_info: &Value) -> Result<ImageInfo, CommandError> {
    let md5 = state
        .lookup
        .lock()
        .expect("lookup lock poisoned")
        .md5_enabled;
    ImageInfo::from_value(image_info, md5).map_err(|e| match e.to_command_error("") {
        CommandError::InvalidCommandParams(m) => CommandError::InvalidCommandParams(m),
        other => CommandError::InvalidCommandParams(other.to_string()),
    })
}

/// The config drive argument: a non-empty string, or nothing.
fn configdrive_text(configdrive: Option<&Value>) -> Result<Option<String>, CommandError> {
    match configdrive {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(CommandError::InvalidCommandParams(
            "configdrive must be a string (gzip+base64 content or a URL)".to_owned(),
        )),
    }
}

/// `standby.prepare_image`: returns IPA's message (`image (<id>) written to device
/// <dev> root_uuid=<uuid>`, plus ` efi_system_partition_uuid=<uuid>` when one was made).
pub async fn prepare_image(
    state: &Arc<AgentState>,
    image_info: &Value,
    configdrive: Option<&Value>,
) -> Result<String, CommandError> {
    let info = parse_image_info(state, image_info)?;
    let node_uuid = info.node_uuid.clone().unwrap_or_else(|| "local".to_owned());
    // The conductor sends the config drive as the argument and again inside image_info.
    let configdrive = match configdrive {
        None | Some(Value::Null) => image_info.get("configdrive"),
        given => given,
    };
    let drive = match configdrive_text(configdrive)? {
        Some(text) => {
            let source = source_options(state)?;
            Some(super::configdrive::fetch(&text, &node_uuid, &source).await?)
        }
        None => None,
    };
    let st = Arc::clone(state);
    let device = blocking(move || install_device(&st)).await??;
    let uuids = match state.deploy.written() {
        Some(w) if w.image_id == info.id && w.device == device && !info.is_partition_image() => {
            tracing::info!(image = %info.id, device = %device.display(),
                "image already written to this device by this agent; not downloading it again");
            refresh_whole_disk(state, &device, &node_uuid, drive).await?
        }
        Some(w) if w.image_id == info.id && w.device == device => w.uuids,
        _ => {
            state.deploy.forget();
            write(state, &device, &info, drive).await?
        }
    };
    state.deploy.record(Written {
        image_id: info.id.clone(),
        device: device.clone(),
        uuids: uuids.clone(),
    });
    let mut msg = format!(
        "image ({}) written to device {} root_uuid={}",
        info.id,
        device.display(),
        uuids.root_uuid()
    );
    if let Some(esp) = uuids.efi_system_partition_uuid() {
        msg.push_str(&format!(" efi_system_partition_uuid={esp}"));
    }
    tracing::info!("{msg}");
    Ok(msg)
}

/// `standby.cache_image`: writes the image to the install device unless it is already
/// there (or `force`), so a later `prepare_image` of the same id downloads nothing.
pub async fn cache_image(
    state: &Arc<AgentState>,
    image_info: &Value,
    force: bool,
) -> Result<String, CommandError> {
    let info = parse_image_info(state, image_info)?;
    let st = Arc::clone(state);
    let device = blocking(move || install_device(&st)).await??;
    let cached = state
        .deploy
        .written()
        .is_some_and(|w| w.image_id == info.id && w.device == device);
    if force || !cached {
        state.deploy.forget();
        let uuids = write(state, &device, &info, None).await?;
        state.deploy.record(Written {
            image_id: info.id.clone(),
            device: device.clone(),
            uuids,
        });
    } else {
        tracing::info!(image = %info.id, "image already cached on the install device");
    }
    Ok(format!(
        "image ({}) cached to device {}",
        info.id,
        device.display()
    ))
}

async fn write(
    state: &Arc<AgentState>,
    device: &Path,
    info: &ImageInfo,
    drive: Option<ConfigDriveImage>,
) -> Result<PartitionUuids, CommandError> {
    if info.is_partition_image() {
        super::partition_image::write(state, device, info, drive).await
    } else {
        super::whole_disk::write(state, device, info, drive).await
    }
}

async fn refresh_whole_disk(
    state: &Arc<AgentState>,
    device: &Path,
    node_uuid: &str,
    drive: Option<ConfigDriveImage>,
) -> Result<PartitionUuids, CommandError> {
    let st = Arc::clone(state);
    let dev = device.to_path_buf();
    let node = node_uuid.to_owned();
    blocking(move || super::whole_disk::finish_cached(&st, &dev, &node, drive.as_ref())).await?
}

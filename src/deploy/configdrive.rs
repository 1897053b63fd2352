//! The config drive as the conductor sends it (gzip+base64 text or a URL), fetched with
//! a bounded body and decoded with bounded inflation (hardware spec 7.2), and its
//! placement on a whole-disk image (7.3, done natively in [`crate::partition::configdrive`]).

use std::fs::File;
use std::path::Path;
use std::time::Duration;

use crate::image::source::SourceOptions;
use crate::image::url::RedactedUrl;
use crate::partition::configdrive::{
    self as cd, decode_downloaded, ConfigDriveImage, Decoded, Placement,
};
use crate::partition::Geometry;
use crate::sys::block;

use super::error::DeployError;

/// Largest body accepted from a config drive URL: base64 of a gzip that may inflate to
/// the 64 MiB limit, or a plain image of that size.
const MAX_BODY: u64 = 96 << 20;

/// Decodes `value` (downloading it first when it is a URL).
pub async fn fetch(
    value: &str,
    node_uuid: &str,
    source: &SourceOptions,
) -> Result<ConfigDriveImage, DeployError> {
    let url = match cd::decode(value, node_uuid)? {
        Decoded::Image(img) => return Ok(img),
        Decoded::NeedsDownload(url) => url,
    };
    let shown = RedactedUrl::parse(&url)
        .map(|u| u.to_string())
        .unwrap_or_else(|_| "<invalid URL>".to_owned());
    let failed = |reason: String| DeployError::ConfigDriveDownload {
        node_uuid: node_uuid.to_owned(),
        url: shown.clone(),
        reason,
    };
    let body = download(&url, source).await.map_err(failed)?;
    let node = node_uuid.to_owned();
    tokio::task::spawn_blocking(move || decode_downloaded(&body, &node))
        .await
        .map_err(|e| DeployError::Execution(e.to_string()))?
        .map_err(DeployError::from)
}

async fn download(url: &str, source: &SourceOptions) -> Result<Vec<u8>, String> {
    let tls = match &source.tls {
        Some(t) => t.clone(),
        None => crate::tls_client::client_config_with(false, None, "1.2", url.starts_with("https"))
            .map_err(|e| e.to_string())?,
    };
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .connect_timeout(source.timeout)
        .read_timeout(source.timeout.max(Duration::from_secs(1)))
        .no_proxy()
        .build()
        .map_err(|e| e.without_url().to_string())?;
    let mut resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| e.without_url().to_string())?;
    if resp.status().as_u16() >= 400 {
        return Err(format!("HTTP status {}", resp.status().as_u16()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| e.without_url().to_string())?
    {
        if (body.len() + chunk.len()) as u64 > MAX_BODY {
            return Err(format!("the body is larger than {} MiB", MAX_BODY >> 20));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Places `image` on the whole-disk image just written to `disk` (opened as `dev`) and
/// makes the kernel re-read the table.
pub fn place(
    disk: &mut File,
    dev: &Path,
    node_uuid: &str,
    image: &ConfigDriveImage,
) -> Result<Placement, DeployError> {
    let geometry = Geometry::of_file(disk).map_err(|e| {
        DeployError::Disk(format!(
            "Failed to create config drive on disk {} for node {node_uuid}. Error: {e}",
            dev.display()
        ))
    })?;
    let placed = cd::place_on_whole_disk(disk, geometry, dev, node_uuid, image)?;
    block::rescan(disk).map_err(|e| {
        DeployError::Disk(format!(
            "Failed to create config drive on disk {} for node {node_uuid}. Error: {e}",
            dev.display()
        ))
    })?;
    tracing::info!(partition = %placed.path.display(), created = placed.created,
        size = placed.size, "config drive written");
    Ok(placed)
}

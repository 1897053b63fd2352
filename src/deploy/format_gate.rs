//! The stage that turns the downloaded (and decompressed) stream into disk bytes: a plain
//! copy when the conductor declared `raw`/`gpt` (IPA never inspects those), otherwise
//! the format gate on the stream's first bytes and then either a copy (raw-like formats)
//! or the streaming qcow2 reader. Nothing reaches the disk before the gate has passed.

use std::io::BufRead;
use std::sync::Arc;

use crate::image::format::{self, Format};
use crate::image::pipeline::{Decode, QueueSink};
use crate::image::qcow2::{self, GuestSink};
use crate::image::{ImageError, ImageInfo};
use crate::ironic::LookupSettings;

/// Whether an image declared as `declared` is inspected at all: IPA copies declared
/// `raw`/`gpt` bit for bit, whatever the bytes look like.
pub fn inspects(declared: Option<&str>) -> bool {
    !matches!(declared, Some("raw") | Some("gpt"))
}

/// The decode stage for `info` under the lookup's image settings.
pub fn stage_for(info: &ImageInfo, settings: &LookupSettings) -> Decode {
    let declared = info.disk_format.clone();
    if !inspects(declared.as_deref()) {
        return Decode::Raw;
    }
    let permitted = settings.permitted_image_formats.clone();
    let inspection_disabled = settings.disable_deep_image_inspection;
    Decode::Custom(Arc::new(move |r, sink| {
        let head = r
            .fill_buf()
            .map_err(|e| ImageError::InvalidImage(e.to_string()))?;
        let head = &head[..head.len().min(format::SNIFF_LEN)];
        let found = format::gate(
            &format::detect(head),
            declared.as_deref(),
            &permitted,
            inspection_disabled,
        )
        .map_err(|e| ImageError::InvalidImage(e.to_string()))?;
        tracing::info!(format = found.name(), "image format accepted");
        match found {
            Format::Qcow2 => qcow2::stream(r, sink, qcow2::Limits::default())
                .map(|summary| {
                    tracing::info!(?summary, "qcow2 image decoded");
                })
                .map_err(|e| ImageError::InvalidImage(e.to_string())),
            Format::Raw | Format::Gpt | Format::Iso => copy(r, sink),
            other => Err(ImageError::InvalidImage(format!(
                "Security: Detected image format was {}, but this agent cannot convert it",
                other.name()
            ))),
        }
    }))
}

/// Copies the stream to the same offsets on the target.
fn copy(r: &mut dyn BufRead, sink: &mut QueueSink) -> Result<(), ImageError> {
    let mut offset = 0u64;
    loop {
        let buf = r
            .fill_buf()
            .map_err(|e| ImageError::InvalidImage(format!("reading the image: {e}")))?;
        if buf.is_empty() {
            return Ok(());
        }
        let n = buf.len();
        sink.write_at(offset, buf)
            .map_err(|e| ImageError::Internal(format!("queueing image data: {e}")))?;
        r.consume(n);
        offset += n as u64;
    }
}

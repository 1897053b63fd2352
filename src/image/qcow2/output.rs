//! What the reader hands to the sink: data runs cut into whole sectors, and zero or
//! unallocated guest ranges coalesced into one call each.

use super::{GuestSink, Qcow2Error, Summary};

const SECTOR: usize = 512;

/// Which fill callback a guest range goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fill {
    Zero,
    Unallocated,
}

/// Writes a data run's bytes in whole sectors; `carry` holds a partial sector between
/// calls (its length is always `rel % 512`).
pub(super) fn feed_data(
    guest: u64,
    guest_len: u64,
    mut rel: u64,
    carry: &mut Vec<u8>,
    mut data: &[u8],
    sink: &mut dyn GuestSink,
    summary: &mut Summary,
) -> Result<(), Qcow2Error> {
    if !carry.is_empty() {
        let take = (SECTOR - carry.len()).min(data.len());
        carry.extend_from_slice(&data[..take]);
        data = &data[take..];
        rel += take as u64;
        if carry.len() < SECTOR {
            return Ok(());
        }
        emit(guest, guest_len, rel - SECTOR as u64, carry, sink, summary)?;
        carry.clear();
    }
    let whole = data.len() / SECTOR * SECTOR;
    emit(guest, guest_len, rel, &data[..whole], sink, summary)?;
    carry.extend_from_slice(&data[whole..]);
    Ok(())
}

/// Writes run bytes at run offset `rel`, clipped to the virtual disk.
fn emit(
    guest: u64,
    guest_len: u64,
    rel: u64,
    bytes: &[u8],
    sink: &mut dyn GuestSink,
    summary: &mut Summary,
) -> Result<(), Qcow2Error> {
    if bytes.is_empty() || rel >= guest_len {
        return Ok(());
    }
    let n = usize::try_from(guest_len - rel).map_or(bytes.len(), |left| left.min(bytes.len()));
    let offset = guest + rel;
    sink.write_at(offset, &bytes[..n])
        .map_err(|source| Qcow2Error::Sink { offset, source })?;
    summary.data_bytes += n as u64;
    Ok(())
}

/// Coalesces adjacent zero or unallocated guest ranges into one sink call.
#[derive(Debug, Default)]
pub(super) struct Fills {
    cur: Option<(Fill, u64, u64)>,
}

impl Fills {
    pub(super) fn add(
        &mut self,
        kind: Fill,
        off: u64,
        len: u64,
        sink: &mut dyn GuestSink,
        summary: &mut Summary,
    ) -> Result<(), Qcow2Error> {
        if let Some((k, o, l)) = &mut self.cur {
            if *k == kind && *o + *l == off {
                *l += len;
                return Ok(());
            }
        }
        self.flush(sink, summary)?;
        self.cur = Some((kind, off, len));
        Ok(())
    }

    pub(super) fn flush(
        &mut self,
        sink: &mut dyn GuestSink,
        summary: &mut Summary,
    ) -> Result<(), Qcow2Error> {
        let Some((kind, offset, len)) = self.cur.take() else {
            return Ok(());
        };
        let r = match kind {
            Fill::Zero => {
                summary.zero_bytes += len;
                sink.zero(offset, len)
            }
            Fill::Unallocated => {
                summary.unallocated_bytes += len;
                sink.unallocated(offset, len)
            }
        };
        r.map_err(|source| Qcow2Error::Sink { offset, source })
    }
}

//! The whole-disk deploy harness: the devices, images, agent and checks the
//! `write_image` tests share. Images are served over 127.0.0.1 and written onto loop
//! devices with partition scanning, like a real disk.

pub mod checks;
pub mod client;
pub mod images;

use serde_json::{json, Value};

use client::{start, Agent};
use images::Scratch;

use crate::common::fixtures::sha256_hex;
use crate::common::loopdev::LoopDev;
use crate::common::misbehaving_http::{Behaviour, MisbehavingServer};

/// One mebibyte.
pub const MIB: u64 = 1 << 20;
/// [`MIB`] as a buffer length.
pub const MIB_LEN: usize = 1 << 20;
/// The agent token the conductor holds.
pub const TOKEN: &str = "dep1oyT0kenXq3aZ9vV1bB2nN4mM5kK6jJ7hH8gG9fF";
/// The node being deployed.
pub const NODE_UUID: &str = "5b0c7a1e-2f3d-4c5b-9a8e-7d6c5b4a3f21";
/// The MBR disk signature put at byte 440 of the test images.
pub const SIG: u32 = 0x1a2b_3c4d;
/// Size of the test images (smaller than the devices, so the backup GPT must move).
pub const IMAGE_LEN: u64 = 24 * MIB;
/// Size of the install device.
pub const DEV_LEN: u64 = 160 * MIB;

/// A loop device with partition scanning over a sparse file of `size` bytes.
/// Partition scanning matters: placing a config drive re-reads the table (BLKRRPART),
/// which a loop device without it refuses. The kernel may still create no partition
/// nodes (a kernel without table parsers), so tests read partitions at their offsets.
pub fn new_disk(size: u64) -> LoopDev {
    LoopDev::builder(size).partscan(true).attach()
}

/// The `image_info` of a raw-streamed image `id` at `url`, checksummed over `served`.
pub fn image_info(id: &str, url: &str, served: &[u8], disk_format: Value) -> Value {
    json!({
        "id": id,
        "urls": [url],
        "disk_format": disk_format,
        "container_format": "bare",
        "stream_raw_images": true,
        "os_hash_algo": "sha256",
        "os_hash_value": sha256_hex(served),
        "node_uuid": NODE_UUID,
    })
}

/// A misbehaving HTTP server on 127.0.0.1 serving `body` at `path`.
pub async fn serve(path: &str, body: Vec<u8>, behaviour: Behaviour) -> MisbehavingServer {
    let srv = MisbehavingServer::start(behaviour).await;
    srv.add(path, body);
    srv
}

/// Where most deploy tests start: an install device of [`DEV_LEN`], the scratch
/// directory where [`Scratch::gpt_image`] of `seed` was built, the image, its server
/// (at `/disk.img`) and an agent that may write only that device.
pub async fn gpt_setup(seed: u64) -> (LoopDev, Scratch, Vec<u8>, MisbehavingServer, Agent) {
    let disk = new_disk(DEV_LEN);
    let scratch = Scratch::new();
    let image = scratch.gpt_image(seed);
    let srv = serve("/disk.img", image.clone(), Behaviour::default()).await;
    let agent = start(&[&disk]).await;
    (disk, scratch, image, srv, agent)
}

//! The format sniffer and gate on arbitrary heads: never a panic, whatever the bytes.
#![no_main]

use ira::image::format::{detect, gate};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|head: &[u8]| {
    let detected = detect(head);
    let resolved = detected.resolve();
    let permitted = ["raw", "gpt", "qcow2", "iso", "vmdk", "luks"].map(String::from);
    let gated = gate(&detected, None, &permitted, false);
    // Whatever the gate lets through was among the detected formats (or raw).
    if let (Ok(format), Ok(found)) = (gated, resolved) {
        assert_eq!(format, found.format);
    }
    let _ = gate(&detected, Some("qcow2"), &permitted, true);
});

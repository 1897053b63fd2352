//! Whole-disk images for the deploy tests, built with the tools a user would use
//! (sgdisk, sfdisk, qemu-img, genisoimage), and their encodings.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

use base64::Engine as _;
use serde_json::json;

use super::{IMAGE_LEN, MIB, MIB_LEN, NODE_UUID, SIG};
use crate::common::cmd::{run, spawn_with_stdin};
use crate::common::fixtures::pseudo_random;

/// `data` gzip-compressed.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// `data` in standard base64.
pub fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Scratch files for one test.
pub struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    /// A fresh temp directory.
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// `name` inside the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `name` inside the directory, as a string for command lines.
    pub fn path_str(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// A GPT whole-disk image of [`IMAGE_LEN`]: an ESP and a root partition filled with
    /// data up to the last usable sector, and [`SIG`] as MBR disk signature.
    pub fn gpt_image(&self, seed: u64) -> Vec<u8> {
        let path = self.path_str("disk.raw");
        File::create(&path).unwrap().set_len(IMAGE_LEN).unwrap();
        run(
            "sgdisk",
            &[
                "-n",
                "1:2048:+4M",
                "-t",
                "1:ef00",
                "-c",
                "1:esp",
                "-n",
                "2:0:0",
                "-t",
                "2:8300",
                "-c",
                "2:root",
                &path,
            ],
        );
        let mut bytes = std::fs::read(&path).unwrap();
        let end = usize::try_from(IMAGE_LEN - 34 * 512).unwrap();
        // From the end of the entries: the gap before the first partition is image
        // content too (boot loaders live there) and sits in the held-back first MiB.
        pseudo_random(&mut bytes[34 * 512..end], seed);
        // The last sector of the root partition holds data too: moving the backup GPT
        // must not touch it.
        bytes[end - 512..end].fill(0xC3);
        bytes[440..444].copy_from_slice(&SIG.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        bytes
    }

    /// A GPT image of [`IMAGE_LEN`] with an ESP, a root and `copies` 4 MiB partitions
    /// holding `iso` (an image that brings its own config drive); returns the image and
    /// the byte offsets of those partitions.
    pub fn gpt_image_with_config_drives(
        &self,
        seed: u64,
        iso: &[u8],
        copies: u32,
    ) -> (Vec<u8>, Vec<u64>) {
        let path = self.path_str("disk-cd.raw");
        File::create(&path).unwrap().set_len(IMAGE_LEN).unwrap();
        let mut args: Vec<String> = [
            "-n",
            "1:2048:+4M",
            "-t",
            "1:ef00",
            "-n",
            "2:0:+8M",
            "-t",
            "2:8300",
        ]
        .map(String::from)
        .to_vec();
        for n in 3..3 + copies {
            args.extend(["-n".into(), format!("{n}:0:+4M")]);
        }
        args.push(path.clone());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        run("sgdisk", &refs);
        let mut bytes = std::fs::read(&path).unwrap();
        pseudo_random(&mut bytes[MIB_LEN..13 * MIB_LEN], seed);
        bytes[440..444].copy_from_slice(&SIG.to_le_bytes());
        let mut offsets = Vec::new();
        for k in 0..copies as u64 {
            let off = 13 * MIB + k * 4 * MIB;
            let at = usize::try_from(off).unwrap();
            bytes[at..at + iso.len()].copy_from_slice(iso);
            offsets.push(off);
        }
        (bytes, offsets)
    }

    /// An MBR (msdos) whole-disk image of [`IMAGE_LEN`] with disk identifier [`SIG`]:
    /// a FAT32 boot partition and a Linux root, both holding data.
    pub fn mbr_image(&self, seed: u64) -> Vec<u8> {
        let path = self.path_str("mbr.raw");
        File::create(&path).unwrap().set_len(IMAGE_LEN).unwrap();
        let script = format!("label: dos\nlabel-id: 0x{SIG:08x}\n2048,8192,c,*\n,,83\n");
        let mut child = spawn_with_stdin(
            Command::new("sfdisk").args(["-q", &path]),
            script.as_bytes(),
        );
        assert!(child.wait().unwrap().success());
        let mut bytes = std::fs::read(&path).unwrap();
        // The gap after the MBR (where GRUB embeds itself) holds data too.
        pseudo_random(&mut bytes[512..], seed);
        assert_eq!(u32::from_le_bytes(bytes[440..444].try_into().unwrap()), SIG);
        bytes
    }

    /// `raw` converted to a compressed qcow2 by qemu-img.
    pub fn qcow2(&self, raw: &[u8]) -> Vec<u8> {
        let src = self.path_str("qcow-src.raw");
        let dst = self.path_str("disk.qcow2");
        std::fs::write(&src, raw).unwrap();
        run(
            "qemu-img",
            &[
                "convert", "-q", "-c", "-f", "raw", "-O", "qcow2", &src, &dst,
            ],
        );
        std::fs::read(&dst).unwrap()
    }

    /// An ISO 9660 config drive labelled `config-2` with a meta_data.json and user data.
    pub fn config_drive_iso(&self, user_data: &str) -> Vec<u8> {
        let root = self.path("cd");
        let latest = root.join("openstack/latest");
        std::fs::create_dir_all(&latest).unwrap();
        std::fs::write(
            latest.join("meta_data.json"),
            json!({"uuid": NODE_UUID, "name": "deploy-test"}).to_string(),
        )
        .unwrap();
        std::fs::write(latest.join("user_data"), user_data).unwrap();
        let iso = self.path_str("cd.iso");
        run(
            "genisoimage",
            &[
                "-quiet",
                "-o",
                &iso,
                "-V",
                "config-2",
                "-r",
                "-J",
                root.to_str().unwrap(),
            ],
        );
        std::fs::read(&iso).unwrap()
    }
}

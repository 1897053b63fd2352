//! The GRUB path of `install_bootloader` (spec 9.5, IPA `_install_grub2`), run only when
//! the conductor sets `enable_bios_bootloader_install`: mount the written root, bind the
//! ramdisk's `/dev`, `/proc`, `/run` and a sysfs into it, and run the image's own
//! `grub-install` and `grub-mkconfig` in a chroot. With an ESP the loaders land on it and
//! the UEFI entries are then written natively (as after a whole-disk image), and the
//! image's `/etc/fstab` gets the ESP line (spec 9.4).
//!
//! The image is hostile until proven otherwise: every mount point and the fstab are
//! resolved inside the root (`openat2` with `RESOLVE_IN_ROOT`), so a symlinked `/dev` or
//! `/boot/efi` in the image cannot point a mount at the ramdisk's own directories, and
//! the chroot commands get a fresh environment. Software RAID roots are refused.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

use super::efi_assets;
use super::esp::{DiskView, EspError, Located};
use super::{rooted, BootEnv, Request};
use crate::deploy::error::DeployError;
use crate::deploy::mount::{MountKind, MountPoint, Mounts};

/// PATH for the chroot commands (IPA appends `:/bin:/usr/sbin:/sbin` to its own).
const CHROOT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Largest fstab read before appending.
const MAX_FSTAB_BYTES: u64 = 1 << 20;

/// Why the GRUB install failed (becomes IPA's message in [`install_grub2`]).
#[derive(Debug, thiserror::Error)]
enum GrubError {
    #[error("{0}")]
    Disk(String),
    #[error("{what} resolves outside the image root or is not a directory: {error}")]
    Unsafe {
        what: String,
        error: nix::errno::Errno,
    },
    #[error("{0}")]
    Mount(#[from] crate::deploy::mount::MountError),
    #[error("running {cmd}: {error}")]
    Spawn { cmd: String, error: std::io::Error },
    #[error("{cmd} exited with {status}: {stderr}")]
    Failed {
        cmd: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("updating the image's /etc/fstab: {0}")]
    Fstab(String),
    #[error("software RAID root devices are not supported by this agent")]
    SoftwareRaid,
}

/// Installs GRUB from the image whose root filesystem has `root_uuid` on the install
/// device.
pub fn install_grub2(env: &BootEnv<'_>, root_uuid: &str, req: &Request) -> Result<(), DeployError> {
    let dev = env.device.display().to_string();
    match install(env, root_uuid, req) {
        Ok(()) => {
            tracing::info!(device = %dev, "GRUB2 successfully installed");
            Ok(())
        }
        Err(Step::NotFound(e)) => Err(DeployError::DeviceNotFound(e.to_string())),
        Err(Step::Grub(e)) => Err(DeployError::Execution(format!(
            "Installing GRUB2 boot loader to device {dev} failed with {e}."
        ))),
    }
}

/// How a step failed: a partition missing, or GRUB.
enum Step {
    NotFound(EspError),
    Grub(GrubError),
}

impl From<GrubError> for Step {
    fn from(e: GrubError) -> Self {
        Step::Grub(e)
    }
}

fn find(disk: &mut DiskView, uuid: &str) -> Result<Located, Step> {
    disk.by_uuid(uuid).map_err(|e| match e {
        EspError::NotFound(_) => Step::NotFound(e),
        other => Step::Grub(GrubError::Disk(other.to_string())),
    })
}

fn install(env: &BootEnv<'_>, root_uuid: &str, req: &Request) -> Result<(), Step> {
    if super::uefi::is_md(env.device) {
        return Err(GrubError::SoftwareRaid.into());
    }
    let mut disk = DiskView::open(env.device, &rooted(env, env.device))
        .map_err(|e| GrubError::Disk(e.to_string()))?;
    let root = find(&mut disk, root_uuid)?;
    let esp = match req.efi_system_part_uuid.as_deref() {
        Some(u) => Some(find(&mut disk, u)?),
        None => None,
    };
    let prep = match req.prep_boot_part_uuid.as_deref() {
        Some(u) => Some(find(&mut disk, u)?),
        None => None,
    };
    for part in std::iter::once(&root)
        .chain(esp.as_ref())
        .chain(prep.as_ref())
    {
        disk.ensure_node(part, env.sysroot)
            .map_err(|e| GrubError::Disk(e.to_string()))?;
    }

    let mount_point = MountPoint::new("root").map_err(|e| GrubError::Disk(e.to_string()))?;
    let result = in_root(
        env,
        req,
        mount_point.path(),
        &root,
        esp.as_ref(),
        prep.as_ref(),
    );
    drop(mount_point);
    let outcome = result?;

    if outcome == Outcome::GrubInstalled && esp.is_some() {
        // grub-install inside the chroot cannot reach the variables; register what it
        // put on the ESP as for a whole-disk image. IPA leaves this to the firmware's
        // removable-media fallback, so a failure here is only logged.
        match super::efi_boot_setup(env, req) {
            Ok(true) => tracing::info!("UEFI boot entries written for the installed GRUB"),
            Ok(false) => tracing::info!("no UEFI boot entry written after grub-install"),
            Err(e) => {
                tracing::warn!(error = %e, "writing UEFI boot entries after grub-install failed")
            }
        }
    }
    Ok(())
}

/// What the root-mounted part did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The image's EFI assets were copied and registered; GRUB was not installed.
    AssetsPreserved,
    /// `grub-install` ran.
    GrubInstalled,
}

/// Everything done with the root mounted; every mount is undone before returning.
fn in_root(
    env: &BootEnv<'_>,
    req: &Request,
    target: &Path,
    root: &Located,
    esp: Option<&Located>,
    prep: Option<&Located>,
) -> Result<Outcome, GrubError> {
    let mut mounts = Mounts::new(env.mounter);
    mounts.mount(&rooted(env, &root.path), target, MountKind::Fs(None))?;
    for dir in ["dev", "proc", "run"] {
        let inside = resolve_dir(target, dir)?;
        mounts.mount(&env.sysroot.join(dir), &inside, MountKind::Bind)?;
    }
    let sys = resolve_dir(target, "sys")?;
    mounts.mount(
        Path::new("sysfs"),
        &sys,
        MountKind::Fs(Some("sysfs".to_owned())),
    )?;

    let grub = if exists_in_root(target, "usr/sbin/grub2-install") {
        "grub2"
    } else {
        "grub"
    };
    let esp_uuid = req.efi_system_part_uuid.as_deref();
    if let (Some(esp), Some(uuid)) = (esp, esp_uuid) {
        if let Ok(assets) = resolve_dir(target, "boot/efi/EFI") {
            if preserve_assets(env, req, target, grub, esp, &assets)? {
                append_fstab(target, &fstab_key(esp, uuid))?;
                mounts.close()?;
                return Ok(Outcome::AssetsPreserved);
            }
            tracing::info!("EFI assets not preserved: installing GRUB from the image");
        }
    }
    match esp {
        Some(esp) => {
            let efi_dir = resolve_dir(target, "boot/efi")?;
            mounts.mount(
                &rooted(env, &esp.path),
                &efi_dir,
                MountKind::Fs(Some("vfat".to_owned())),
            )?;
            // Either may fail on an image built for one layout; IPA only logs them.
            for args in ["", " --removable"] {
                if let Err(e) = chroot(target, &format!("{grub}-install{args}")) {
                    tracing::warn!(error = %e, "{grub}-install{args} failed");
                }
            }
        }
        None => {
            let disk = prep.map_or(env.device, |p| p.path.as_path());
            chroot(target, &format!("{grub}-install {}", shell_quote(disk)))?;
        }
    }
    mkconfig(target, grub)?;
    if let (Some(esp), Some(uuid)) = (esp, esp_uuid) {
        append_fstab(target, &fstab_key(esp, uuid))?;
    }
    mounts.close()?;
    Ok(Outcome::GrubInstalled)
}

/// IPA's `_try_preserve_efi_assets`: with the image's `/boot/efi/EFI` at `assets`,
/// regenerate the GRUB config (if GRUB is installed), copy the assets onto the ESP and
/// write the UEFI entries; `Ok(false)` sends the caller to `grub-install` instead.
fn preserve_assets(
    env: &BootEnv<'_>,
    req: &Request,
    target: &Path,
    grub: &str,
    esp: &Located,
    assets: &Path,
) -> Result<bool, GrubError> {
    if exists_in_root(target, "usr/sbin/grub2-install")
        || exists_in_root(target, "usr/sbin/grub-install")
    {
        mkconfig(target, grub)?;
    }
    let grub2 = resolve_dir(target, "boot/grub2").ok();
    if let Err(e) = efi_assets::preserve(
        env.mounter,
        assets,
        grub2.as_deref(),
        &rooted(env, &esp.path),
    ) {
        tracing::warn!(error = %e, "preserving the image's EFI assets failed");
        return Ok(false);
    }
    tracing::info!(partition = %esp.path.display(), "the image's EFI assets are on the ESP");
    match super::efi_boot_setup(env, req) {
        Ok(done) => Ok(done),
        Err(e) => {
            tracing::warn!(error = %e, "UEFI setup from the preserved assets failed");
            Ok(false)
        }
    }
}

fn mkconfig(target: &Path, grub: &str) -> Result<(), GrubError> {
    chroot(target, &format!("{grub}-mkconfig -o /boot/{grub}/grub.cfg"))
}

/// Whether `rel` exists inside the image root (links resolved inside it).
fn exists_in_root(root: &Path, rel: &str) -> bool {
    open_in_root(root, rel, OFlag::O_PATH, Mode::empty()).is_ok()
}

/// The ESP's fstab key: `PARTUUID=` when the conductor's id is the partition's
/// PARTUUID, else `UUID=` (IPA: `_append_uefi_to_fstab`).
fn fstab_key(esp: &Located, uuid: &str) -> String {
    if esp.part_uuid.eq_ignore_ascii_case(uuid) {
        format!("PARTUUID={uuid}")
    } else {
        format!("UUID={uuid}")
    }
}

/// Opens `rel` inside `root` as the image would resolve it (symlinks stay inside).
fn open_in_root(root: &Path, rel: &str, flags: OFlag, mode: Mode) -> Result<OwnedFd, GrubError> {
    let dir = File::open(root).map_err(|e| GrubError::Disk(e.to_string()))?;
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .mode(mode)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    nix::fcntl::openat2(&dir, rel, how).map_err(|error| GrubError::Unsafe {
        what: format!("/{rel}"),
        error,
    })
}

/// The real path of directory `rel` inside `root`, resolved as the image would see it.
fn resolve_dir(root: &Path, rel: &str) -> Result<PathBuf, GrubError> {
    let fd = open_in_root(root, rel, OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty())?;
    let real = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|e| GrubError::Disk(format!("resolving /{rel}: {e}")))?;
    if !real.starts_with(root) {
        return Err(GrubError::Unsafe {
            what: format!("/{rel}"),
            error: nix::errno::Errno::EXDEV,
        });
    }
    Ok(real)
}

/// Appends the ESP line to the image's `/etc/fstab` if it exists and lacks one.
fn append_fstab(root: &Path, key: &str) -> Result<(), GrubError> {
    let fd = match open_in_root(
        root,
        "etc/fstab",
        OFlag::O_RDWR | OFlag::O_APPEND,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(GrubError::Unsafe {
            error: nix::errno::Errno::ENOENT,
            ..
        }) => return Ok(()),
        Err(e) => return Err(GrubError::Fstab(e.to_string())),
    };
    let mut f = File::from(fd);
    let mut text = String::new();
    (&mut f)
        .take(MAX_FSTAB_BYTES)
        .read_to_string(&mut text)
        .map_err(|e| GrubError::Fstab(e.to_string()))?;
    if text.contains(key) {
        return Ok(());
    }
    let sep = if text.is_empty() || text.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    f.write_all(format!("{sep}{key}\t/boot/efi\tvfat\tumask=0077\t0\t1\n").as_bytes())
        .map_err(|e| GrubError::Fstab(e.to_string()))
}

/// Runs `script` with `/bin/sh -c` chrooted into `root`, in a clean environment.
fn chroot(root: &Path, script: &str) -> Result<(), GrubError> {
    let cmd = format!("chroot {} /bin/sh -c {script:?}", root.display());
    tracing::info!(command = %cmd, "running in the image");
    let out = Command::new("chroot")
        .arg(root)
        .args(["/bin/sh", "-c", script])
        .env_clear()
        .env("PATH", CHROOT_PATH)
        .env("LC_ALL", "C")
        .env("GRUB_DISABLE_OS_PROBER", "true")
        .env("GRUB_SAVEDEFAULT", "true")
        .output()
        .map_err(|error| GrubError::Spawn {
            cmd: cmd.clone(),
            error,
        })?;
    if out.status.success() {
        return Ok(());
    }
    Err(GrubError::Failed {
        cmd,
        status: out.status,
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    })
}

/// `path` quoted for `/bin/sh`.
fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

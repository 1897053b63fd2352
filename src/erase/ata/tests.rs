//! The erase logic against a fake drive that models the ACS security state machine
//! (SEC1-SEC6: set/unlock/prepare/erase/disable, the attempt counter, frozen), with
//! failures injected per command. Each test asserts the exact command sequence, the
//! outcome or error, and what the drive is left with.

use std::path::Path;
use std::time::Duration;

use super::identify::{put_ata_string, seal};
use super::*;

const DEV: &str = "/dev/sdx";

/// A command as the fake drive saw it, passwords named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmd {
    Identify,
    Set(Pw),
    Unlock(Pw),
    Prepare,
    Erase { enhanced: bool, pw: Pw },
    Disable(Pw),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pw {
    Null,
    Empty,
    Other,
}

fn pw_of(bytes: &[u8; 32]) -> Pw {
    if *bytes == TempPassword::Null.bytes() {
        Pw::Null
    } else if *bytes == TempPassword::Empty.bytes() {
        Pw::Empty
    } else {
        Pw::Other
    }
}

/// An injected failure of the first command of a kind.
#[derive(Debug, Clone)]
struct Failure {
    cmd: SecurityCommand,
    error: AtaIoError,
    /// The command took effect before the error was reported (a lost completion).
    applied: bool,
    /// The drive comes back locked (a reset after a timed-out command).
    relock: bool,
}

const ABORT: AtaIoError = AtaIoError::Aborted {
    status: 0x51,
    error: 0x04,
};

#[derive(Debug, Clone)]
struct Drive {
    supported: bool,
    frozen: bool,
    enhanced_supported: bool,
    password: Option<[u8; 32]>,
    locked: bool,
    attempts_left: u8,
    normal_time: u16,
    enhanced_time: u16,
    prepared: bool,
    /// `Some(enhanced)` once an ERASE UNIT completed.
    erased: Option<bool>,
    /// A firmware quirk: ERASE UNIT succeeds but keeps the password.
    erase_keeps_password: bool,
    identify_error: Option<AtaIoError>,
    corrupt_identify: bool,
    failures: Vec<Failure>,
    log: Vec<Cmd>,
    erase_timeouts: Vec<Duration>,
}

impl Drive {
    fn new() -> Self {
        Self {
            supported: true,
            frozen: false,
            enhanced_supported: true,
            password: None,
            locked: false,
            attempts_left: 5,
            normal_time: 30,
            enhanced_time: 0x8000 | 45,
            prepared: false,
            erased: None,
            erase_keeps_password: false,
            identify_error: None,
            corrupt_identify: false,
            failures: Vec::new(),
            log: Vec::new(),
            erase_timeouts: Vec::new(),
        }
    }

    fn with_password(mut self, pw: [u8; 32], locked: bool) -> Self {
        self.password = Some(pw);
        self.locked = locked;
        self
    }

    fn failing(mut self, cmd: SecurityCommand, error: AtaIoError, applied: bool) -> Self {
        self.failures.push(Failure {
            cmd,
            error,
            applied,
            relock: false,
        });
        self
    }

    fn expired(&self) -> bool {
        self.attempts_left == 0
    }

    /// Compares a password, counting a mismatch against the attempt counter.
    fn matches(&mut self, pw: &[u8; 32]) -> bool {
        if self.password.as_ref() == Some(pw) {
            true
        } else {
            self.attempts_left = self.attempts_left.saturating_sub(1);
            false
        }
    }

    fn words(&self) -> [u16; 256] {
        let mut w = [0u16; 256];
        w[0] = 0x0040;
        put_ata_string(&mut w[10..20], "S3Z9NB0K123456X");
        put_ata_string(&mut w[27..47], "Samsung SSD 860 EVO 500GB");
        w[82] = u16::from(self.supported) << 1;
        w[89] = self.normal_time;
        w[90] = self.enhanced_time;
        let bits = [
            self.supported,
            self.password.is_some(),
            self.locked,
            self.frozen,
            self.expired(),
            self.enhanced_supported,
        ];
        w[128] = bits
            .iter()
            .enumerate()
            .map(|(i, &b)| u16::from(b) << i)
            .sum();
        seal(&mut w);
        if self.corrupt_identify {
            w[100] ^= 1;
        }
        w
    }

    /// The state machine; `Err(())` is an abort.
    fn apply(&mut self, cmd: SecurityCommand, block: &[u8; 512]) -> Result<(), ()> {
        let pw: [u8; 32] = block[2..34].try_into().expect("32 bytes");
        let master = block[0] & 1 != 0;
        let enhanced = block[0] & 2 != 0;
        let was_prepared = std::mem::replace(&mut self.prepared, false);
        if self.frozen || master {
            return Err(());
        }
        match cmd {
            SecurityCommand::SetPassword if self.locked => Err(()),
            SecurityCommand::SetPassword => {
                self.password = Some(pw);
                Ok(())
            }
            SecurityCommand::Unlock => {
                if self.password.is_none() || self.expired() || !self.matches(&pw) {
                    return Err(());
                }
                self.locked = false;
                self.attempts_left = 5;
                Ok(())
            }
            SecurityCommand::ErasePrepare => {
                self.prepared = true;
                Ok(())
            }
            SecurityCommand::EraseUnit => {
                if !was_prepared || self.password.is_none() || self.expired() {
                    return Err(());
                }
                if !self.matches(&pw) || (enhanced && !self.enhanced_supported) {
                    return Err(());
                }
                self.erased = Some(enhanced);
                if !self.erase_keeps_password {
                    self.password = None;
                    self.locked = false;
                }
                Ok(())
            }
            SecurityCommand::DisablePassword => {
                if self.locked || self.password.is_none() || self.expired() || !self.matches(&pw) {
                    return Err(());
                }
                self.password = None;
                Ok(())
            }
        }
    }
}

impl AtaDevice for Drive {
    fn identify(&mut self) -> Result<[u16; 256], AtaIoError> {
        self.log.push(Cmd::Identify);
        self.prepared = false;
        match &self.identify_error {
            Some(e) => Err(e.clone()),
            None => Ok(self.words()),
        }
    }

    fn security_command(
        &mut self,
        cmd: SecurityCommand,
        password_block: &[u8; 512],
        timeout: Duration,
    ) -> Result<(), AtaIoError> {
        let pw = pw_of(password_block[2..34].try_into().expect("32 bytes"));
        self.log.push(match cmd {
            SecurityCommand::SetPassword => Cmd::Set(pw),
            SecurityCommand::Unlock => Cmd::Unlock(pw),
            SecurityCommand::ErasePrepare => Cmd::Prepare,
            SecurityCommand::EraseUnit => {
                self.erase_timeouts.push(timeout);
                Cmd::Erase {
                    enhanced: password_block[0] & 2 != 0,
                    pw,
                }
            }
            SecurityCommand::DisablePassword => Cmd::Disable(pw),
        });
        if let Some(i) = self.failures.iter().position(|f| f.cmd == cmd) {
            let f = self.failures.remove(i);
            if f.applied {
                let _ = self.apply(cmd, password_block);
            } else {
                self.prepared = false;
            }
            if f.relock && self.password.is_some() {
                self.locked = true;
            }
            return Err(f.error);
        }
        self.apply(cmd, password_block).map_err(|()| ABORT)
    }
}

fn run(mut drive: Drive) -> (Result<AtaOutcome, AtaEraseError>, Drive, Vec<String>) {
    let mut notes = Vec::new();
    let res = erase_with(&mut drive, Path::new(DEV), &mut |n: &str| {
        notes.push(n.to_owned())
    });
    (res, drive, notes)
}

fn erased(res: Result<AtaOutcome, AtaEraseError>) -> AtaErased {
    match res {
        Ok(AtaOutcome::Erased(e)) => e,
        other => panic!("expected an erase, got {other:?}"),
    }
}

fn not_supported(res: Result<AtaOutcome, AtaEraseError>) -> String {
    match res {
        Ok(AtaOutcome::NotSupported { reason }) => reason,
        other => panic!("expected NotSupported, got {other:?}"),
    }
}

const NULL: [u8; 32] = *b"NULL\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";
const HAPPY_ERASE: [Cmd; 3] = [
    Cmd::Prepare,
    Cmd::Erase {
        enhanced: true,
        pw: Pw::Null,
    },
    Cmd::Identify,
];

#[test]
fn a_fresh_drive_gets_the_null_password_and_an_enhanced_erase() {
    let (res, drive, notes) = run(Drive::new());
    let e = erased(res);
    assert_eq!(e.method, "ata_enhanced_security_erase");
    assert_eq!(e.serial, "S3Z9NB0K123456X");
    assert_eq!(e.model, "Samsung SSD 860 EVO 500GB");
    let mut want = vec![Cmd::Identify, Cmd::Set(Pw::Null)];
    want.extend(HAPPY_ERASE);
    assert_eq!(drive.log, want);
    assert_eq!(drive.erased, Some(true));
    assert_eq!(drive.password, None);
    // Word 90 in the extended format: 45 * 2 = 90 min, + a quarter + 5 min.
    assert_eq!(
        drive.erase_timeouts,
        [Duration::from_secs((90 + 22) * 60 + 30 + 300)]
    );
    assert_eq!(notes.len(), 2);
    assert!(
        notes[0].contains("/dev/sdx") && notes[0].contains("90 min"),
        "{}",
        notes[0]
    );
}

#[test]
fn without_enhanced_erase_a_normal_erase_runs_with_its_own_estimate() {
    let mut d = Drive::new();
    d.enhanced_supported = false;
    d.normal_time = 0;
    let (res, drive, _) = run(d);
    assert_eq!(erased(res).method, "ata_security_erase");
    assert_eq!(
        drive.log,
        [
            Cmd::Identify,
            Cmd::Set(Pw::Null),
            Cmd::Prepare,
            Cmd::Erase {
                enhanced: false,
                pw: Pw::Null
            },
            Cmd::Identify
        ]
    );
    assert_eq!(drive.erased, Some(false));
    assert_eq!(drive.password, None);
    assert_eq!(drive.erase_timeouts, [DEFAULT_ERASE_TIMEOUT]);
}

#[test]
fn no_security_feature_set_is_not_supported_and_touches_nothing() {
    let mut d = Drive::new();
    d.supported = false;
    let (res, drive, notes) = run(d);
    assert!(not_supported(res).contains("security feature set"));
    assert_eq!(drive.log, [Cmd::Identify]);
    assert!(notes.is_empty());
}

#[test]
fn devices_that_are_no_ata_drive_are_not_supported() {
    for error in [
        AtaIoError::NotSgIo(libc::ENOTTY),
        AtaIoError::NoPassThrough {
            key: 5,
            asc: 0x20,
            ascq: 0,
        },
        ABORT,
    ] {
        let mut d = Drive::new();
        d.identify_error = Some(error.clone());
        let (res, drive, _) = run(d);
        let reason = not_supported(res);
        assert!(reason.contains(&error.to_string()), "{reason}");
        assert_eq!(drive.log, [Cmd::Identify]);
    }
}

#[test]
fn a_failing_or_corrupt_identify_is_an_error() {
    let mut d = Drive::new();
    d.identify_error = Some(AtaIoError::Transport("host status 0x3 (timed out)".into()));
    let (res, drive, _) = run(d);
    let err = res.unwrap_err();
    assert!(matches!(err, AtaEraseError::Identify { .. }), "{err}");
    assert!(err.to_string().contains("/dev/sdx") && err.to_string().contains("timed out"));
    assert_eq!(drive.log, [Cmd::Identify]);

    let mut d = Drive::new();
    d.corrupt_identify = true;
    let (res, drive, _) = run(d);
    assert!(matches!(res, Err(AtaEraseError::BadIdentify { .. })));
    assert_eq!(drive.log, [Cmd::Identify]);
}

#[test]
fn a_frozen_drive_is_refused_with_ipas_message() {
    let mut d = Drive::new();
    d.frozen = true;
    let (res, drive, _) = run(d);
    assert_eq!(
        res.unwrap_err().to_string(),
        "Block device /dev/sdx is frozen and cannot be erased"
    );
    assert_eq!(drive.log, [Cmd::Identify]);
    assert_eq!(drive.password, None);
}

#[test]
fn a_drive_locked_with_null_is_unlocked_and_erased() {
    let (res, drive, _) = run(Drive::new().with_password(NULL, true));
    erased(res);
    let mut want = vec![Cmd::Identify, Cmd::Unlock(Pw::Null), Cmd::Identify];
    want.extend(HAPPY_ERASE);
    assert_eq!(drive.log, want);
    assert_eq!(drive.password, None);
    assert!(!drive.locked);
}

#[test]
fn a_drive_locked_with_the_empty_password_is_unlocked_on_the_second_try() {
    let (res, drive, _) = run(Drive::new().with_password([0; 32], true));
    erased(res);
    assert_eq!(
        drive.log,
        [
            Cmd::Identify,
            Cmd::Unlock(Pw::Null),
            Cmd::Unlock(Pw::Empty),
            Cmd::Identify,
            Cmd::Prepare,
            Cmd::Erase {
                enhanced: true,
                pw: Pw::Empty
            },
            Cmd::Identify
        ]
    );
    assert_eq!(drive.password, None);
}

#[test]
fn a_drive_locked_with_an_unknown_password_is_refused_and_left_as_it_was() {
    let secret = [7u8; 32];
    let (res, drive, _) = run(Drive::new().with_password(secret, true));
    let err = res.unwrap_err();
    assert!(
        matches!(
            err,
            AtaEraseError::PasswordSet {
                count_expired: false,
                ..
            }
        ),
        "{err}"
    );
    assert!(err
        .to_string()
        .contains("/dev/sdx already has a security password set"));
    assert_eq!(
        drive.log,
        [
            Cmd::Identify,
            Cmd::Unlock(Pw::Null),
            Cmd::Unlock(Pw::Empty),
            Cmd::Identify
        ]
    );
    assert_eq!(drive.password, Some(secret));
    assert!(drive.locked);
    assert_eq!(drive.erased, None);
    assert_eq!(drive.attempts_left, 3);
}

#[test]
fn an_expired_attempt_counter_is_reported_without_more_attempts() {
    let mut d = Drive::new().with_password([7; 32], true);
    d.attempts_left = 0;
    let (res, drive, _) = run(d);
    let err = res.unwrap_err();
    assert!(
        err.to_string().contains("attempt counter has expired"),
        "{err}"
    );
    assert_eq!(drive.log, [Cmd::Identify]);

    // Our two attempts exhaust a counter that had two left: said so.
    let mut d = Drive::new().with_password([7; 32], true);
    d.attempts_left = 2;
    let (res, _, _) = run(d);
    assert!(matches!(
        res,
        Err(AtaEraseError::PasswordSet {
            count_expired: true,
            ..
        })
    ));
}

#[test]
fn an_unlocked_drive_with_a_previous_null_password_is_erased_with_it() {
    let (res, drive, _) = run(Drive::new().with_password(NULL, false));
    erased(res);
    let mut want = vec![Cmd::Identify, Cmd::Unlock(Pw::Null), Cmd::Identify];
    want.extend(HAPPY_ERASE);
    assert_eq!(drive.log, want);
    assert_eq!(drive.password, None);
}

#[test]
fn an_unlocked_drive_with_an_unknown_password_is_refused() {
    let (res, drive, _) = run(Drive::new().with_password([9; 32], false));
    assert!(matches!(res, Err(AtaEraseError::PasswordSet { .. })));
    assert_eq!(
        drive.log,
        [
            Cmd::Identify,
            Cmd::Unlock(Pw::Null),
            Cmd::Unlock(Pw::Empty),
            Cmd::Identify
        ]
    );
    assert_eq!(drive.password, Some([9; 32]));
    assert_eq!(drive.erased, None);
}

#[test]
fn an_erase_failing_midway_leaves_no_password() {
    let timeout = AtaIoError::Transport("host status 0x3 (timed out)".into());
    let d = Drive::new().failing(SecurityCommand::EraseUnit, timeout, false);
    let (res, drive, _) = run(d);
    let err = res.unwrap_err();
    assert!(
        matches!(
            &err,
            AtaEraseError::Command {
                step: "SECURITY ERASE UNIT",
                cleanup: Cleanup::Removed,
                ..
            }
        ),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("/dev/sdx") && msg.contains("timed out"),
        "{msg}"
    );
    assert!(
        msg.contains("temporary security password was removed"),
        "{msg}"
    );
    assert_eq!(
        drive.log,
        [
            Cmd::Identify,
            Cmd::Set(Pw::Null),
            Cmd::Prepare,
            Cmd::Erase {
                enhanced: true,
                pw: Pw::Null
            },
            Cmd::Identify,
            Cmd::Disable(Pw::Null),
            Cmd::Identify
        ]
    );
    assert_eq!(drive.password, None);
    assert_eq!(drive.erased, None);
}

#[test]
fn a_drive_that_comes_back_locked_is_unlocked_before_the_password_is_removed() {
    let mut d = Drive::new();
    d.failures.push(Failure {
        cmd: SecurityCommand::EraseUnit,
        error: AtaIoError::Transport("host status 0x8 (reset)".into()),
        applied: false,
        relock: true,
    });
    let (res, drive, _) = run(d);
    assert!(matches!(
        res,
        Err(AtaEraseError::Command {
            cleanup: Cleanup::Removed,
            ..
        })
    ));
    assert_eq!(
        drive.log[4..],
        [
            Cmd::Identify,
            Cmd::Unlock(Pw::Null),
            Cmd::Disable(Pw::Null),
            Cmd::Identify
        ]
    );
    assert_eq!(drive.password, None);
    assert!(!drive.locked);
}

#[test]
fn a_failed_cleanup_is_reported_as_such() {
    let d = Drive::new()
        .failing(SecurityCommand::EraseUnit, ABORT, false)
        .failing(SecurityCommand::DisablePassword, ABORT, false);
    let (res, drive, _) = run(d);
    let err = res.unwrap_err();
    assert!(
        matches!(
            &err,
            AtaEraseError::Command {
                cleanup: Cleanup::Failed(_),
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("FAILED (SECURITY DISABLE PASSWORD"),
        "{err}"
    );
    assert_eq!(drive.log[4..], [Cmd::Identify, Cmd::Disable(Pw::Null)]);
    // Honest: the drive does keep the password here.
    assert_eq!(drive.password, Some(NULL));
}

#[test]
fn a_failed_erase_prepare_removes_the_password() {
    let d = Drive::new().failing(SecurityCommand::ErasePrepare, ABORT, false);
    let (res, drive, _) = run(d);
    assert!(matches!(
        res,
        Err(AtaEraseError::Command {
            step: "SECURITY ERASE PREPARE",
            cleanup: Cleanup::Removed,
            ..
        })
    ));
    assert_eq!(
        drive.log,
        [
            Cmd::Identify,
            Cmd::Set(Pw::Null),
            Cmd::Prepare,
            Cmd::Identify,
            Cmd::Disable(Pw::Null),
            Cmd::Identify
        ]
    );
    assert_eq!(drive.password, None);
}

#[test]
fn a_refused_set_password_leaves_nothing_to_clean() {
    let d = Drive::new().failing(SecurityCommand::SetPassword, ABORT, false);
    let (res, drive, _) = run(d);
    let err = res.unwrap_err();
    assert!(
        matches!(
            &err,
            AtaEraseError::Command {
                step: "SECURITY SET PASSWORD",
                cleanup: Cleanup::NoPassword,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("aborted"), "{err}");
    assert_eq!(
        drive.log,
        [Cmd::Identify, Cmd::Set(Pw::Null), Cmd::Identify]
    );
    assert_eq!(drive.password, None);
    assert_eq!(drive.erased, None);
}

#[test]
fn a_set_password_whose_completion_was_lost_is_undone() {
    let lost = AtaIoError::Transport("host status 0x3 (timed out)".into());
    let d = Drive::new().failing(SecurityCommand::SetPassword, lost, true);
    let (res, drive, _) = run(d);
    assert!(matches!(
        res,
        Err(AtaEraseError::Command {
            step: "SECURITY SET PASSWORD",
            cleanup: Cleanup::Removed,
            ..
        })
    ));
    assert_eq!(
        drive.log,
        [
            Cmd::Identify,
            Cmd::Set(Pw::Null),
            Cmd::Identify,
            Cmd::Disable(Pw::Null),
            Cmd::Identify
        ]
    );
    assert_eq!(drive.password, None);
}

#[test]
fn security_still_enabled_after_the_erase_is_an_unknown_error() {
    let mut d = Drive::new();
    d.erase_keeps_password = true;
    let (res, drive, _) = run(d);
    let err = res.unwrap_err();
    assert!(
        matches!(
            &err,
            AtaEraseError::StillEnabled {
                cleanup: Cleanup::Removed,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("unknown error"), "{err}");
    assert_eq!(
        drive.log,
        [
            Cmd::Identify,
            Cmd::Set(Pw::Null),
            Cmd::Prepare,
            Cmd::Erase {
                enhanced: true,
                pw: Pw::Null
            },
            Cmd::Identify,
            Cmd::Identify,
            Cmd::Disable(Pw::Null),
            Cmd::Identify
        ]
    );
    assert_eq!(drive.password, None);
}

#[test]
fn an_unlock_transport_error_stops_and_leaves_a_foreign_password_alone() {
    let d = Drive::new().with_password([7; 32], true).failing(
        SecurityCommand::Unlock,
        AtaIoError::Transport("EIO".into()),
        false,
    );
    let (res, drive, _) = run(d);
    let err = res.unwrap_err();
    assert!(
        matches!(
            &err,
            AtaEraseError::Command {
                step: "SECURITY UNLOCK",
                cleanup: Cleanup::ForeignPassword,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        drive.log,
        [Cmd::Identify, Cmd::Unlock(Pw::Null), Cmd::Identify]
    );
    assert_eq!(drive.password, Some([7; 32]));
}

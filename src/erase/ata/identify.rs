//! The parts of ATA IDENTIFY DEVICE data the security erase decides on (ACS-3 7.12.7):
//! the security word (128), the erase time estimates (89, 90) and the serial and model
//! strings, with the integrity word (255) checked first.

use std::time::Duration;

/// Why IDENTIFY data cannot be trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentifyError {
    /// Word 255 carries the 0xA5 signature but the bytes do not sum to zero.
    #[error("IDENTIFY DEVICE data fails its checksum (word 255 = {0:#06x})")]
    Checksum(u16),
    /// Word 0 bit 15 is set: the device is not an ATA (non-packet) device.
    #[error("IDENTIFY DEVICE word 0 is {0:#06x}: not an ATA device")]
    NotAta(u16),
}

/// The security feature set state of word 128.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Security {
    /// Bit 0: the security feature set is supported.
    pub supported: bool,
    /// Bit 1: a user password is set (security enabled).
    pub enabled: bool,
    /// Bit 2: the drive is locked (needs SECURITY UNLOCK).
    pub locked: bool,
    /// Bit 3: frozen (SECURITY FREEZE LOCK, usually by the firmware): no security
    /// command is accepted until a power cycle.
    pub frozen: bool,
    /// Bit 4: the password attempt counter expired: no unlock until a power cycle.
    pub count_expired: bool,
    /// Bit 5: enhanced security erase is supported.
    pub enhanced_supported: bool,
}

impl Security {
    /// Decodes word 128.
    pub fn from_word(w: u16) -> Self {
        let bit = |n: u16| w & (1 << n) != 0;
        Self {
            supported: bit(0),
            enabled: bit(1),
            locked: bit(2),
            frozen: bit(3),
            count_expired: bit(4),
            enhanced_supported: bit(5),
        }
    }
}

/// A drive's estimate of how long an erase takes (words 89 and 90).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EraseTime {
    /// 0: not reported.
    NotReported,
    /// About this many minutes.
    Minutes(u32),
    /// More than this many minutes (the field's maximum value).
    MoreThan(u32),
}

impl EraseTime {
    /// Decodes word 89 or 90: with bit 15 set (ACS-3 extended format), bits 14:0 count
    /// 2-minute units and 0x7FFF means more than 65532 minutes; otherwise bits 7:0 do,
    /// and 255 means more than 508 minutes.
    pub fn from_word(w: u16) -> Self {
        let (value, max) = if w & 0x8000 != 0 {
            (w & 0x7fff, 0x7fff)
        } else {
            (w & 0x00ff, 0x00ff)
        };
        match value {
            0 => Self::NotReported,
            v if v == max => Self::MoreThan(u32::from(v) * 2),
            v => Self::Minutes(u32::from(v) * 2),
        }
    }

    /// How long to let an erase run before the kernel aborts it: the estimate plus a
    /// quarter and five minutes, never less than `floor` when the drive only gives a
    /// lower bound or nothing.
    pub fn timeout(self, floor: Duration) -> Duration {
        let minutes = |m: u32| Duration::from_secs(u64::from(m) * 60);
        match self {
            Self::NotReported => floor,
            Self::Minutes(m) => minutes(m) + minutes(m) / 4 + minutes(5),
            Self::MoreThan(m) => (minutes(m) + minutes(m) / 4 + minutes(5)).max(floor),
        }
    }
}

impl std::fmt::Display for EraseTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotReported => f.write_str("not reported"),
            Self::Minutes(m) => write!(f, "{m} min"),
            Self::MoreThan(m) => write!(f, "more than {m} min"),
        }
    }
}

/// The decoded IDENTIFY DEVICE data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identify {
    /// Word 128.
    pub security: Security,
    /// Word 89: normal security erase time.
    pub normal_erase: EraseTime,
    /// Word 90: enhanced security erase time.
    pub enhanced_erase: EraseTime,
    /// Words 10-19.
    pub serial: String,
    /// Words 27-46.
    pub model: String,
}

impl Identify {
    /// Decodes the 256 words, after the integrity and device-type checks.
    pub fn parse(words: &[u16; 256]) -> Result<Self, IdentifyError> {
        check_integrity(words)?;
        if words[0] & 0x8000 != 0 {
            return Err(IdentifyError::NotAta(words[0]));
        }
        Ok(Self {
            security: Security::from_word(words[128]),
            normal_erase: EraseTime::from_word(words[89]),
            enhanced_erase: EraseTime::from_word(words[90]),
            serial: ata_string(&words[10..20]),
            model: ata_string(&words[27..47]),
        })
    }
}

/// Word 255: when its low byte is the 0xA5 signature, its high byte makes the sum of
/// all 512 bytes zero modulo 256 (ACS-3 7.12.7.92); without the signature there is
/// nothing to check.
fn check_integrity(words: &[u16; 256]) -> Result<(), IdentifyError> {
    if words[255] & 0xff != 0xa5 {
        return Ok(());
    }
    let sum = words
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .fold(0u8, u8::wrapping_add);
    if sum == 0 {
        Ok(())
    } else {
        Err(IdentifyError::Checksum(words[255]))
    }
}

/// An ATA string: two characters per word, the first in the high byte, padded with
/// spaces (some drives pad with NULs).
fn ata_string(words: &[u16]) -> String {
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
    String::from_utf8_lossy(&bytes)
        .trim_matches(|c: char| c == ' ' || c == '\0')
        .to_owned()
}

/// The 256 words of IDENTIFY data as the drive sends them (little-endian words).
pub fn words_from_bytes(bytes: &[u8; 512]) -> [u16; 256] {
    let mut words = [0u16; 256];
    for (w, pair) in words.iter_mut().zip(bytes.chunks_exact(2)) {
        *w = u16::from_le_bytes([pair[0], pair[1]]);
    }
    words
}

/// Writes `text` into `words` as an ATA string (test fixtures build IDENTIFY data).
#[cfg(test)]
pub fn put_ata_string(words: &mut [u16], text: &str) {
    let mut bytes = text.as_bytes().to_vec();
    bytes.resize(words.len() * 2, b' ');
    for (w, pair) in words.iter_mut().zip(bytes.chunks_exact(2)) {
        *w = u16::from_be_bytes([pair[0], pair[1]]);
    }
}

/// Sets word 255 to the signature and the checksum of the other 510 bytes.
#[cfg(test)]
pub fn seal(words: &mut [u16; 256]) {
    let sum = words[..255]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .fold(0xa5u8, u8::wrapping_add);
    words[255] = (u16::from(sum.wrapping_neg()) << 8) | 0xa5;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_security_word_is_decoded_bit_by_bit() {
        assert_eq!(Security::from_word(0), Security::default());
        let s = Security::from_word(0x0021);
        assert!(s.supported && s.enhanced_supported);
        assert!(!(s.enabled || s.locked || s.frozen || s.count_expired));
        let s = Security::from_word(0x011f);
        assert!(s.supported && s.enabled && s.locked && s.frozen && s.count_expired);
        assert!(!s.enhanced_supported);
    }

    #[test]
    fn erase_times_in_both_formats() {
        assert_eq!(EraseTime::from_word(0), EraseTime::NotReported);
        assert_eq!(EraseTime::from_word(0x8000), EraseTime::NotReported);
        assert_eq!(EraseTime::from_word(30), EraseTime::Minutes(60));
        // Bits 8-14 are reserved in the short format.
        assert_eq!(EraseTime::from_word(0x0f1e), EraseTime::Minutes(60));
        assert_eq!(EraseTime::from_word(255), EraseTime::MoreThan(510));
        assert_eq!(EraseTime::from_word(0x8000 | 600), EraseTime::Minutes(1200));
        assert_eq!(EraseTime::from_word(0xffff), EraseTime::MoreThan(65534));
    }

    #[test]
    fn erase_timeouts_add_a_margin_and_respect_the_floor() {
        let floor = Duration::from_secs(12 * 3600);
        assert_eq!(EraseTime::NotReported.timeout(floor), floor);
        assert_eq!(
            EraseTime::Minutes(60).timeout(floor),
            Duration::from_secs(80 * 60)
        );
        // 510 min is a lower bound: 12 h wins over 642.5 min.
        assert_eq!(EraseTime::MoreThan(510).timeout(floor), floor);
        assert_eq!(
            EraseTime::MoreThan(65534).timeout(floor),
            Duration::from_secs((65534 + 65534 / 4 + 5) * 60 + 30)
        );
    }

    fn sample() -> [u16; 256] {
        let mut w = [0u16; 256];
        w[0] = 0x0040;
        put_ata_string(&mut w[10..20], "  WD-WCC4E1234567");
        put_ata_string(&mut w[27..47], "WDC WD10EZEX-08WN4A0");
        w[89] = 0x00a3;
        w[90] = 0x00a3;
        w[128] = 0x0021;
        w
    }

    #[test]
    fn strings_are_byte_swapped_and_trimmed() {
        let id = Identify::parse(&sample()).unwrap();
        assert_eq!(id.serial, "WD-WCC4E1234567");
        assert_eq!(id.model, "WDC WD10EZEX-08WN4A0");
        assert_eq!(id.normal_erase, EraseTime::Minutes(326));
        // Byte 20 is the low byte of word 10: the second character of the pair.
        let mut bytes = [0u8; 512];
        bytes[20] = b'W';
        bytes[21] = b'C';
        assert_eq!(ata_string(&words_from_bytes(&bytes)[10..11]), "CW");
    }

    #[test]
    fn the_checksum_is_checked_when_signed() {
        let mut w = sample();
        seal(&mut w);
        assert!(Identify::parse(&w).is_ok());
        w[128] ^= 0x0004;
        assert_eq!(Identify::parse(&w), Err(IdentifyError::Checksum(w[255])));
        w[255] = 0;
        assert!(Identify::parse(&w).is_ok(), "unsigned data is not checked");
        w[0] = 0x8580;
        assert_eq!(Identify::parse(&w), Err(IdentifyError::NotAta(0x8580)));
    }
}

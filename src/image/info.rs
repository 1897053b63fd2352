//! `ImageInfo`: the `image_info` object of the `write_image` deploy step (protocol spec
//! 2.3), read from JSON with IPA's validation rules and messages
//! (`IPA: extensions/standby.py _validate_image_info`).
//!
//! Validation runs on the raw JSON first, so a wrong type gets IPA's message rather than
//! a serde one; the typed struct is built after. Secrets in it (basic-auth password, the
//! `Authorization` header value, signed URLs, the config drive) never reach `Debug`.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde_json::Value;

use super::error::ImageError;

/// The image to write and how to fetch and verify it.
#[derive(Clone, Deserialize, PartialEq)]
pub struct ImageInfo {
    /// Image id (last segment of `image_source`), used in messages.
    pub id: ImageId,
    /// Download URLs, tried in order.
    pub urls: Vec<String>,
    /// Declared disk format (`raw`, `qcow2`, ...), if any.
    #[serde(default)]
    pub disk_format: Option<String>,
    /// Declared container format (informational).
    #[serde(default)]
    pub container_format: Option<String>,
    /// Stream raw images straight to the disk (IPA default true).
    #[serde(default = "default_true", deserialize_with = "lenient_bool")]
    pub stream_raw_images: bool,
    /// Legacy checksum: hex digest or a checksum file URL.
    #[serde(default)]
    pub checksum: Option<String>,
    /// Hash algorithm of `os_hash_value`.
    #[serde(default)]
    pub os_hash_algo: Option<String>,
    /// Hex digest, or a checksum file URL.
    #[serde(default)]
    pub os_hash_value: Option<String>,
    /// `http_basic` enables basic auth with the two fields below.
    #[serde(default)]
    pub image_server_auth_strategy: Option<String>,
    /// Basic-auth user.
    #[serde(default)]
    pub image_server_user: Option<String>,
    /// Basic-auth password.
    #[serde(default)]
    pub image_server_password: Option<String>,
    /// Base64 of a whole `Authorization` header value.
    #[serde(default)]
    pub image_request_authorization: Option<String>,
    /// Proxies by scheme (`http`, `https`).
    #[serde(default)]
    pub proxies: Option<BTreeMap<String, String>>,
    /// Comma-separated hosts that bypass the proxies.
    #[serde(default)]
    pub no_proxy: Option<String>,
    /// Node UUID (logging).
    #[serde(default)]
    pub node_uuid: Option<String>,
    /// `partition` for partition images; absent or `whole-disk` otherwise.
    #[serde(default)]
    pub image_type: Option<String>,
    /// Root partition size in MiB (partition images).
    #[serde(default, deserialize_with = "lenient_u64")]
    pub root_mb: Option<u64>,
    /// Swap partition size in MiB, 0 = none.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub swap_mb: Option<u64>,
    /// Ephemeral partition size in MiB, 0 = none.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub ephemeral_mb: Option<u64>,
    /// Ephemeral filesystem.
    #[serde(default)]
    pub ephemeral_format: Option<String>,
    /// Keep the ephemeral partition (rebuild).
    #[serde(default, deserialize_with = "lenient_opt_bool")]
    pub preserve_ephemeral: Option<bool>,
    /// Config drive (URL or base64 gzip ISO); duplicate of the step argument.
    #[serde(default)]
    pub configdrive: Option<String>,
    /// `uefi` or `bios` (partition images).
    #[serde(default)]
    pub deploy_boot_mode: Option<String>,
    /// `local` or `ramdisk` (informational).
    #[serde(default)]
    pub boot_option: Option<String>,
    /// `msdos` or `gpt`, if requested.
    #[serde(default)]
    pub disk_label: Option<String>,
}

fn default_true() -> bool {
    true
}

fn lenient_bool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(lenient_opt_bool(d)?.unwrap_or(true))
}

fn lenient_opt_bool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Bool(b) => Some(b),
        Value::String(s) => crate::config::value::boolean(&s).ok(),
        Value::Number(n) => Some(n.as_f64() != Some(0.0)),
        _ => None,
    })
}

fn lenient_u64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

/// An image id as the conductor sends it. For an HTTP image it is the last segment of
/// the URL, and the conductor keeps the query string there: a presigned URL's id is
/// `disk.img?X-Amz-...&X-Amz-Signature=...`. Shown (Display, Debug) with the query
/// replaced by `***`; compared in full.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct ImageId(String);

impl ImageId {
    /// The id as received, query included: for comparisons, never for messages.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for ImageId {
    fn from(id: &str) -> Self {
        Self(id.to_owned())
    }
}

impl fmt::Display for ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&super::url::redact(&self.0))
    }
}

impl fmt::Debug for ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", super::url::redact(&self.0))
    }
}

impl fmt::Debug for ImageInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let urls: Vec<String> = self.urls.iter().map(|u| super::url::redact(u)).collect();
        f.debug_struct("ImageInfo")
            .field("id", &self.id)
            .field("urls", &urls)
            .field("disk_format", &self.disk_format)
            .field("stream_raw_images", &self.stream_raw_images)
            .field("os_hash_algo", &self.os_hash_algo)
            .field("image_type", &self.image_type)
            .field("node_uuid", &self.node_uuid)
            .finish_non_exhaustive()
    }
}

fn invalid(msg: impl Into<String>) -> ImageError {
    ImageError::InvalidParams(msg.into())
}

fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

impl ImageInfo {
    /// Validates `value` as IPA does and builds the typed object; `md5_enabled` is the
    /// lookup's `agent_md5_checksum_enable` (an md5 `checksum` counts only then).
    pub fn from_value(value: &Value, md5_enabled: bool) -> Result<Self, ImageError> {
        let obj = value
            .as_object()
            .ok_or_else(|| invalid("Image is missing 'id' field."))?;
        for field in ["id", "urls"] {
            if !obj.contains_key(field) {
                return Err(invalid(format!("Image is missing '{field}' field.")));
            }
        }
        let urls_ok = matches!(&obj["urls"], Value::Array(a) if !a.is_empty());
        if !urls_ok {
            return Err(invalid(
                "Image 'urls' must be a list with at least one element.",
            ));
        }
        let mut checksum_avail = false;
        match obj.get("checksum") {
            None | Some(Value::Null) => {}
            Some(Value::String(c)) if !c.is_empty() => {
                // A URL or more than 32 characters is sha256/sha512 territory; 32 is md5.
                if is_url(c) || c.len() > 32 || md5_enabled {
                    checksum_avail = true;
                }
            }
            Some(_) => return Err(invalid("Image 'checksum' must be a non-empty string.")),
        }
        let truthy = |v: Option<&Value>| match v {
            None | Some(Value::Null) | Some(Value::Bool(false)) => false,
            Some(Value::String(s)) => !s.is_empty(),
            Some(_) => true,
        };
        let (algo, hash) = (obj.get("os_hash_algo"), obj.get("os_hash_value"));
        if truthy(algo) || truthy(hash) {
            for (name, v) in [("os_hash_algo", algo), ("os_hash_value", hash)] {
                if !matches!(v, Some(Value::String(s)) if !s.is_empty()) {
                    return Err(invalid(format!(
                        "Image '{name}' must be a non-empty string."
                    )));
                }
            }
            checksum_avail = true;
        }
        if !checksum_avail {
            return Err(invalid(
                "Image checksum is not available, either the 'checksum' field or the \
                 'os_hash_algo' and 'os_hash_value' fields pair must be set for image \
                 verification.",
            ));
        }
        let info: ImageInfo = serde_json::from_value(value.clone())
            .map_err(|e| invalid(format!("Image information is malformed: {e}")))?;
        for u in &info.urls {
            if !is_url(u) {
                return Err(invalid(format!(
                    "Image URL {} is not an http(s) URL.",
                    super::url::redact(u)
                )));
            }
        }
        Ok(info)
    }

    /// True for a partition image (`image_type == "partition"`).
    pub fn is_partition_image(&self) -> bool {
        self.image_type.as_deref() == Some("partition")
    }

    /// True when IPA would stream the image straight to the target (raw + streaming on).
    pub fn streams_raw(&self) -> bool {
        self.stream_raw_images && self.disk_format.as_deref() == Some("raw")
    }

    /// The file name checksum files are matched against: the last path segment of `urls[0]`.
    pub fn file_name(&self) -> String {
        let url = self.urls.first().map(String::as_str).unwrap_or_default();
        let no_query = url.split(['?', '#']).next().unwrap_or_default();
        let path = no_query
            .split_once("://")
            .map(|(_, rest)| rest.split_once('/').map(|(_, p)| p).unwrap_or(""))
            .unwrap_or(no_query);
        path.rsplit('/').next().unwrap_or_default().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(v: Value, md5: bool) -> String {
        ImageInfo::from_value(&v, md5).unwrap_err().to_string()
    }

    #[test]
    fn a_presigned_id_is_shown_without_its_signature_and_compared_in_full() {
        // The id the conductor derives from a presigned URL keeps its query.
        let id = "disk.img?X-Amz-Credential=AK%2F1&X-Amz-Signature=0ddba11c0ffee";
        let info = ImageInfo::from_value(
            &json!({"id": id, "urls": [format!("http://h/{id}")], "os_hash_algo": "sha256",
                    "os_hash_value": "a".repeat(64)}),
            false,
        )
        .unwrap();
        for shown in [
            info.id.to_string(),
            format!("{:?}", info.id),
            format!("{info:?}"),
        ] {
            assert!(!shown.contains("0ddba11c0ffee"), "{shown}");
            assert!(!shown.contains("X-Amz"), "{shown}");
            assert!(shown.contains("disk.img?***"), "{shown}");
        }
        assert_eq!(info.id.as_str(), id);
        assert_ne!(info.id, ImageId::from("disk.img?X-Amz-Signature=other"));
        assert_eq!(ImageId::from("plain.img").to_string(), "plain.img");
    }

    #[test]
    fn ipa_messages() {
        assert_eq!(
            err(json!({"urls": ["http://h/x"]}), false),
            "Image is missing 'id' field."
        );
        assert_eq!(
            err(json!({"id": "x"}), false),
            "Image is missing 'urls' field."
        );
        assert_eq!(
            err(json!({"id": "x", "urls": []}), false),
            "Image 'urls' must be a list with at least one element."
        );
        assert_eq!(
            err(json!({"id": "x", "urls": "http://h/x"}), false),
            "Image 'urls' must be a list with at least one element."
        );
        assert_eq!(
            err(
                json!({"id": "x", "urls": ["http://h/x"], "checksum": ""}),
                false
            ),
            "Image 'checksum' must be a non-empty string."
        );
        assert_eq!(
            err(
                json!({"id": "x", "urls": ["http://h/x"], "os_hash_algo": "sha256"}),
                false
            ),
            "Image 'os_hash_value' must be a non-empty string."
        );
        let none = err(json!({"id": "x", "urls": ["http://h/x"]}), false);
        assert!(
            none.starts_with("Image checksum is not available"),
            "{none}"
        );
        // md5 counts only when enabled.
        let md5 = json!({"id": "x", "urls": ["http://h/x"], "checksum": "0".repeat(32)});
        assert!(err(md5.clone(), false).starts_with("Image checksum is not available"));
        assert!(ImageInfo::from_value(&md5, true).is_ok());
    }

    #[test]
    fn typed_fields_and_file_name() {
        let v = json!({
            "id": "abc", "urls": ["https://h:8080/v1/AUTH/c/o/disk.raw?temp_url_sig=s&x=1"],
            "disk_format": "raw", "container_format": "bare", "stream_raw_images": true,
            "checksum": "https://h/SHA256SUMS", "root_mb": "10240", "swap_mb": 0,
            "image_server_password": "pw", "node_uuid": "n"
        });
        let info = ImageInfo::from_value(&v, false).unwrap();
        assert_eq!(info.file_name(), "disk.raw");
        assert_eq!(info.root_mb, Some(10240));
        assert!(info.streams_raw());
        let dbg = format!("{info:?}");
        assert!(
            !dbg.contains("temp_url_sig") && !dbg.contains("pw"),
            "{dbg}"
        );
    }
}

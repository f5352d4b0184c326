//! Storage work beyond listing: the cluster's storage configuration (`GET /storage`), uploads of
//! templates and ISO images (`POST .../upload`, a task that verifies the checksum when one is
//! given), disk allocation (`POST .../content`), and the parameter schemas of these endpoints.
//! Pure: the uploaded bytes are hashed by the caller's request and only their size is kept.

use std::collections::BTreeMap;

use md5::Md5;
use serde_json::{Value, json};
use sha1::Sha1;
use sha2::{Digest, Sha224, Sha256, Sha384, Sha512};

use crate::model::{Action, ApiError, Cluster, Volume, hex, template_format};
use crate::schema::{
    Kind, Property, check_content, check_node, check_storage_id, formatted, integer, pattern, text,
    text_max,
};

fn node() -> Property {
    Property::required("node", formatted(check_node))
}

fn storage() -> Property {
    Property::required("storage", formatted(check_storage_id))
}

/// Checksum algorithms an upload may name.
pub const CHECKSUM_ALGORITHMS: &[&str] = &["md5", "sha1", "sha224", "sha256", "sha384", "sha512"];

/// `GET /storage`.
pub fn config_list_parameters() -> Vec<Property> {
    vec![Property::optional(
        "type",
        Kind::Enumeration(&[
            "btrfs",
            "cephfs",
            "cifs",
            "dir",
            "esxi",
            "glusterfs",
            "iscsi",
            "iscsidirect",
            "lvm",
            "lvmthin",
            "nfs",
            "pbs",
            "rbd",
            "zfs",
            "zfspool",
        ]),
    )]
}

/// `POST /nodes/{node}/storage/{storage}/upload`.
pub fn upload_parameters() -> Vec<Property> {
    vec![
        node(),
        storage(),
        Property::optional("checksum", text()).requires("checksum-algorithm"),
        Property::optional("checksum-algorithm", Kind::Enumeration(CHECKSUM_ALGORITHMS))
            .requires("checksum"),
        Property::required(
            "content",
            Kind::Text {
                min_length: None,
                max_length: None,
                pattern: None,
                format: Some(check_upload_content),
            },
        ),
        Property::required("filename", text_max(255)),
        Property::optional("tmpfilename", pattern("/var/tmp/pveupload-[0-9a-f]+")),
    ]
}

/// The upload's `content`: an enumeration that is also a `pve-storage-content`.
fn check_upload_content(value: &str) -> Result<(), String> {
    check_content(value)?;
    if ["iso", "vztmpl", "import"].contains(&value) {
        Ok(())
    } else {
        Err(format!(
            "value '{value}' does not have a value in the enumeration 'iso, vztmpl, import'\n"
        ))
    }
}

/// `POST /nodes/{node}/storage/{storage}/content` (allocate a disk image).
pub fn allocate_parameters() -> Vec<Property> {
    vec![
        node(),
        storage(),
        Property::required("filename", text()),
        Property::optional(
            "format",
            Kind::Enumeration(&["raw", "qcow2", "subvol", "vmdk"]),
        )
        .requires("size"),
        Property::required("size", pattern(r"\d+[MG]?")),
        Property::required("vmid", integer(Some(100), Some(999_999_999))),
    ]
}

/// `DELETE /nodes/{node}/storage/{storage}/content/{volume}`.
pub fn delete_parameters() -> Vec<Property> {
    vec![
        node(),
        Property::optional("storage", formatted(check_storage_id)),
        Property::required("volume", text()),
        Property::optional("delay", integer(Some(1), Some(30))),
    ]
}

/// The digest of an upload under a named algorithm, in lower-case hex.
pub fn checksum(algorithm: &str, bytes: &[u8]) -> Option<String> {
    Some(match algorithm {
        "md5" => hex(&Md5::digest(bytes)),
        "sha1" => hex(&Sha1::digest(bytes)),
        "sha224" => hex(&Sha224::digest(bytes)),
        "sha256" => hex(&Sha256::digest(bytes)),
        "sha384" => hex(&Sha384::digest(bytes)),
        "sha512" => hex(&Sha512::digest(bytes)),
        _ => return None,
    })
}

/// Proxmox's file-name normalisation: anything outside `[-a-zA-Z0-9_.]` becomes `_`.
pub fn normalize_filename(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn target_folder(content: &str) -> &'static str {
    match content {
        "iso" => "/var/lib/vz/template/iso",
        "vztmpl" => "/var/lib/vz/template/cache",
        _ => "/var/lib/vz/import",
    }
}

impl Cluster {
    /// `GET /storage`: the storage configuration.
    pub fn storage_config_list(&self, kind: Option<&str>) -> Value {
        let list: Vec<Value> = self
            .storages
            .iter()
            .filter(|storage| kind.is_none_or(|kind| kind == storage.kind))
            .map(|storage| {
                let mut object = json!({
                    "storage": storage.id, "type": storage.kind,
                    "content": storage.content.join(","),
                    "digest": hex(&Sha256::digest(format!("{}/{}", storage.id, storage.kind).as_bytes()))[..40],
                });
                if let Some(target) = object.as_object_mut() {
                    if storage.shared {
                        target.insert("shared".into(), json!(1));
                    }
                    match storage.kind.as_str() {
                        "dir" => {
                            target.insert("path".into(), json!("/var/lib/vz"));
                        }
                        "lvmthin" => {
                            target.insert("thinpool".into(), json!("data"));
                            target.insert("vgname".into(), json!("pve"));
                        }
                        _ => {}
                    }
                }
                object
            })
            .collect();
        Value::Array(list)
    }

    /// Synchronous checks of an upload; the checksum verdict travels in the action and decides
    /// the task's end, as Proxmox verifies it inside its worker.
    pub fn prepare_upload(
        &self,
        node: &str,
        parameters: &BTreeMap<String, String>,
        bytes: &[u8],
    ) -> Result<Action, ApiError> {
        self.node(node)?;
        let storage_id = &parameters["storage"];
        let content = parameters["content"].clone();
        let storage = self.storage(storage_id)?;
        if !storage.content.contains(&content) {
            return Err(ApiError::parameter(
                "storage",
                format!("storage '{storage_id}' does not support '{content}' content"),
            ));
        }
        let filename = normalize_filename(&parameters["filename"]);
        let extension_ok = match content.as_str() {
            "iso" => filename.ends_with(".iso") || filename.ends_with(".img"),
            "vztmpl" => [".tar.gz", ".tar.xz", ".tar.zst", ".tar.bz2"]
                .iter()
                .any(|suffix| filename.ends_with(suffix)),
            _ => [".ova", ".ovf", ".qcow2", ".raw", ".vmdk"]
                .iter()
                .any(|suffix| filename.ends_with(suffix)),
        };
        if !extension_ok {
            return Err(ApiError::parameter("filename", "wrong file extension"));
        }
        let mismatch = match (
            parameters.get("checksum-algorithm"),
            parameters.get("checksum"),
        ) {
            (Some(algorithm), Some(expected)) => {
                let got = checksum(algorithm, bytes).unwrap_or_default();
                (!got.eq_ignore_ascii_case(expected.trim()))
                    .then(|| format!("checksum mismatch: got '{got}' != expect '{expected}'"))
            }
            _ => None,
        };
        Ok(Action::Upload {
            storage: storage_id.clone(),
            content,
            filename,
            size: bytes.len() as u64,
            checksum: parameters.get("checksum-algorithm").cloned(),
            mismatch,
        })
    }

    /// The effect of a finished upload task: the file appears in the storage's content.
    pub(crate) fn complete_upload(
        &mut self,
        node: &str,
        (storage, content, filename): (&str, &str, &str),
        size: u64,
        checksum: Option<&str>,
        mismatch: Option<&str>,
        now: i64,
    ) -> Result<Vec<String>, String> {
        let temporary = format!(
            "/var/tmp/pveupload-{}",
            &hex(&Sha256::digest(filename))[..32]
        );
        let mut log = vec![format!("starting file import from: {temporary}")];
        if checksum.is_some() {
            if let Some(mismatch) = mismatch {
                return Err(mismatch.to_string());
            }
            log.push("calculating checksum...OK, checksum verified".into());
        }
        let path = format!("{}/{filename}", target_folder(content));
        log.push(format!("target node: {node}"));
        log.push(format!("target file: {path}"));
        log.push(format!("file size is: {size}"));
        log.push(format!("command: cp -- {temporary} {path}"));
        log.push("finished file import successfully".into());
        let volid = format!("{storage}:{content}/{filename}");
        let format = match content {
            "iso" => "iso",
            "vztmpl" => template_format(filename),
            _ => filename.rsplit('.').next().unwrap_or("raw"),
        };
        if let Some(target) = self.storage_mut(storage) {
            let volumes = target.volumes.entry(node.to_string()).or_default();
            volumes.retain(|volume| volume.volid != volid);
            volumes.push(Volume {
                volid,
                content: content.to_string(),
                format: format.to_string(),
                size,
                ctime: now,
                vmid: None,
            });
        }
        Ok(log)
    }

    /// Synchronous checks of a volume removal; `volume` is a volume id or a name on `storage`.
    pub fn prepare_volume_delete(
        &self,
        node: &str,
        storage: &str,
        volume: &str,
    ) -> Result<Action, ApiError> {
        self.node(node)?;
        self.storage(storage)?;
        let volid = if volume.contains(':') {
            volume.to_string()
        } else {
            format!("{storage}:{volume}")
        };
        if !self.volume_exists(node, &volid) {
            return Err(ApiError::failed(format!("volume '{volid}' does not exist")));
        }
        let in_use = self.guests.values().find(|guest| {
            guest
                .config
                .values()
                .any(|value| value.split(',').next() == Some(volid.as_str()))
        });
        if let Some(guest) = in_use {
            return Err(ApiError::failed(format!(
                "unable to delete '{volid}' - volume is still in use (guest {})",
                guest.vmid
            )));
        }
        Ok(Action::VolumeDelete {
            storage: storage.to_string(),
            volid,
        })
    }

    /// `POST /nodes/{node}/storage/{storage}/content`: allocates a disk image synchronously and
    /// returns its volume id.
    pub fn allocate(
        &mut self,
        node: &str,
        parameters: &BTreeMap<String, String>,
        now: i64,
    ) -> Result<Value, ApiError> {
        self.node(node)?;
        let storage_id = parameters["storage"].clone();
        let vmid: u32 = parameters["vmid"]
            .trim_start_matches('+')
            .parse()
            .map_err(|_| ApiError::parameter("vmid", "invalid vmid"))?;
        let storage = self.storage(&storage_id)?;
        if !storage.content.iter().any(|content| content == "images") {
            return Err(ApiError::failed(format!(
                "storage '{storage_id}' does not support vm images"
            )));
        }
        let filename = &parameters["filename"];
        if !filename.starts_with(&format!("vm-{vmid}-")) {
            return Err(ApiError::failed(format!(
                "illegal name '{filename}' - should be 'vm-{vmid}-*'"
            )));
        }
        let size = &parameters["size"];
        let kib: u64 = match size.chars().last() {
            Some('M') => size[..size.len() - 1].parse::<u64>().unwrap_or(0) << 10,
            Some('G') => size[..size.len() - 1].parse::<u64>().unwrap_or(0) << 20,
            _ => size.parse().unwrap_or(0),
        };
        let volid = format!("{storage_id}:{filename}");
        if self.volume_exists(node, &volid) {
            return Err(ApiError::failed(format!("volume '{volid}' already exists")));
        }
        let format = parameters.get("format").map_or("raw", String::as_str);
        if let Some(target) = self.storage_mut(&storage_id) {
            target
                .volumes
                .entry(node.to_string())
                .or_default()
                .push(Volume {
                    volid: volid.clone(),
                    content: "images".into(),
                    format: format.to_string(),
                    size: kib << 10,
                    ctime: now,
                    vmid: Some(vmid),
                });
        }
        Ok(json!(volid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_and_names() {
        assert_eq!(
            checksum("sha256", b"abc").unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            checksum("md5", b"abc").unwrap(),
            "900150983cd24fb0d6963f7d28e17f72"
        );
        assert_eq!(
            checksum("sha1", b"abc").unwrap(),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(normalize_filename("my file (1).iso"), "my_file__1_.iso");
    }
}

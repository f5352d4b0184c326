//! Proxmox task identifiers (UPIDs): `UPID:<node>:<pid>:<pstart>:<starttime>:<type>:<id>:<user>:`.

use std::fmt;

/// A parsed UPID. The original text is kept because Proxmox wants it back verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upid {
    text: String,
    pub node: String,
    pub pid: u32,
    pub pstart: u64,
    /// Unix time the task started.
    pub starttime: i64,
    /// The task type, e.g. `vzcreate`, `vzstart`, `download`.
    pub kind: String,
    /// The task's object, e.g. the VMID; may be empty.
    pub id: String,
    /// `user@realm`, or `user@realm!token` for an API token.
    pub user: String,
}

/// Why a text is not a UPID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a Proxmox task id ({reason}): {text:?}")]
pub struct UpidError {
    pub text: String,
    pub reason: &'static str,
}

fn hex_field(text: &str, lengths: std::ops::RangeInclusive<usize>) -> Option<u64> {
    if !lengths.contains(&text.len()) || !text.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(text, 16).ok()
}

fn valid_node_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|byte| byte.is_ascii_alphanumeric() || *byte == b'-')
}

fn plain_field(text: &str) -> bool {
    !text
        .chars()
        .any(|character| character == ':' || character == '/' || character.is_whitespace())
}

impl Upid {
    /// Parses a UPID; the trailing colon is required, as Proxmox writes it.
    pub fn parse(text: &str) -> Result<Upid, UpidError> {
        let error = |reason| UpidError {
            text: text.to_string(),
            reason,
        };
        let rest = text
            .strip_prefix("UPID:")
            .ok_or_else(|| error("missing UPID: prefix"))?;
        let rest = rest
            .strip_suffix(':')
            .ok_or_else(|| error("missing trailing colon"))?;
        let fields: Vec<&str> = rest.split(':').collect();
        if fields.len() != 7 {
            return Err(error("wrong number of fields"));
        }
        let node = fields[0];
        if !valid_node_name(node) {
            return Err(error("invalid node name"));
        }
        let pid = hex_field(fields[1], 8..=8).ok_or_else(|| error("invalid pid"))?;
        let pstart = hex_field(fields[2], 8..=9).ok_or_else(|| error("invalid pstart"))?;
        let starttime = hex_field(fields[3], 8..=8).ok_or_else(|| error("invalid starttime"))?;
        let (kind, id, user) = (fields[4], fields[5], fields[6]);
        if kind.is_empty() || !plain_field(kind) {
            return Err(error("invalid task type"));
        }
        if !plain_field(id) {
            return Err(error("invalid task object id"));
        }
        if user.is_empty() || !plain_field(user) {
            return Err(error("invalid user"));
        }
        Ok(Upid {
            text: text.to_string(),
            node: node.to_string(),
            pid: pid as u32,
            pstart,
            starttime: starttime as i64,
            kind: kind.to_string(),
            id: id.to_string(),
            user: user.to_string(),
        })
    }

    /// The UPID as Proxmox wrote it.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The VMID the task acts on, when its object is one.
    pub fn vmid(&self) -> Option<u32> {
        self.id.parse().ok()
    }
}

impl fmt::Display for Upid {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.text)
    }
}

impl std::str::FromStr for Upid {
    type Err = UpidError;

    fn from_str(text: &str) -> Result<Upid, UpidError> {
        Upid::parse(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_upids() {
        // (text, node, pid, starttime, type, id, user)
        let cases: &[(&str, &str, u32, i64, &str, &str, &str)] = &[
            (
                "UPID:pve1:0009E9B0:103F1191:660069E7:vzcreate:101:root@pam:",
                "pve1",
                0x0009_E9B0,
                0x6600_69E7,
                "vzcreate",
                "101",
                "root@pam",
            ),
            (
                "UPID:node-2:00000001:1A2B3C4D5:660069E7:vncshell::root@pam!mytoken:",
                "node-2",
                1,
                0x6600_69E7,
                "vncshell",
                "",
                "root@pam!mytoken",
            ),
            (
                "UPID:a:0000abcd:0000abcd:0000abcd:download:debian-12.tar.zst:api@pve!ci:",
                "a",
                0xabcd,
                0xabcd,
                "download",
                "debian-12.tar.zst",
                "api@pve!ci",
            ),
        ];
        for (text, node, pid, starttime, kind, id, user) in cases {
            let upid = Upid::parse(text).unwrap_or_else(|error| panic!("{text}: {error}"));
            assert_eq!(upid.node, *node, "{text}");
            assert_eq!(upid.pid, *pid, "{text}");
            assert_eq!(upid.starttime, *starttime, "{text}");
            assert_eq!(upid.kind, *kind, "{text}");
            assert_eq!(upid.id, *id, "{text}");
            assert_eq!(upid.user, *user, "{text}");
            assert_eq!(upid.as_str(), *text);
        }
    }

    #[test]
    fn refuses_malformed_upids() {
        let cases: &[(&str, &str)] = &[
            ("", "prefix"),
            (
                "UPID:pve1:0009E9B0:103F1191:660069E7:vzcreate:101:root@pam",
                "trailing",
            ),
            (
                "UPID:pve1:0009E9B:103F1191:660069E7:vzcreate:101:root@pam:",
                "pid",
            ),
            (
                "UPID:pve1:0009E9BG:103F1191:660069E7:vzcreate:101:root@pam:",
                "pid",
            ),
            (
                "UPID:pve1:0009E9B0:103F11:660069E7:vzcreate:101:root@pam:",
                "pstart",
            ),
            (
                "UPID:pve1:0009E9B0:103F1191:660069E:vzcreate:101:root@pam:",
                "starttime",
            ),
            (
                "UPID:-pve:0009E9B0:103F1191:660069E7:vzcreate:101:root@pam:",
                "node",
            ),
            (
                "UPID:pve1:0009E9B0:103F1191:660069E7::101:root@pam:",
                "type",
            ),
            (
                "UPID:pve1:0009E9B0:103F1191:660069E7:vzcreate:1 1:root@pam:",
                "object",
            ),
            (
                "UPID:pve1:0009E9B0:103F1191:660069E7:vzcreate:101::",
                "user",
            ),
            (
                "UPID:pve1:0009E9B0:103F1191:660069E7:vzcreate:101:root@pam:x:",
                "number",
            ),
        ];
        for (text, reason) in cases {
            let error = Upid::parse(text).expect_err(text);
            assert!(
                error.reason.contains(reason),
                "{text}: {} does not mention {reason}",
                error.reason
            );
        }
    }

    #[test]
    fn vmid_is_read_from_the_object() {
        let upid =
            Upid::parse("UPID:pve1:0009E9B0:103F1191:660069E7:vzstart:4242:root@pam:").unwrap();
        assert_eq!(upid.vmid(), Some(4242));
        let upid = Upid::parse("UPID:pve1:0009E9B0:103F1191:660069E7:vzdump::root@pam:").unwrap();
        assert_eq!(upid.vmid(), None);
    }
}

//! Unique process ids (UPIDs) of Proxmox tasks: formatting and parsing.
//!
//! The coordinator has its own UPID parser, on purpose: the simulator is written from Proxmox's
//! schema independently of the client it tests, so that a misreading shared by both could not
//! make them agree on a bug.

use std::fmt;
use std::str::FromStr;

/// A task id as Proxmox writes it: `UPID:node:PID:PSTART:STARTTIME:type:id:user:`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Upid {
    /// The node the task runs on.
    pub node: String,
    /// The worker's process id.
    pub pid: u32,
    /// The worker's process start time in clock ticks since boot.
    pub pstart: u64,
    /// The task's start time in seconds since the epoch.
    pub starttime: i64,
    /// The task type, such as `vzcreate`.
    pub kind: String,
    /// The task's object id (a vmid or a template name); may be empty.
    pub id: String,
    /// The user (or `user!token`) who started the task.
    pub user: String,
}

/// Why a string is not a UPID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unable to parse worker upid '{0}'")]
pub struct UpidParseError(pub String);

impl fmt::Display for Upid {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "UPID:{}:{:08X}:{:08X}:{:08X}:{}:{}:{}:",
            self.node, self.pid, self.pstart, self.starttime, self.kind, self.id, self.user
        )
    }
}

fn is_node_name(text: &str) -> bool {
    let bytes = text.as_bytes();
    !bytes.is_empty()
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
}

fn hex_field(text: &str, lengths: std::ops::RangeInclusive<usize>) -> Option<u64> {
    if !lengths.contains(&text.len()) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(text, 16).ok()
}

fn is_word(text: &str, may_be_empty: bool) -> bool {
    (may_be_empty || !text.is_empty())
        && !text
            .chars()
            .any(|c| c == ':' || c == '/' || c.is_whitespace())
}

impl FromStr for Upid {
    type Err = UpidParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = || UpidParseError(text.to_string());
        let rest = text.strip_prefix("UPID:").ok_or_else(error)?;
        let rest = rest.strip_suffix(':').ok_or_else(error)?;
        let fields: Vec<&str> = rest.split(':').collect();
        if fields.len() != 7 {
            return Err(error());
        }
        if !is_node_name(fields[0]) {
            return Err(error());
        }
        let pid = hex_field(fields[1], 8..=8).ok_or_else(error)?;
        let pstart = hex_field(fields[2], 8..=9).ok_or_else(error)?;
        let starttime = hex_field(fields[3], 8..=8).ok_or_else(error)?;
        if !is_word(fields[4], false) || !is_word(fields[5], true) || !is_word(fields[6], false) {
            return Err(error());
        }
        Ok(Upid {
            node: fields[0].to_string(),
            pid: u32::try_from(pid).map_err(|_| error())?,
            pstart,
            starttime: i64::try_from(starttime).map_err(|_| error())?,
            kind: fields[4].to_string(),
            id: fields[5].to_string(),
            user: fields[6].to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_proxmox() {
        let upid = Upid {
            node: "pve1".into(),
            pid: 0x9E9B0,
            pstart: 0x103F1191,
            starttime: 0x660069E7,
            kind: "vzcreate".into(),
            id: "101".into(),
            user: "root@pam".into(),
        };
        let text = "UPID:pve1:0009E9B0:103F1191:660069E7:vzcreate:101:root@pam:";
        assert_eq!(upid.to_string(), text);
        assert_eq!(text.parse::<Upid>().unwrap(), upid);
    }

    #[test]
    fn parses_table() {
        let cases: &[(&str, bool)] = &[
            (
                "UPID:pve1:0009E9B0:103F1191:660069E7:vzcreate:101:root@pam:",
                true,
            ),
            (
                "UPID:pve1:0009E9B0:103F11910:660069E7:vncshell::root@pam:",
                true,
            ),
            (
                "UPID:pve-2:0009e9b0:103f1191:660069e7:vzstart:7:root@pam!tok:",
                true,
            ),
            (
                "UPID:pve1:0009E9B0:103F1191:660069E7:vzcreate:101:root@pam",
                false,
            ),
            (
                "UPID:pve1:9E9B0:103F1191:660069E7:vzcreate:101:root@pam:",
                false,
            ),
            (
                "UPID:-pve:0009E9B0:103F1191:660069E7:vzcreate:101:root@pam:",
                false,
            ),
            ("UPID:pve1:0009E9B0:103F1191:660069E7::101:root@pam:", false),
            (
                "UPID:pve1:0009E9B0:103F1191:660069E7:vz create:101:root@pam:",
                false,
            ),
            ("garbage", false),
        ];
        for (text, ok) in cases {
            assert_eq!(text.parse::<Upid>().is_ok(), *ok, "{text}");
        }
    }
}

//! Access control as Proxmox stores it in `user.cfg`: users, groups, the built-in roles and the
//! authentication realms, with the parameter schemas of their endpoints. Pure data; no IO.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::model::ApiError;
use crate::schema::{
    Kind, Property, check_email, check_group_id, check_group_id_list, check_user_id, formatted,
    integer, parse_boolean, pattern, text,
};

/// `GET /access/users`.
pub fn user_list_parameters() -> Vec<Property> {
    vec![
        Property::optional("enabled", Kind::Boolean),
        Property::optional("full", Kind::Boolean),
    ]
}

/// `POST /access/users`.
pub fn user_create_parameters() -> Vec<Property> {
    vec![
        Property::optional(
            "comment",
            Kind::Text {
                min_length: None,
                max_length: Some(2048),
                pattern: None,
                format: None,
            },
        ),
        Property::optional(
            "email",
            Kind::Text {
                min_length: None,
                max_length: Some(254),
                pattern: None,
                format: Some(check_email),
            },
        ),
        Property::optional("enable", Kind::Boolean),
        Property::optional("expire", integer(Some(0), None)),
        Property::optional("firstname", crate::schema::text_max(1024)),
        Property::optional("groups", formatted(check_group_id_list)),
        Property::optional("keys", pattern("[0-9a-zA-Z!=]{0,4096}")),
        Property::optional("lastname", crate::schema::text_max(1024)),
        Property::optional(
            "password",
            Kind::Text {
                min_length: Some(8),
                max_length: Some(64),
                pattern: None,
                format: None,
            },
        ),
        Property::required(
            "userid",
            Kind::Text {
                min_length: None,
                max_length: Some(64),
                pattern: None,
                format: Some(check_user_id),
            },
        ),
    ]
}

/// `POST /access/groups`.
pub fn group_create_parameters() -> Vec<Property> {
    vec![
        Property::optional("comment", text()),
        Property::required("groupid", formatted(check_group_id)),
    ]
}

/// A user of `user.cfg`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct User {
    /// Whether the account may log in.
    pub enable: bool,
    /// Expiry as unix time; 0 never expires.
    pub expire: i64,
    /// Optional text fields (`firstname`, `lastname`, `email`, `comment`, `keys`).
    pub fields: BTreeMap<String, String>,
    /// Group memberships.
    pub groups: Vec<String>,
    /// Whether a password was set for the `pve` realm.
    pub has_password: bool,
}

/// A group of `user.cfg`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Group {
    /// Free text.
    pub comment: Option<String>,
}

/// Users and groups; roles and realms are the built-in ones.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Access {
    /// Users by `name@realm`.
    pub users: BTreeMap<String, User>,
    /// Groups by id.
    pub groups: BTreeMap<String, Group>,
}

impl Default for Access {
    fn default() -> Self {
        Access {
            users: BTreeMap::from([(
                "root@pam".to_string(),
                User {
                    enable: true,
                    fields: BTreeMap::from([("email".to_string(), "root@localhost".to_string())]),
                    ..User::default()
                },
            )]),
            groups: BTreeMap::new(),
        }
    }
}

/// The built-in roles and their privileges.
const ROLES: &[(&str, &[&str])] = &[
    ("NoAccess", &[]),
    (
        "PVEAuditor",
        &[
            "Datastore.Audit",
            "Mapping.Audit",
            "Pool.Audit",
            "SDN.Audit",
            "Sys.Audit",
            "VM.Audit",
        ],
    ),
    (
        "PVEDatastoreUser",
        &[
            "Datastore.AllocateSpace",
            "Datastore.AllocateTemplate",
            "Datastore.Audit",
        ],
    ),
    (
        "PVEDatastoreAdmin",
        &[
            "Datastore.Allocate",
            "Datastore.AllocateSpace",
            "Datastore.AllocateTemplate",
            "Datastore.Audit",
        ],
    ),
    ("PVEPoolUser", &["Pool.Audit"]),
    ("PVEPoolAdmin", &["Pool.Allocate", "Pool.Audit"]),
    (
        "PVEUserAdmin",
        &["Group.Allocate", "Realm.AllocateUser", "User.Modify"],
    ),
    (
        "PVEVMUser",
        &[
            "VM.Audit",
            "VM.Backup",
            "VM.Config.CDROM",
            "VM.Config.Cloudinit",
            "VM.Console",
            "VM.PowerMgmt",
        ],
    ),
    (
        "PVEVMAdmin",
        &[
            "VM.Allocate",
            "VM.Audit",
            "VM.Backup",
            "VM.Clone",
            "VM.Config.CDROM",
            "VM.Config.CPU",
            "VM.Config.Cloudinit",
            "VM.Config.Disk",
            "VM.Config.HWType",
            "VM.Config.Memory",
            "VM.Config.Network",
            "VM.Config.Options",
            "VM.Console",
            "VM.Migrate",
            "VM.PowerMgmt",
            "VM.Snapshot",
            "VM.Snapshot.Rollback",
        ],
    ),
    ("Administrator", &[]),
];

impl Access {
    /// `GET /access/users`.
    pub fn user_list(&self, enabled: Option<bool>, full: bool) -> Value {
        let list: Vec<Value> = self
            .users
            .iter()
            .filter(|(_, user)| enabled.is_none_or(|enabled| user.enable == enabled))
            .map(|(userid, user)| {
                let realm = userid.rsplit_once('@').map_or("pve", |(_, realm)| realm);
                let mut object = json!({
                    "userid": userid, "enable": i64::from(user.enable), "expire": user.expire,
                    "realm-type": realm,
                });
                if let Some(target) = object.as_object_mut() {
                    for (key, value) in &user.fields {
                        target.insert(key.clone(), json!(value));
                    }
                    if !user.groups.is_empty() {
                        target.insert("groups".into(), json!(user.groups.join(",")));
                    }
                    if full {
                        target.insert("tokens".into(), json!([]));
                    }
                }
                object
            })
            .collect();
        Value::Array(list)
    }

    /// `POST /access/users`.
    pub fn create_user(&mut self, parameters: &BTreeMap<String, String>) -> Result<(), ApiError> {
        let userid = parameters["userid"].clone();
        let realm = userid.rsplit_once('@').map_or("", |(_, realm)| realm);
        if !["pam", "pve"].contains(&realm) {
            return Err(ApiError::failed(format!(
                "create user failed: domain '{realm}' does not exist"
            )));
        }
        if self.users.contains_key(&userid) {
            return Err(ApiError::failed(format!(
                "create user failed: user '{userid}' already exists"
            )));
        }
        let groups: Vec<String> = parameters
            .get("groups")
            .map(|list| {
                list.split([',', ';', ' '])
                    .filter(|item| !item.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        if let Some(missing) = groups
            .iter()
            .find(|group| !self.groups.contains_key(*group))
        {
            return Err(ApiError::failed(format!(
                "create user failed: no such group '{missing}'"
            )));
        }
        if parameters.contains_key("password") && realm != "pve" {
            return Err(ApiError::failed(format!(
                "create user failed: can't set password on auth type '{realm}'"
            )));
        }
        let fields = ["firstname", "lastname", "email", "comment", "keys"]
            .iter()
            .filter_map(|key| {
                parameters
                    .get(*key)
                    .filter(|value| !value.is_empty())
                    .map(|value| (key.to_string(), value.clone()))
            })
            .collect();
        self.users.insert(
            userid,
            User {
                enable: parameters
                    .get("enable")
                    .and_then(|value| parse_boolean(value))
                    .unwrap_or(true),
                expire: parameters
                    .get("expire")
                    .and_then(|value| value.trim_start_matches('+').parse().ok())
                    .unwrap_or(0),
                fields,
                groups,
                has_password: parameters.contains_key("password"),
            },
        );
        Ok(())
    }

    /// `GET /access/groups`.
    pub fn group_list(&self) -> Value {
        let list: Vec<Value> = self
            .groups
            .iter()
            .map(|(groupid, group)| {
                let members: Vec<&str> = self
                    .users
                    .iter()
                    .filter(|(_, user)| user.groups.contains(groupid))
                    .map(|(userid, _)| userid.as_str())
                    .collect();
                let mut object = json!({"groupid": groupid, "users": members.join(",")});
                if let (Some(comment), Some(target)) = (&group.comment, object.as_object_mut()) {
                    target.insert("comment".into(), json!(comment));
                }
                object
            })
            .collect();
        Value::Array(list)
    }

    /// `POST /access/groups`.
    pub fn create_group(&mut self, parameters: &BTreeMap<String, String>) -> Result<(), ApiError> {
        let groupid = parameters["groupid"].clone();
        if self.groups.contains_key(&groupid) {
            return Err(ApiError::failed(format!(
                "create group failed: group '{groupid}' already exists"
            )));
        }
        self.groups.insert(
            groupid,
            Group {
                comment: parameters.get("comment").cloned(),
            },
        );
        Ok(())
    }

    /// `GET /access/roles`.
    pub fn role_list() -> Value {
        let all: Vec<&str> = {
            let mut all: Vec<&str> = ROLES
                .iter()
                .flat_map(|(_, privileges)| privileges.iter().copied())
                .chain([
                    "Sys.Audit",
                    "Sys.Modify",
                    "Sys.PowerMgmt",
                    "Sys.Console",
                    "Permissions.Modify",
                ])
                .collect();
            all.sort_unstable();
            all.dedup();
            all
        };
        let list: Vec<Value> = ROLES
            .iter()
            .map(|(role, privileges)| {
                let privileges = if *role == "Administrator" {
                    all.join(",")
                } else {
                    privileges.join(",")
                };
                json!({"roleid": role, "privs": privileges, "special": 1})
            })
            .collect();
        Value::Array(list)
    }

    /// `GET /access/domains`.
    pub fn domain_list() -> Value {
        json!([
            {"realm": "pam", "type": "pam", "comment": "Linux PAM standard authentication"},
            {"realm": "pve", "type": "pve", "comment": "Proxmox VE authentication server", "default": 0},
        ])
    }
}

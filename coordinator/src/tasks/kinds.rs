//! Every task kind the coordinator runs, in one place. The strings are stored in task records
//! and shown to callers, so a kind is never renamed; a new kind is added here.

/// Creating a container.
pub const INSTANCE_CREATE: &str = "instance.create";
/// Starting, stopping, rebooting or suspending a container.
pub const INSTANCE_POWER: &str = "instance.power";
/// Changing a container's resources or hostname.
pub const INSTANCE_UPDATE: &str = "instance.update";
/// Destroying a container.
pub const INSTANCE_DELETE: &str = "instance.delete";
/// Downloading a container template onto a node.
pub const TEMPLATE_DOWNLOAD: &str = "template.download";

/// Installing packages through an instance's agent.
pub const PACKAGE_INSTALL: &str = "package.install";
/// Upgrading packages through an instance's agent.
pub const PACKAGE_UPGRADE: &str = "package.upgrade";
/// Removing packages through an instance's agent.
pub const PACKAGE_REMOVE: &str = "package.remove";

/// Creating a database (and its user) through an instance's agent.
pub const DATABASE_CREATE: &str = "database.create";
/// Setting a database user's password through an instance's agent.
pub const DATABASE_PASSWORD: &str = "database.password";
/// Dropping a database through an instance's agent.
pub const DATABASE_DROP: &str = "database.drop";
/// Dumping a database, streamed from an instance's agent.
pub const DATABASE_DUMP: &str = "database.dump";

/// Creating a vhost.
pub const VHOST_CREATE: &str = "vhost.create";
/// Replacing a vhost's spec.
pub const VHOST_CHANGE: &str = "vhost.change";
/// Removing a vhost.
pub const VHOST_DELETE: &str = "vhost.delete";
/// Setting or clearing the administrator's block of a vhost.
pub const VHOST_EXTRA: &str = "vhost.extra";

/// Deploying an uploaded certificate.
pub const SSL_DEPLOY: &str = "ssl.deploy";
/// Removing a vhost's certificate.
pub const SSL_REMOVE: &str = "ssl.remove";
/// Issuing or renewing a certificate through ACME.
pub const SSL_ACME: &str = "ssl.acme";

/// Enabling a vhost's cache.
pub const CACHE_ENABLE: &str = "cache.enable";
/// Changing a vhost's cache settings.
pub const CACHE_CHANGE: &str = "cache.change";
/// Disabling a vhost's cache.
pub const CACHE_DISABLE: &str = "cache.disable";
/// Purging a vhost's cache.
pub const CACHE_PURGE: &str = "cache.purge";

/// Every kind, for checks that want them all.
pub const ALL: &[&str] = &[
    INSTANCE_CREATE,
    INSTANCE_POWER,
    INSTANCE_UPDATE,
    INSTANCE_DELETE,
    TEMPLATE_DOWNLOAD,
    PACKAGE_INSTALL,
    PACKAGE_UPGRADE,
    PACKAGE_REMOVE,
    DATABASE_CREATE,
    DATABASE_PASSWORD,
    DATABASE_DROP,
    DATABASE_DUMP,
    VHOST_CREATE,
    VHOST_CHANGE,
    VHOST_DELETE,
    VHOST_EXTRA,
    SSL_DEPLOY,
    SSL_REMOVE,
    SSL_ACME,
    CACHE_ENABLE,
    CACHE_CHANGE,
    CACHE_DISABLE,
    CACHE_PURGE,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_unique_and_valid() {
        let mut seen = std::collections::HashSet::new();
        for kind in ALL {
            assert!(seen.insert(*kind), "{kind} is listed twice");
            assert!(
                kind.len() <= 64
                    && kind.bytes().all(|byte| byte.is_ascii_lowercase()
                        || byte.is_ascii_digit()
                        || matches!(byte, b'.' | b'_' | b'-')),
                "{kind} is not a valid task kind"
            );
        }
    }
}

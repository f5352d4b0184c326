//! Planning a configuration generation: from the whole site state to the files nginx will read,
//! and the version bookkeeping of each vhost. Pure: no IO, the clock is passed in.
//!
//! Invariant: a plan is produced only if every vhost validates on its own and together with the
//! others (no name served twice, certificates cover their names, caches have something to cache).

use std::collections::BTreeMap;

pub use protocol::web::vhost::{MAX_EXTRA_BYTES, check_extra};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::vhosts::layout::WebLayout;
use crate::vhosts::render::{TlsFiles, VhostInput, render_probe_server, render_vhost};
use crate::vhosts::spec::{Content, ServerName, ValidationError, VhostId};
use crate::vhosts::state::{AppliedVersion, SiteState, VhostRecord};
use protocol::web::certificate::name_covers;

/// The file name of the agent's probe server inside a generation (vhost ids never start with `_`).
pub const PROBE_FILE: &str = "_probe.conf";

/// The files of one generation and the hash of each vhost's file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedSite {
    /// File names (inside the generation directory) and contents, state excluded.
    pub files: Vec<(String, String)>,
    /// SHA-256 of each vhost's file, in hex.
    pub hashes: BTreeMap<VhostId, String>,
}

/// The file name of a vhost inside a generation.
pub fn vhost_file(id: &VhostId) -> String {
    format!("{id}.conf")
}

/// Renders every file of a generation, or says every reason it cannot.
pub fn render_site(state: &SiteState, layout: &WebLayout) -> Result<RenderedSite, ValidationError> {
    let mut errors = ValidationError::default();
    let mut files = vec![(
        PROBE_FILE.to_string(),
        render_probe_server(layout, state.generation),
    )];
    let mut hashes = BTreeMap::new();
    let mut owners: BTreeMap<ServerName, VhostId> = BTreeMap::new();
    for (id, record) in &state.vhosts {
        let vhost = match record.spec.validate(&layout.web_root) {
            Ok(vhost) => vhost,
            Err(error) => {
                errors.fields.extend(error.fields);
                continue;
            }
        };
        for name in vhost.all_names() {
            if let Some(owner) = owners.insert(name.clone(), id.clone()) {
                errors.push(
                    "server_names",
                    format!("{name} is already served by vhost {owner}"),
                );
            }
        }
        if let Some(cache) = &record.cache {
            if let Err(error) = cache.validate() {
                errors.fields.extend(error.fields);
            }
            if matches!(
                vhost.content,
                Content::Files {
                    php_socket: None,
                    ..
                }
            ) {
                errors.push(
                    "cache",
                    "a cache needs a proxy_pass upstream or PHP to sit in front of",
                );
            }
        }
        if let Some(tls) = &record.tls {
            for name in vhost.all_names() {
                if !tls
                    .info
                    .names
                    .iter()
                    .any(|covered| name_covers(covered, &name))
                {
                    errors.push(
                        "server_names",
                        format!("the certificate does not cover {name}; replace or remove the certificate first"),
                    );
                }
            }
        }
        if let Some(extra) = &record.extra {
            if let Err(error) = check_extra(extra) {
                errors.fields.extend(error.fields);
            }
        }
        let input = VhostInput {
            id,
            vhost: &vhost,
            tls: record.tls.as_ref().map(|tls| TlsFiles {
                certificate: tls.certificate_file(),
                key: tls.key_file(),
            }),
            cache: record.cache.as_ref(),
            extra: record.extra.as_deref(),
        };
        let text = render_vhost(&input, layout);
        hashes.insert(id.clone(), hex::encode(Sha256::digest(text.as_bytes())));
        files.push((vhost_file(id), text));
    }
    errors.into_result(RenderedSite { files, hashes })
}

fn same_settings(left: &VhostRecord, right: &VhostRecord) -> bool {
    left.spec == right.spec
        && left.extra == right.extra
        && left.tls == right.tls
        && left.cache == right.cache
}

/// Gives each new or changed vhost of `next` a new version, its hash and a history entry.
pub fn stamp_versions(
    previous: &SiteState,
    next: &mut SiteState,
    hashes: &BTreeMap<VhostId, String>,
    now: OffsetDateTime,
    history_limit: usize,
) {
    for (id, record) in next.vhosts.iter_mut() {
        let hash = hashes.get(id).cloned().unwrap_or_default();
        let before = previous.vhosts.get(id);
        let unchanged =
            before.is_some_and(|before| same_settings(before, record) && before.hash == hash);
        if unchanged {
            continue;
        }
        record.version = before.map_or(1, |before| before.version + 1);
        record.hash = hash.clone();
        record.applied_at = now;
        record.history.push(AppliedVersion {
            version: record.version,
            hash,
            applied_at: now,
            spec: record.spec.clone(),
            extra: record.extra.clone(),
            cache: record.cache.clone(),
        });
        let excess = record.history.len().saturating_sub(history_limit.max(1));
        record.history.drain(..excess);
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::vhosts::spec::VhostSpec;
    use protocol::web::cache::CacheSettings;

    fn record(names: &[&str]) -> VhostRecord {
        VhostRecord {
            spec: VhostSpec {
                server_names: names.iter().map(|name| name.to_string()).collect(),
                root: Some("site".into()),
                proxy_pass: None,
                php: None,
                redirects: Default::default(),
                logs: Default::default(),
                limits: Default::default(),
            },
            extra: None,
            tls: None,
            cache: None,
            version: 0,
            hash: String::new(),
            applied_at: OffsetDateTime::UNIX_EPOCH,
            history: Vec::new(),
        }
    }

    fn site(records: Vec<(&str, VhostRecord)>) -> SiteState {
        let mut state = SiteState::default();
        for (id, record) in records {
            state.vhosts.insert(VhostId::parse(id).unwrap(), record);
        }
        state
    }

    #[test]
    fn site_level_refusals() {
        let layout = WebLayout::private(Path::new("/t"), 1, 2);
        let cache = CacheSettings {
            ttl_seconds: 10,
            max_size_megabytes: 1,
            bypass: Default::default(),
        };
        let cases: Vec<(&str, SiteState, Option<&str>)> = vec![
            (
                "two vhosts",
                site(vec![
                    ("a", record(&["a.example"])),
                    ("b", record(&["b.example"])),
                ]),
                None,
            ),
            (
                "shared name",
                site(vec![
                    ("a", record(&["a.example"])),
                    ("b", record(&["a.example"])),
                ]),
                Some("server_names"),
            ),
            (
                "cache on static files",
                site(vec![(
                    "a",
                    VhostRecord {
                        cache: Some(cache),
                        ..record(&["a.example"])
                    },
                )]),
                Some("cache"),
            ),
            (
                "unbalanced extra",
                site(vec![(
                    "a",
                    VhostRecord {
                        extra: Some("}".into()),
                        ..record(&["a.example"])
                    },
                )]),
                Some("extra"),
            ),
            (
                "balanced extra",
                site(vec![(
                    "a",
                    VhostRecord {
                        extra: Some("location /x { return 204; }".into()),
                        ..record(&["a.example"])
                    },
                )]),
                None,
            ),
        ];
        for (name, state, refused) in cases {
            let result = render_site(&state, &layout);
            match refused {
                None => {
                    let rendered = result.unwrap_or_else(|error| panic!("{name}: {error}"));
                    assert_eq!(rendered.files.len(), state.vhosts.len() + 1, "{name}");
                    assert_eq!(rendered.hashes.len(), state.vhosts.len(), "{name}");
                }
                Some(field) => assert!(
                    result.as_ref().is_err_and(|error| error.has(field)),
                    "{name}: {result:?}"
                ),
            }
        }
    }

    #[test]
    fn versions_advance_only_on_change_and_history_is_bounded() {
        let layout = WebLayout::private(Path::new("/t"), 1, 2);
        let mut previous = SiteState::default();
        for step in 0..8u64 {
            let mut next = previous.clone();
            let mut changed = next
                .vhosts
                .get(&VhostId::parse("a").unwrap())
                .cloned()
                .unwrap_or_else(|| record(&["a.example"]));
            if step % 2 == 0 {
                changed.spec.limits.max_body_bytes = Some(step);
            }
            next.vhosts.insert(VhostId::parse("a").unwrap(), changed);
            let rendered = render_site(&next, &layout).unwrap();
            let now = OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(step as i64);
            stamp_versions(&previous, &mut next, &rendered.hashes, now, 3);
            previous = next;
        }
        let record = &previous.vhosts[&VhostId::parse("a").unwrap()];
        // Steps 0, 2, 4, 6 changed the spec; the odd steps changed nothing.
        assert_eq!(record.version, 4);
        assert_eq!(
            record
                .history
                .iter()
                .map(|entry| entry.version)
                .collect::<Vec<_>>(),
            vec![2, 3, 4]
        );
        assert_eq!(record.history.last().unwrap().hash, record.hash);
        assert_eq!(
            record.applied_at,
            OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(6)
        );
    }
}

//! nginx vhosts: typed specs rendered into configuration, applied as a transaction on the whole
//! web server (stage, test, swap, reload, check, or put everything back).
//!
//! Code map: `spec` validates what customers send; `render` and `plan` turn the site state into
//! files (pure); `state` is what is remembered; `server` and `probe` talk to nginx; this file is
//! the transaction that drives them. Certificates (the `certs` module) and caches (the `cache` module) are
//! applied through the same transaction.
//!
//! Invariant: nginx only ever loads a generation that passed `nginx -t` as a whole; a change that
//! fails at any step leaves the previous generation live and loaded.

pub mod layout;
pub mod plan;
pub mod probe;
pub mod program;
pub mod render;
pub mod server;
pub mod spec;
pub mod state;

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::sync::Mutex;

use crate::vhosts::layout::WebLayout;
use crate::vhosts::plan::{render_site, stamp_versions};
use crate::vhosts::probe::{http_get_from, probe_verdict};
use crate::vhosts::render::{PROBE_HOST, PROBE_PATH, render_main_config};
use crate::vhosts::server::{Nginx, WebServer};
use crate::vhosts::spec::{Presence, ValidationError, VhostId, VhostSpec};
use crate::vhosts::state::{STATE_FILE, STATE_FORMAT, SiteState, VhostRecord, VhostView};

/// The step of a change that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplyStage {
    /// Writing the staged files.
    Staging,
    /// `nginx -t` on the whole staged configuration.
    ConfigTest,
    /// Signalling (or starting) nginx.
    Reload,
    /// Waiting for nginx to serve the new generation.
    Activation,
    /// The request through nginx to the changed vhost.
    Check,
}

impl ApplyStage {
    /// The stage's name in snake case, as the wire and the API show it.
    pub fn as_str(self) -> &'static str {
        match self {
            ApplyStage::Staging => "staging",
            ApplyStage::ConfigTest => "config_test",
            ApplyStage::Reload => "reload",
            ApplyStage::Activation => "activation",
            ApplyStage::Check => "check",
        }
    }
}

/// A change that was refused by the web server or failed its check, and what was done about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyFailure {
    /// The step that failed.
    pub stage: ApplyStage,
    /// What failed, as a sentence.
    pub message: String,
    /// nginx's output or error log lines (bounded).
    pub output: String,
    /// Whether the previous configuration is live and loaded again.
    pub restored: bool,
    /// Why restoring failed, if it did.
    pub restore_error: Option<String>,
}

impl std::fmt::Display for ApplyFailure {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{} (at {:?}", self.message, self.stage)?;
        if self.restored {
            write!(formatter, "; the previous configuration was restored")?;
        } else if let Some(error) = &self.restore_error {
            write!(
                formatter,
                "; restoring the previous configuration failed: {error}"
            )?;
        }
        write!(formatter, ")")
    }
}

/// Why a web operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// The request was refused field by field (422).
    #[error("{0}")]
    Invalid(ValidationError),
    /// The vhost does not exist (404).
    #[error("vhost {0} does not exist")]
    NotFound(String),
    /// The request contradicts the current state (the vhost exists already, the cache is off).
    #[error("{0}")]
    Conflict(String),
    /// The web server refused the change or the check failed; the previous state was restored.
    #[error("{0}")]
    Apply(ApplyFailure),
    /// A file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: io::Error,
    },
    /// The stored state could not be read.
    #[error("the stored vhost state is unusable: {0}")]
    State(String),
}

impl From<ValidationError> for WebError {
    fn from(error: ValidationError) -> Self {
        WebError::Invalid(error)
    }
}

/// Attaches a description to an IO error.
pub(crate) fn io_context<T>(
    result: io::Result<T>,
    context: impl FnOnce() -> String,
) -> Result<T, WebError> {
    result.map_err(|source| WebError::Io {
        context: context(),
        source,
    })
}

/// Writes a file atomically, with the given permissions.
pub(crate) fn write_file_atomically(
    path: &Path,
    contents: &[u8],
    mode: u32,
) -> Result<(), WebError> {
    io_context(shell::write_atomically(path, contents, Some(mode)), || {
        format!("writing {}", path.display())
    })
}

/// The outcome of an applied change.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The generation now live.
    pub generation: u64,
    /// The state now live.
    pub state: SiteState,
}

/// What a change asks the transaction to check after the reload.
pub(crate) type CheckTarget = Option<VhostId>;

/// The agent's web operations on one nginx: vhosts here, certificates and caches in their modules.
/// Changes are serialized: one transaction at a time.
pub struct WebOps<S: WebServer = Nginx> {
    pub(crate) layout: WebLayout,
    pub(crate) server: S,
    lock: Mutex<()>,
    /// How long the check request (and waiting for a reload) may take.
    pub check_deadline: Duration,
    /// How long the report of the site's own answer after a change may wait for it.
    pub site_answer_deadline: Duration,
}

impl<S: WebServer> std::fmt::Debug for WebOps<S> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("WebOps")
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

impl WebOps<Nginx> {
    /// Web operations on the real nginx the layout describes.
    pub fn nginx(layout: WebLayout) -> Self {
        let server = Nginx::new(&layout);
        WebOps::new(layout, server)
    }
}

impl<S: WebServer> WebOps<S> {
    /// Web operations on the given server.
    pub fn new(layout: WebLayout, server: S) -> Self {
        WebOps {
            layout,
            server,
            lock: Mutex::new(()),
            check_deadline: Duration::from_secs(10),
            site_answer_deadline: Duration::from_secs(3),
        }
    }

    /// The layout in use.
    pub fn layout(&self) -> &WebLayout {
        &self.layout
    }

    /// The web server in use.
    pub fn server(&self) -> &S {
        &self.server
    }

    /// Creates the directories and the main configuration, and applies the current state (an empty
    /// site the first time), starting nginx if it is not running.
    pub async fn install(&self) -> Result<Applied, WebError> {
        let layout = &self.layout;
        for dir in [
            layout.base_dir.clone(),
            layout.generations_dir(),
            layout.challenges_dir(),
            layout.runtime_dir.clone(),
            layout.log_dir.clone(),
            layout.web_root.clone(),
            layout.cache_dir.clone(),
        ] {
            io_context(std::fs::create_dir_all(&dir), || {
                format!("creating {}", dir.display())
            })?;
        }
        let tls = layout.tls_dir();
        io_context(std::fs::create_dir_all(&tls), || {
            format!("creating {}", tls.display())
        })?;
        io_context(
            std::fs::set_permissions(&tls, std::fs::Permissions::from_mode(0o700)),
            || format!("restricting {}", tls.display()),
        )?;
        let main = render_main_config(layout, &layout.live_link());
        if std::fs::read_to_string(&layout.main_config).ok().as_deref() != Some(main.as_str()) {
            write_file_atomically(&layout.main_config, main.as_bytes(), 0o644)?;
        }
        self.transact(OffsetDateTime::now_utc(), |_| Ok(None)).await
    }

    /// The live state (empty before the first change).
    pub fn live_state(&self) -> Result<SiteState, WebError> {
        let path = self.layout.live_link().join(STATE_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                return Ok(SiteState::default());
            }
            Err(source) => {
                return Err(WebError::Io {
                    context: format!("reading {}", path.display()),
                    source,
                });
            }
        };
        let state: SiteState =
            serde_json::from_str(&text).map_err(|error| WebError::State(error.to_string()))?;
        if state.format > STATE_FORMAT {
            return Err(WebError::State(format!(
                "it was written in format {} and this agent reads up to {STATE_FORMAT}",
                state.format
            )));
        }
        Ok(state)
    }

    /// Every vhost, as `GET` shows them.
    pub fn list_vhosts(&self) -> Result<Vec<VhostView>, WebError> {
        Ok(self
            .live_state()?
            .vhosts
            .iter()
            .map(|(id, record)| record.view(id))
            .collect())
    }

    /// One vhost with its applied version and hash.
    pub fn get_vhost(&self, id: &str) -> Result<VhostView, WebError> {
        let id = VhostId::parse(id)?;
        let state = self.live_state()?;
        state
            .vhosts
            .get(&id)
            .map(|record| record.view(&id))
            .ok_or_else(|| WebError::NotFound(id.to_string()))
    }

    /// The administrator's block of a vhost.
    pub fn get_extra(&self, id: &str) -> Result<Option<String>, WebError> {
        let id = VhostId::parse(id)?;
        let state = self.live_state()?;
        state
            .vhosts
            .get(&id)
            .map(|record| record.extra.clone())
            .ok_or_else(|| WebError::NotFound(id.to_string()))
    }

    /// Creates or changes a vhost; its administrator's block, certificate and cache stay.
    pub async fn put_vhost(&self, id: &str, spec: VhostSpec) -> Result<VhostView, WebError> {
        let (id, state) = self.put_vhost_expecting(id, spec, Presence::Any).await?;
        Ok(state.vhosts[&id].view(&id))
    }

    /// Creates or changes a vhost as `presence` allows: a `New` vhost that exists already with
    /// exactly this spec is left as it is (a repeated create succeeds without a reload).
    pub async fn put_vhost_expecting(
        &self,
        id: &str,
        spec: VhostSpec,
        presence: Presence,
    ) -> Result<(VhostId, SiteState), WebError> {
        let id = VhostId::parse(id)?;
        spec.validate(&self.layout.web_root)?;
        if presence == Presence::New {
            let state = self.live_state()?;
            if state
                .vhosts
                .get(&id)
                .is_some_and(|record| record.spec == spec)
            {
                return Ok((id, state));
            }
        }
        let key = id.clone();
        let applied = self
            .transact(OffsetDateTime::now_utc(), move |state| {
                match (state.vhosts.get_mut(&key), presence) {
                    (Some(_), Presence::New) => {
                        return Err(WebError::Conflict(format!(
                            "vhost {key} exists already; change it with PUT"
                        )));
                    }
                    (None, Presence::Existing) => return Err(WebError::NotFound(key.to_string())),
                    (Some(record), _) => record.spec = spec,
                    (None, _) => {
                        state.vhosts.insert(key.clone(), new_record(spec));
                    }
                }
                Ok(Some(key))
            })
            .await?;
        Ok((id, applied.state))
    }

    /// Creates or changes several vhosts in one change of the web server (one test, one
    /// reload); nothing is applied unless all of them are.
    pub async fn put_vhosts(&self, vhosts: Vec<(String, VhostSpec)>) -> Result<(), WebError> {
        let mut checked = Vec::with_capacity(vhosts.len());
        for (id, spec) in vhosts {
            let id = VhostId::parse(&id)?;
            spec.validate(&self.layout.web_root)?;
            checked.push((id, spec));
        }
        self.transact(OffsetDateTime::now_utc(), move |state| {
            for (id, spec) in checked {
                match state.vhosts.get_mut(&id) {
                    Some(record) => record.spec = spec,
                    None => {
                        state.vhosts.insert(id, new_record(spec));
                    }
                }
            }
            Ok(None)
        })
        .await?;
        Ok(())
    }

    /// Every vhost as live now, with its full record.
    pub fn vhost_records(&self) -> Result<Vec<(VhostId, VhostRecord)>, WebError> {
        Ok(self.live_state()?.vhosts.into_iter().collect())
    }

    /// One vhost's full record as live now.
    pub fn vhost_record(&self, id: &str) -> Result<(VhostId, VhostRecord), WebError> {
        let id = VhostId::parse(id)?;
        let mut state = self.live_state()?;
        match state.vhosts.remove(&id) {
            Some(record) => Ok((id, record)),
            None => Err(WebError::NotFound(id.to_string())),
        }
    }

    /// Sets or clears a vhost's administrator's block (administrators only).
    pub async fn set_extra(&self, id: &str, extra: Option<String>) -> Result<VhostView, WebError> {
        let id = VhostId::parse(id)?;
        if let Some(extra) = &extra {
            plan::check_extra(extra)?;
        }
        let key = id.clone();
        let applied = self
            .transact(OffsetDateTime::now_utc(), move |state| {
                let record = state
                    .vhosts
                    .get_mut(&key)
                    .ok_or_else(|| WebError::NotFound(key.to_string()))?;
                record.extra = extra.filter(|extra| !extra.trim().is_empty());
                Ok(Some(key))
            })
            .await?;
        Ok(applied.state.vhosts[&id].view(&id))
    }

    /// Applies a remembered version of a vhost again (its spec, block and cache settings).
    pub async fn restore_version(&self, id: &str, version: u64) -> Result<VhostView, WebError> {
        let id = VhostId::parse(id)?;
        let key = id.clone();
        let applied = self
            .transact(OffsetDateTime::now_utc(), move |state| {
                let record = state
                    .vhosts
                    .get_mut(&key)
                    .ok_or_else(|| WebError::NotFound(key.to_string()))?;
                let entry = record
                    .history
                    .iter()
                    .find(|entry| entry.version == version)
                    .cloned()
                    .ok_or_else(|| {
                        ValidationError::single(
                            "version",
                            format!("version {version} is not remembered"),
                        )
                    })?;
                record.spec = entry.spec;
                record.extra = entry.extra;
                record.cache = entry.cache;
                Ok(Some(key))
            })
            .await?;
        Ok(applied.state.vhosts[&id].view(&id))
    }

    /// Removes a vhost with its certificate, challenge answers and cache files (logs stay).
    pub async fn delete_vhost(&self, id: &str) -> Result<(), WebError> {
        let id = VhostId::parse(id)?;
        let key = id.clone();
        self.transact(OffsetDateTime::now_utc(), move |state| {
            state
                .vhosts
                .remove(&key)
                .ok_or_else(|| WebError::NotFound(key.to_string()))?;
            Ok(None)
        })
        .await?;
        for dir in [
            self.layout.tls_dir().join(id.as_str()),
            render::challenge_root(&self.layout, &id),
            render::cache_path(&self.layout, &id),
        ] {
            remove_dir_if_present(&dir)?;
        }
        Ok(())
    }

    /// Runs one change as a transaction: `change` edits a copy of the live state and names the
    /// vhost to check; the new generation is rendered, staged, tested, swapped in, reloaded and
    /// checked, and on any failure the previous generation is put back and reloaded.
    pub(crate) async fn transact<F>(
        &self,
        now: OffsetDateTime,
        change: F,
    ) -> Result<Applied, WebError>
    where
        F: FnOnce(&mut SiteState) -> Result<CheckTarget, WebError>,
    {
        let _serialized = self.lock.lock().await;
        let current = self.live_state()?;
        let mut next = current.clone();
        let check = change(&mut next)?;
        let generation = self.next_generation(&current)?;
        next.generation = generation;
        next.format = STATE_FORMAT;
        let rendered = render_site(&next, &self.layout)?;
        stamp_versions(
            &current,
            &mut next,
            &rendered.hashes,
            now,
            self.layout.history_limit,
        );

        let dir = self.layout.generation_dir(generation);
        let test_config = self
            .layout
            .base_dir
            .join(format!("test-{generation}.nginx"));
        let staged = self.stage(&dir, &test_config, &rendered.files, &next);
        if let Err(error) = staged {
            let _ = std::fs::remove_dir_all(&dir);
            let _ = std::fs::remove_file(&test_config);
            return Err(WebError::Apply(ApplyFailure {
                stage: ApplyStage::Staging,
                message: error.to_string(),
                output: String::new(),
                restored: true,
                restore_error: None,
            }));
        }
        // The state reaches the disk while nginx tests the configuration; the swap waits for it.
        let state_file = dir.join(STATE_FILE);
        let durable = tokio::task::spawn_blocking(move || {
            std::fs::File::open(&state_file).and_then(|file| file.sync_all())
        });
        let tested = self.server.test(&test_config).await;
        let _ = std::fs::remove_file(&test_config);
        let durable = match durable.await {
            Ok(result) => result,
            Err(error) => Err(io::Error::other(error.to_string())),
        };
        if let (Ok(()), Err(error)) = (&tested, durable) {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(WebError::Apply(ApplyFailure {
                stage: ApplyStage::Staging,
                message: format!("writing the new state to disk failed: {error}"),
                output: String::new(),
                restored: true,
                restore_error: None,
            }));
        }
        if let Err(failure) = tested {
            let _ = std::fs::remove_dir_all(&dir);
            tracing::warn!(generation, output = %failure.output, "configuration test refused the change");
            return Err(WebError::Apply(ApplyFailure {
                stage: ApplyStage::ConfigTest,
                message: "nginx refused the new configuration; nothing was changed".into(),
                output: failure.output,
                restored: true,
                restore_error: None,
            }));
        }

        let previous_target = std::fs::read_link(self.layout.live_link()).ok();
        self.swap_live(
            Path::new("generations")
                .join(generation.to_string())
                .as_path(),
        )?;
        match self
            .activate(generation, check.as_ref().map(|id| (id, &next)))
            .await
        {
            Ok(()) => {
                tracing::info!(generation, "configuration generation applied");
                // Old generations go after the answer; nothing waits for their files to go.
                let layout = self.layout.clone();
                tokio::task::spawn_blocking(move || prune_generations(&layout, generation));
                Ok(Applied {
                    generation,
                    state: next,
                })
            }
            Err((stage, message, output)) => {
                tracing::warn!(generation, ?stage, %message, "change failed; restoring the previous configuration");
                let restore_error = match previous_target {
                    Some(target) => self.restore(&target, current.generation).await.err(),
                    None => Some("there was no previous configuration".to_string()),
                };
                if restore_error.is_none() {
                    let _ = std::fs::remove_dir_all(&dir);
                }
                Err(WebError::Apply(ApplyFailure {
                    stage,
                    message,
                    output,
                    restored: restore_error.is_none(),
                    restore_error,
                }))
            }
        }
    }

    fn stage(
        &self,
        dir: &Path,
        test_config: &Path,
        files: &[(String, String)],
        state: &SiteState,
    ) -> Result<(), WebError> {
        let _ = std::fs::remove_dir_all(dir);
        io_context(std::fs::create_dir_all(dir), || {
            format!("creating {}", dir.display())
        })?;
        for (name, contents) in files {
            let path = dir.join(name);
            io_context(std::fs::write(&path, contents), || {
                format!("writing {}", path.display())
            })?;
        }
        let state_text =
            serde_json::to_vec_pretty(state).map_err(|error| WebError::State(error.to_string()))?;
        // Synced to disk by the caller, before the generation goes live.
        let state_file = dir.join(STATE_FILE);
        io_context(
            (|| {
                let mut options = std::fs::OpenOptions::new();
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let mut file = options.write(true).create_new(true).open(&state_file)?;
                io::Write::write_all(&mut file, &state_text)
            })(),
            || format!("writing {}", state_file.display()),
        )?;
        let main = render_main_config(&self.layout, dir);
        io_context(std::fs::write(test_config, main), || {
            format!("writing {}", test_config.display())
        })
    }

    fn next_generation(&self, current: &SiteState) -> Result<u64, WebError> {
        let existing = self.generation_numbers()?;
        Ok(existing
            .into_iter()
            .chain([current.generation])
            .max()
            .unwrap_or(0)
            + 1)
    }

    fn generation_numbers(&self) -> Result<Vec<u64>, WebError> {
        let dir = self.layout.generations_dir();
        let entries = io_context(std::fs::read_dir(&dir), || {
            format!("reading {}", dir.display())
        })?;
        Ok(entries
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
            .collect())
    }

    /// Points the `live` link at `target` (relative to the base directory) in one rename.
    fn swap_live(&self, target: &Path) -> Result<(), WebError> {
        let next = self.layout.base_dir.join("live.next");
        let _ = std::fs::remove_file(&next);
        io_context(std::os::unix::fs::symlink(target, &next), || {
            format!("linking {}", next.display())
        })?;
        io_context(std::fs::rename(&next, self.layout.live_link()), || {
            "swapping the live configuration".to_string()
        })
    }

    /// Reloads, waits for the generation to serve, and checks that nginx serves the changed vhost
    /// from the new generation (its probe answer, not the application behind it).
    async fn activate(
        &self,
        generation: u64,
        check: Option<(&VhostId, &SiteState)>,
    ) -> Result<(), (ApplyStage, String, String)> {
        if let Err(failure) = self.server.reload().await {
            return Err((ApplyStage::Reload, failure.message, failure.output));
        }
        if let Err(message) = self.wait_for_generation(generation).await {
            return Err((
                ApplyStage::Activation,
                message,
                self.log_tail(&self.layout.main_error_log()),
            ));
        }
        let Some((id, state)) = check else {
            return Ok(());
        };
        let Some(record) = state.vhosts.get(id) else {
            return Ok(());
        };
        let host = match record.spec.validate(&self.layout.web_root) {
            Ok(vhost) => vhost.check_host(),
            Err(error) => return Err((ApplyStage::Check, error.to_string(), String::new())),
        };
        // nginx itself answers the probe: the application behind the vhost may be down or
        // not yet started, and that is no reason to keep the previous configuration.
        let path = render::vhost_probe_path(generation);
        let vhost_log = self.layout.log_dir.join(format!("{id}.error.log"));
        match self.probe_get(&host, &path, self.check_deadline).await {
            Ok(answer) => probe_verdict(&answer, generation, id).map_err(|message| {
                (
                    ApplyStage::Check,
                    format!("http://{host}{path}: {message}"),
                    self.log_tail(&vhost_log),
                )
            }),
            Err(error) => Err((
                ApplyStage::Check,
                format!("the vhost did not answer the probe http://{host}{path}: {error}"),
                self.log_tail(&vhost_log),
            )),
        }
    }

    /// A request through nginx from the probe source address (see [`WebLayout::probe_source`]).
    async fn probe_get(
        &self,
        host: &str,
        path: &str,
        deadline: Duration,
    ) -> io::Result<probe::HttpAnswer> {
        http_get_from(
            Some(self.layout.probe_source()),
            self.layout.probe_address(),
            host,
            path,
            deadline,
        )
        .await
    }

    /// What the site behind a live vhost answers to `GET /`, as a sentence for a task's log:
    /// reported after a change, never a reason to undo it.
    pub async fn site_answer(&self, id: &str) -> Result<String, WebError> {
        let (id, record) = self.vhost_record(id)?;
        let host = record.spec.validate(&self.layout.web_root)?.check_host();
        Ok(
            match self.probe_get(&host, "/", self.site_answer_deadline).await {
                Ok(answer) if answer.status < 500 => {
                    format!(
                        "the site answers http://{host}/ with status {}",
                        answer.status
                    )
                }
                Ok(answer) => {
                    let mut sentence = format!(
                        "the site answers http://{host}/ with status {}; nginx serves the vhost, the application behind it is failing or not running",
                        answer.status
                    );
                    let tail = self.log_tail(&self.layout.log_dir.join(format!("{id}.error.log")));
                    if let Some(last) = tail.lines().last() {
                        sentence.push_str(&format!(" (nginx logged: {last})"));
                    }
                    sentence
                }
                Err(error) => format!("the site did not answer http://{host}/: {error}"),
            },
        )
    }

    /// Waits (bounded) until nginx's probe server reports the generation.
    async fn wait_for_generation(&self, generation: u64) -> Result<(), String> {
        let expected = generation.to_string();
        let started = tokio::time::Instant::now();
        let mut last = String::new();
        for _ in 0..200 {
            if started.elapsed() > self.check_deadline {
                break;
            }
            match self
                .probe_get(PROBE_HOST, PROBE_PATH, Duration::from_secs(1))
                .await
            {
                Ok(answer) if answer.status == 200 && answer.body.trim() == expected => {
                    return Ok(());
                }
                Ok(answer) => last = format!("it still serves generation {}", answer.body.trim()),
                Err(error) => last = error.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Err(format!(
            "nginx did not start serving configuration generation {generation} ({last})"
        ))
    }

    async fn restore(&self, target: &Path, generation: u64) -> Result<(), String> {
        self.swap_live(target).map_err(|error| error.to_string())?;
        self.server
            .reload()
            .await
            .map_err(|failure| format!("{}: {}", failure.message, failure.output))?;
        self.wait_for_generation(generation).await
    }

    /// The last lines of a log file (bounded), for reports.
    fn log_tail(&self, path: &Path) -> String {
        server::read_tail(path)
    }
}

/// Removes old generations, keeping the newest few and the live one.
fn prune_generations(layout: &WebLayout, live: u64) {
    let Ok(entries) = std::fs::read_dir(layout.generations_dir()) else {
        return;
    };
    let mut numbers: Vec<u64> = entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    numbers.sort_unstable();
    let keep_from = numbers.len().saturating_sub(layout.generations_kept.max(1));
    for number in &numbers[..keep_from] {
        if *number != live {
            let _ = std::fs::remove_dir_all(layout.generation_dir(*number));
        }
    }
}

/// A record for a new vhost; its version is set when applied.
fn new_record(spec: VhostSpec) -> VhostRecord {
    VhostRecord {
        spec,
        extra: None,
        tls: None,
        cache: None,
        version: 0,
        hash: String::new(),
        applied_at: OffsetDateTime::UNIX_EPOCH,
        history: Vec::new(),
    }
}

/// Removes a directory tree; a missing one is fine.
pub(crate) fn remove_dir_if_present(dir: &Path) -> Result<(), WebError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(WebError::Io {
            context: format!("removing {}", dir.display()),
            source,
        }),
    }
}

/// The identifier of a vhost, checked (for callers holding text).
pub fn vhost_id(id: &str) -> Result<VhostId, ValidationError> {
    VhostId::parse(id)
}

/// A path inside the generation directory, for tests and tools.
pub fn live_file(layout: &WebLayout, name: &str) -> PathBuf {
    layout.live_link().join(name)
}

//! Turning a vhost's cache on, changing or off through the configuration transaction, purging it,
//! and reporting its size.

use time::OffsetDateTime;

use crate::cache::{
    CacheSettings, CacheStatus, PurgeReport, PurgeRequest, cache_usage, purge_all, purge_files,
    remove_files,
};
use crate::vhosts::render::cache_path;
use crate::vhosts::server::WebServer;
use crate::vhosts::spec::{Presence, VhostId};
use crate::vhosts::{WebError, WebOps, io_context, remove_dir_if_present};

impl<S: WebServer> WebOps<S> {
    /// Turns the cache on with these settings, or changes them.
    pub async fn set_cache(
        &self,
        id: &str,
        settings: CacheSettings,
    ) -> Result<CacheStatus, WebError> {
        self.set_cache_expecting(id, settings, Presence::Any).await
    }

    /// Turns the cache on (`New`: it must be off, unless it is on with exactly these settings),
    /// changes it (`Existing`: it must be on), or either (`Any`).
    pub async fn set_cache_expecting(
        &self,
        id: &str,
        settings: CacheSettings,
        presence: Presence,
    ) -> Result<CacheStatus, WebError> {
        let id = VhostId::parse(id)?;
        settings.validate()?;
        if presence == Presence::New {
            let state = self.live_state()?;
            if state
                .vhosts
                .get(&id)
                .is_some_and(|record| record.cache.as_ref() == Some(&settings))
            {
                return self.cache_status(id.as_str());
            }
        }
        let key = id.clone();
        self.transact(OffsetDateTime::now_utc(), move |state| {
            let record = state
                .vhosts
                .get_mut(&key)
                .ok_or_else(|| WebError::NotFound(key.to_string()))?;
            match (&record.cache, presence) {
                (Some(_), Presence::New) => {
                    return Err(WebError::Conflict(format!(
                        "the cache of vhost {key} is on already; change it with PUT"
                    )));
                }
                (None, Presence::Existing) => {
                    return Err(WebError::Conflict(format!(
                        "the cache of vhost {key} is off; enable it with POST"
                    )));
                }
                _ => {}
            }
            record.cache = Some(settings);
            Ok(Some(key))
        })
        .await?;
        self.cache_status(id.as_str())
    }

    /// Turns the cache off and removes its files.
    pub async fn disable_cache(&self, id: &str) -> Result<(), WebError> {
        let id = VhostId::parse(id)?;
        let key = id.clone();
        self.transact(OffsetDateTime::now_utc(), move |state| {
            let record = state
                .vhosts
                .get_mut(&key)
                .ok_or_else(|| WebError::NotFound(key.to_string()))?;
            record.cache = None;
            Ok(Some(key))
        })
        .await?;
        remove_dir_if_present(&cache_path(&self.layout, &id))
    }

    /// Removes cached answers: all of them, or those of the given request URIs on every plain name
    /// of the vhost and both schemes. The cache directory itself stays.
    pub async fn purge_cache(
        &self,
        id: &str,
        request: PurgeRequest,
    ) -> Result<PurgeReport, WebError> {
        let id = VhostId::parse(id)?;
        request.validate()?;
        let state = self.live_state()?;
        let record = state
            .vhosts
            .get(&id)
            .ok_or_else(|| WebError::NotFound(id.to_string()))?;
        let dir = cache_path(&self.layout, &id);
        let report = match &request {
            PurgeRequest::All => {
                io_context(purge_all(&dir), || format!("purging {}", dir.display()))?
            }
            PurgeRequest::Paths(paths) => {
                let names = record.spec.validate(&self.layout.web_root)?.all_names();
                io_context(remove_files(&purge_files(&dir, &names, paths)), || {
                    format!("purging {}", dir.display())
                })?
            }
        };
        tracing::info!(vhost = %id, removed = report.removed_files, "cache purged");
        Ok(report)
    }

    /// The cache's settings and size.
    pub fn cache_status(&self, id: &str) -> Result<CacheStatus, WebError> {
        let id = VhostId::parse(id)?;
        let state = self.live_state()?;
        let record = state
            .vhosts
            .get(&id)
            .ok_or_else(|| WebError::NotFound(id.to_string()))?;
        let dir = cache_path(&self.layout, &id);
        let (size_bytes, files) =
            io_context(cache_usage(&dir), || format!("measuring {}", dir.display()))?;
        Ok(CacheStatus {
            settings: record.cache.clone(),
            size_bytes,
            files,
        })
    }
}

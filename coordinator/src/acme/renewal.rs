//! The renewal loop: every check interval it looks at each vhost whose certificate came from
//! ACME and starts an `ssl.acme` renewal task for those due (the configured time before expiry,
//! 30 days by default). A failed renewal waits the retry time before the next attempt; the
//! certificate in service stays until a new one is deployed.

use std::sync::{Arc, Weak};

use tokio_util::sync::CancellationToken;

use super::task::{AcmeInput, new_task};
use crate::App;
use crate::config::AcmeSettings;
use crate::store::Table;
use crate::store::records::AcmeCertificateRecord;

/// Whether a vhost's certificate should be renewed at `now` (Unix seconds), given no task is
/// under way for it. Pure.
pub fn due(record: &AcmeCertificateRecord, now: i64, settings: &AcmeSettings) -> bool {
    let Some(not_after) = record.not_after else {
        return false;
    };
    let renew_before = settings.renew_before.as_secs() as i64;
    if now < not_after.saturating_sub(renew_before) {
        return false;
    }
    match (&record.last_error, record.last_attempt_at) {
        (Some(_), Some(at)) => now >= at.saturating_add(settings.retry_after.as_secs() as i64),
        _ => true,
    }
}

/// Starts the renewal tasks due now; returns their ids.
pub fn check(app: &App) -> Result<Vec<String>, String> {
    let now = crate::clock::unix_now();
    let mut started = Vec::new();
    let records: Vec<(String, AcmeCertificateRecord)> = app
        .store
        .list(Table::AcmeCertificates)
        .map_err(|error| error.to_string())?;
    for (key, mut record) in records {
        if let Some(id) = &record.task {
            let running = app
                .tasks
                .get(id)
                .map_err(|error| error.to_string())?
                .is_some_and(|task| !task.state.is_ended());
            if running {
                continue;
            }
        }
        if !due(&record, now, &app.config.acme) {
            continue;
        }
        let input = AcmeInput {
            vhost: record.vhost.clone(),
            redirect_http: record.redirect_http,
            renewal: true,
        };
        let (task, _) = app
            .tasks
            .submit(new_task(&record.owner, record.instance, &input))
            .map_err(|error| error.to_string())?;
        tracing::info!(instance = record.instance, vhost = %record.vhost, task = %task.id, "renewing a certificate");
        record.task = Some(task.id.clone());
        app.store
            .put(Table::AcmeCertificates, &key, &record)
            .map_err(|error| error.to_string())?;
        started.push(task.id);
    }
    Ok(started)
}

/// Runs [`check`] at once and then every check interval until `stop` fires or the application
/// is gone.
pub fn spawn(app: &Arc<App>, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    let weak: Weak<App> = Arc::downgrade(app);
    let interval = app.config.acme.check_interval;
    tokio::spawn(async move {
        loop {
            {
                let Some(app) = weak.upgrade() else {
                    return;
                };
                if let Err(error) = check(&app) {
                    tracing::warn!(%error, "the certificate renewal check failed");
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn settings() -> AcmeSettings {
        AcmeSettings {
            directory: "https://acme.invalid/dir".into(),
            ca_file: None,
            contact: None,
            renew_before: Duration::from_secs(30 * 86400),
            check_interval: Duration::from_secs(3600),
            retry_after: Duration::from_secs(6 * 3600),
        }
    }

    fn record(not_after: Option<i64>, attempt: Option<(i64, bool)>) -> AcmeCertificateRecord {
        AcmeCertificateRecord {
            instance: 101,
            vhost: "a".into(),
            owner: "u".into(),
            redirect_http: None,
            names: vec!["a.example".into()],
            not_after,
            last_attempt_at: attempt.map(|(at, _)| at),
            last_error: attempt.and_then(|(_, failed)| failed.then(|| "refused".to_string())),
            task: None,
            created_at: String::new(),
        }
    }

    #[test]
    fn renewal_is_due_thirty_days_before_expiry_and_waits_after_a_failure() {
        let day = 86400;
        let expiry = 1_000 * day;
        let cases = [
            ("never issued", record(None, None), 0, false),
            (
                "31 days left",
                record(Some(expiry), None),
                expiry - 31 * day,
                false,
            ),
            (
                "30 days left",
                record(Some(expiry), None),
                expiry - 30 * day,
                true,
            ),
            ("expired", record(Some(expiry), None), expiry + day, true),
            (
                "failed an hour ago",
                record(Some(expiry), Some((expiry - 10 * day - 3600, true))),
                expiry - 10 * day,
                false,
            ),
            (
                "failed seven hours ago",
                record(Some(expiry), Some((expiry - 10 * day - 7 * 3600, true))),
                expiry - 10 * day,
                true,
            ),
            (
                "succeeded an hour ago but due",
                record(Some(expiry), Some((expiry - 10 * day - 3600, false))),
                expiry - 10 * day,
                true,
            ),
        ];
        for (name, record, now, expected) in cases {
            assert_eq!(due(&record, now, &settings()), expected, "{name}");
        }
    }
}

//! The `ssl.acme` task: issue (or renew) a vhost's certificate through ACME, HTTP-01 answered by
//! the vhost's nginx. It waits (`queued`) while the agent is offline, then talks to the agent
//! with direct calls: read the vhost's names, put the challenge answers, have the agent make the
//! key and signing request, deploy the chain, take the answers away.
//!
//! Invariant: a failed issuance or renewal never touches the certificate in service; the
//! failure is recorded on the agent (the status shows it) and in the vhost's ACME record.

use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::future::BoxFuture;
use protocol::web::{CertificateSource, CertificateStatus, ServerName, VhostId};
use protocol::{ErrorCode, ErrorData, Operation, OperationOutput};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::client::{AcmeError, VhostAgent};
use crate::App;
use crate::agentwork;
use crate::agentwork::results::certificate_json;
use crate::channel::ChannelError;
use crate::store::Table;
use crate::store::records::AcmeCertificateRecord;
use crate::tasks::kinds::SSL_ACME;
use crate::tasks::{Executor, NewTask, Phase, RestartPolicy, TaskContext, TaskFailure};

/// How long an issuance may wait for its agent and run.
pub const DEADLINE: Duration = Duration::from_secs(3600);

/// The stored input of an `ssl.acme` task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AcmeInput {
    pub vhost: String,
    /// Whether HTTP should redirect to HTTPS once the certificate serves (unchanged if absent).
    #[serde(default)]
    pub redirect_http: Option<bool>,
    /// A renewal started by the renewal loop (else asked for through the API).
    #[serde(default)]
    pub renewal: bool,
}

/// The task for `input` on `instance`, as `owner`.
pub fn new_task(owner: &str, instance: u32, input: &AcmeInput) -> NewTask {
    NewTask::new(SSL_ACME, owner)
        .instance(instance)
        .input(json!(input))
        .deadline(DEADLINE)
}

/// Registers the executor; it holds the application weakly.
pub fn register(app: &Arc<App>) {
    app.tasks.register(
        SSL_ACME,
        AcmeExecutor {
            app: Arc::downgrade(app),
        },
    );
}

struct AcmeExecutor {
    app: Weak<App>,
}

impl Executor for AcmeExecutor {
    fn run(&self, context: TaskContext) -> BoxFuture<'static, Result<Value, TaskFailure>> {
        let app = self.app.clone();
        Box::pin(async move {
            let app = app
                .upgrade()
                .ok_or_else(|| TaskFailure::new("stopping", "the coordinator is stopping"))?;
            run(&app, &context).await
        })
    }

    /// Issuance starts from scratch again: a new order, a new key on the agent.
    fn on_restart(&self) -> RestartPolicy {
        RestartPolicy::Resume
    }

    fn sets_state_first(&self) -> bool {
        true
    }
}

/// The instance's agent as the ACME flow sees it, over direct calls.
struct ChannelAgent<'a> {
    app: &'a App,
    instance: u32,
    vhost: VhostId,
    redirect_http: Option<bool>,
}

impl ChannelAgent<'_> {
    async fn call(&self, operation: Operation) -> Result<OperationOutput, ErrorData> {
        self.app
            .channel
            .call(self.instance, operation, agentwork::CALL_DEADLINE)
            .await
            .map_err(|error| match error {
                ChannelError::Operation(error) => error,
                other => ErrorData::new(ErrorCode::Unavailable, other.to_string()),
            })
    }
}

fn unexpected(output: OperationOutput) -> ErrorData {
    ErrorData::new(
        ErrorCode::Internal,
        format!("the agent answered with {output:?}"),
    )
}

impl VhostAgent for ChannelAgent<'_> {
    async fn put_challenge(&self, token: &str, key_authorization: &str) -> Result<(), ErrorData> {
        self.call(Operation::AcmeChallengePut {
            vhost: self.vhost.clone(),
            token: token.to_string(),
            key_authorization: key_authorization.to_string(),
        })
        .await
        .map(drop)
    }

    async fn remove_challenge(&self, token: &str) -> Result<(), ErrorData> {
        self.call(Operation::AcmeChallengeRemove {
            vhost: self.vhost.clone(),
            token: token.to_string(),
        })
        .await
        .map(drop)
    }

    async fn signing_request(&self) -> Result<Vec<u8>, ErrorData> {
        match self
            .call(Operation::CertificateRequestKey {
                vhost: self.vhost.clone(),
            })
            .await?
        {
            OperationOutput::CertificateSigningRequest { csr_der } => Ok(csr_der),
            other => Err(unexpected(other)),
        }
    }

    async fn deploy(&self, chain: String) -> Result<CertificateStatus, ErrorData> {
        match self
            .call(Operation::CertificateDeployIssued {
                vhost: self.vhost.clone(),
                certificate_chain: chain,
                redirect_http: self.redirect_http,
                source: CertificateSource::Acme,
            })
            .await?
        {
            OperationOutput::Certificate(status) => Ok(status),
            other => Err(unexpected(other)),
        }
    }
}

fn stored(error: impl std::fmt::Display) -> TaskFailure {
    TaskFailure::new("task_error", error.to_string())
}

/// The names HTTP-01 must validate: every name of the vhost; wildcards cannot be.
fn names_to_validate(server_names: &[String]) -> Result<Vec<String>, TaskFailure> {
    let mut names = Vec::new();
    for name in server_names {
        let name = ServerName::parse(name).map_err(|reason| {
            TaskFailure::new("invalid_input", format!("server name {name:?} {reason}"))
        })?;
        if name.is_wildcard() {
            return Err(TaskFailure::new(
                "invalid_input",
                format!(
                    "HTTP-01 cannot validate the wildcard name {name}; upload a certificate for it instead"
                ),
            ));
        }
        names.push(name.as_str().to_string());
    }
    Ok(names)
}

async fn run(app: &Arc<App>, context: &TaskContext) -> Result<Value, TaskFailure> {
    let input: AcmeInput = serde_json::from_value(context.input.clone()).map_err(|error| {
        TaskFailure::new(
            "bad_input",
            format!("the task's input is unreadable: {error}"),
        )
    })?;
    let instance = context
        .instance
        .ok_or_else(|| TaskFailure::new("bad_input", "an ACME task needs an instance"))?;
    let vhost = VhostId::parse(&input.vhost)
        .map_err(|error| TaskFailure::new("bad_input", error.to_string()))?;
    let key = AcmeCertificateRecord::key(instance, vhost.as_str());

    loop {
        let mut events = app.channel.subscribe();
        if app.channel.is_connected(instance) {
            break;
        }
        context.set_state(Phase::Queued).map_err(stored)?;
        agentwork::wait_for_agent(app, &mut events, instance, context).await?;
    }
    context.set_state(Phase::Running).map_err(stored)?;

    let agent = ChannelAgent {
        app,
        instance,
        vhost: vhost.clone(),
        redirect_http: input.redirect_http,
    };
    let info = match agent.call(Operation::VhostGet { id: vhost.clone() }).await {
        Ok(OperationOutput::Vhost(info)) => info,
        Ok(other) => return Err(TaskFailure::new("agent_error", unexpected(other).message)),
        Err(error) if error.code == ErrorCode::NotFound => {
            // The vhost is gone: nothing is left to renew.
            app.store
                .delete(Table::AcmeCertificates, &key)
                .map_err(stored)?;
            return Err(TaskFailure::new("not_found", error.message));
        }
        Err(error) => return Err(TaskFailure::new(error.code.as_str(), error.message)),
    };
    let names = names_to_validate(&info.spec.server_names)?;

    let previous: Option<AcmeCertificateRecord> = app
        .store
        .get(Table::AcmeCertificates, &key)
        .map_err(stored)?;
    let mut record = previous.unwrap_or_else(|| AcmeCertificateRecord {
        instance,
        vhost: vhost.to_string(),
        owner: context.owner.clone(),
        redirect_http: None,
        names: Vec::new(),
        not_after: None,
        last_attempt_at: None,
        last_error: None,
        task: None,
        created_at: crate::clock::now_rfc3339(),
    });
    if input.redirect_http.is_some() {
        record.redirect_http = input.redirect_http;
    }
    record.task = Some(context.id.clone());
    app.store
        .put(Table::AcmeCertificates, &key, &record)
        .map_err(stored)?;

    let what = if input.renewal { "renewing" } else { "issuing" };
    let _ = context.log(format!(
        "{what} a certificate through {}",
        app.acme.client.settings().directory
    ));
    let log = |line: String| {
        let _ = context.log(line);
    };
    let outcome = app.acme.client.issue(&names, &agent, &log).await;
    record.task = None;
    record.last_attempt_at = Some(crate::clock::unix_now());
    match outcome {
        Ok(status) => {
            record.last_error = None;
            if let Some(certificate) = &status.certificate {
                record.not_after = Some(certificate.not_after_unix);
                record.names = certificate.names.clone();
            }
            app.store
                .put(Table::AcmeCertificates, &key, &record)
                .map_err(stored)?;
            Ok(json!({ "certificate": certificate_json(&status) }))
        }
        Err(error) => {
            let message = error.to_string();
            tracing::warn!(instance, vhost = %vhost, error = %message, "ACME {what} failed");
            // The agent records a failed deployment itself; anything earlier is recorded here.
            if !matches!(
                error,
                AcmeError::Agent {
                    context: "deploying the certificate",
                    ..
                }
            ) {
                let _ = agent
                    .call(Operation::CertificateRecordAttempt {
                        vhost: vhost.clone(),
                        source: CertificateSource::Acme,
                        error: Some(message.clone()),
                    })
                    .await;
            }
            if record.not_after.is_some() {
                record.last_error = Some(message.clone());
                app.store
                    .put(Table::AcmeCertificates, &key, &record)
                    .map_err(stored)?;
            } else {
                // Nothing was ever issued: there is nothing to renew.
                app.store
                    .delete(Table::AcmeCertificates, &key)
                    .map_err(stored)?;
            }
            Err(TaskFailure::new("acme_failed", message))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_cannot_be_validated_over_http() {
        assert_eq!(
            names_to_validate(&["A.example".into(), "www.a.example".into()]).unwrap(),
            vec!["a.example", "www.a.example"]
        );
        let refused = names_to_validate(&["*.a.example".into()]).unwrap_err();
        assert_eq!(refused.code, "invalid_input");
    }
}

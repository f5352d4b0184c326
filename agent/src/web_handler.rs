//! The web operations as a [`Handler`]: vhosts, certificates, ACME challenge answers and caches on
//! the agent's nginx. Every change is one configuration transaction of [`WebOps`], which also
//! keeps changes from overlapping (one nginx test and reload at a time); reads do not wait.
//!
//! Invariant: a change, once started, runs to its end on its own task even when the task is
//! cancelled or its deadline passes, so nginx is never left between two configuration
//! generations; the transport reports the cancellation, the web server stays consistent.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use protocol::{ErrorCode, ErrorData, Operation, OperationOutput, TaskOutcome};
use tokio::sync::OnceCell;

use crate::handler::{Handler, TaskContext, operation_name};
use crate::vhosts::layout::WebLayout;
use crate::vhosts::server::{Nginx, WebServer};
use crate::vhosts::{ApplyFailure, WebError, WebOps};

/// The web handler: the agent's [`WebOps`] behind the task transport.
pub struct WebHandler<S: WebServer + 'static = Nginx> {
    ops: Arc<WebOps<S>>,
    /// Set once the main configuration is written and nginx runs it (before the first change).
    installed: Arc<OnceCell<()>>,
}

impl<S: WebServer + 'static> Clone for WebHandler<S> {
    fn clone(&self) -> Self {
        WebHandler {
            ops: self.ops.clone(),
            installed: self.installed.clone(),
        }
    }
}

impl<S: WebServer + 'static> std::fmt::Debug for WebHandler<S> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("WebHandler")
            .field("ops", &self.ops)
            .field("installed", &self.installed.initialized())
            .finish()
    }
}

impl WebHandler<Nginx> {
    /// The web handler on the nginx of a Debian container.
    pub fn debian() -> WebHandler<Nginx> {
        WebHandler::nginx(WebLayout::debian())
    }

    /// The web handler on the nginx the layout describes.
    pub fn nginx(layout: WebLayout) -> WebHandler<Nginx> {
        WebHandler::new(WebOps::nginx(layout))
    }
}

impl<S: WebServer + 'static> WebHandler<S> {
    /// The handler on these web operations.
    pub fn new(ops: WebOps<S>) -> WebHandler<S> {
        WebHandler {
            ops: Arc::new(ops),
            installed: Arc::new(OnceCell::new()),
        }
    }

    /// The web operations underneath.
    pub fn ops(&self) -> &WebOps<S> {
        &self.ops
    }

    /// Writes the main configuration and starts nginx on it, once per process; a failure is
    /// tried again by the next change.
    async fn ensure_installed(&self) -> Result<(), ErrorData> {
        let ops = self.ops.clone();
        self.installed
            .get_or_try_init(|| async move {
                let binary = &ops.layout().nginx_binary;
                if crate::databases::find_program(&binary.to_string_lossy()).is_none() {
                    return Err(ErrorData::new(
                        ErrorCode::Unavailable,
                        "nginx is not installed here; install the nginx package first",
                    )
                    .with_detail("program", binary.to_string_lossy()));
                }
                ops.install()
                    .await
                    .map(|_| ())
                    .map_err(|error| error.to_error_data())
            })
            .await
            .map(|_| ())
    }

    /// Performs a web operation; `None` for any other kind.
    pub async fn perform(
        &self,
        operation: Operation,
        context: &TaskContext,
    ) -> Option<TaskOutcome> {
        if !handles(&operation) {
            return None;
        }
        let handler = self.clone();
        let log = context.clone();
        let name = operation_name(&operation);
        let reported = reported_vhost(&operation);
        // Its own task: see the module's invariant.
        let work = tokio::spawn(async move {
            if changes(&operation) {
                handler.ensure_installed().await?;
            }
            let output = handler
                .run(operation)
                .await
                .map_err(|error| error.to_error_data())?;
            // The application's own answer is news for the task's log, never a failure.
            let report = match reported {
                Some(id) => handler.ops.site_answer(&id).await.ok(),
                None => None,
            };
            Ok((output, report))
        });
        let outcome = match work.await {
            Ok(Ok((output, report))) => {
                if let Some(report) = report {
                    log.log(report).await;
                }
                Ok(output)
            }
            Ok(Err(error)) => Err(error),
            Err(error) => Err(ErrorData::new(
                ErrorCode::Internal,
                format!("the {name} operation stopped unexpectedly: {error}"),
            )),
        };
        if let Err(error) = &outcome {
            log.log(format!("{name} failed: {}", error.message)).await;
            if let Some((_, output)) = error.details.iter().find(|(key, _)| key == "output") {
                for line in output.lines() {
                    log.log(line).await;
                }
            }
        }
        Some(outcome)
    }

    async fn run(&self, operation: Operation) -> Result<OperationOutput, WebError> {
        let ops = &self.ops;
        Ok(match operation {
            Operation::VhostList => OperationOutput::Vhosts(
                ops.vhost_records()?
                    .iter()
                    .map(|(id, record)| record.to_wire(id))
                    .collect(),
            ),
            Operation::VhostGet { id } => {
                let (id, record) = ops.vhost_record(id.as_str())?;
                OperationOutput::Vhost(Box::new(record.to_wire(&id)))
            }
            Operation::VhostPut { id, spec, presence } => {
                let (id, state) = ops.put_vhost_expecting(id.as_str(), spec, presence).await?;
                OperationOutput::Vhost(Box::new(state.vhosts[&id].to_wire(&id)))
            }
            Operation::VhostDelete { id } => {
                ops.delete_vhost(id.as_str()).await?;
                OperationOutput::Done
            }
            Operation::VhostSetExtra { id, extra } => {
                ops.set_extra(id.as_str(), extra).await?;
                let (id, record) = ops.vhost_record(id.as_str())?;
                OperationOutput::Vhost(Box::new(record.to_wire(&id)))
            }
            Operation::CertificateGet { vhost } => {
                OperationOutput::Certificate(ops.certificate_status(vhost.as_str())?.to_wire())
            }
            Operation::CertificateDeploy {
                vhost,
                upload,
                source,
            } => OperationOutput::Certificate(
                ops.deploy_certificate(vhost.as_str(), upload, source)
                    .await?
                    .to_wire(),
            ),
            Operation::CertificateRemove { vhost } => {
                ops.remove_certificate(vhost.as_str()).await?;
                OperationOutput::Done
            }
            Operation::CertificateRecordAttempt {
                vhost,
                source,
                error,
            } => {
                ops.vhost_record(vhost.as_str())?;
                ops.record_certificate_attempt(vhost.as_str(), source, error)?;
                OperationOutput::Done
            }
            Operation::CertificateRequestKey { vhost } => {
                OperationOutput::CertificateSigningRequest {
                    csr_der: ops.request_certificate_key(vhost.as_str())?,
                }
            }
            Operation::CertificateDeployIssued {
                vhost,
                certificate_chain,
                redirect_http,
                source,
            } => OperationOutput::Certificate(
                ops.deploy_issued_certificate(
                    vhost.as_str(),
                    certificate_chain,
                    redirect_http,
                    source,
                )
                .await?
                .to_wire(),
            ),
            Operation::AcmeChallengePut {
                vhost,
                token,
                key_authorization,
            } => {
                ops.put_challenge(vhost.as_str(), &token, &key_authorization)?;
                OperationOutput::Done
            }
            Operation::AcmeChallengeRemove { vhost, token } => {
                ops.remove_challenge(vhost.as_str(), &token)?;
                OperationOutput::Done
            }
            Operation::CacheGet { vhost } => {
                OperationOutput::Cache(ops.cache_status(vhost.as_str())?)
            }
            Operation::CacheSet {
                vhost,
                settings,
                presence,
            } => OperationOutput::Cache(
                ops.set_cache_expecting(vhost.as_str(), settings, presence)
                    .await?,
            ),
            Operation::CacheDisable { vhost } => {
                ops.disable_cache(vhost.as_str()).await?;
                OperationOutput::Done
            }
            Operation::CachePurge { vhost, request } => {
                OperationOutput::CachePurged(ops.purge_cache(vhost.as_str(), request).await?)
            }
            Operation::CertificateCheck { vhost, upload } => {
                ops.check_certificate(vhost.as_str(), &upload)?;
                OperationOutput::Done
            }
            other => {
                return Err(WebError::State(format!(
                    "the web handler got a {} operation",
                    operation_name(&other)
                )));
            }
        })
    }
}

/// Whether `operation` is a web operation.
fn handles(operation: &Operation) -> bool {
    matches!(
        operation,
        Operation::VhostList
            | Operation::VhostGet { .. }
            | Operation::VhostPut { .. }
            | Operation::VhostDelete { .. }
            | Operation::VhostSetExtra { .. }
            | Operation::CertificateGet { .. }
            | Operation::CertificateDeploy { .. }
            | Operation::CertificateRemove { .. }
            | Operation::CertificateRecordAttempt { .. }
            | Operation::CertificateRequestKey { .. }
            | Operation::CertificateDeployIssued { .. }
            | Operation::AcmeChallengePut { .. }
            | Operation::AcmeChallengeRemove { .. }
            | Operation::CacheGet { .. }
            | Operation::CacheSet { .. }
            | Operation::CacheDisable { .. }
            | Operation::CachePurge { .. }
            | Operation::CertificateCheck { .. }
    )
}

/// The vhost whose site's answer is reported after `operation` succeeds: the changes of its
/// spec and of its administrator's block.
fn reported_vhost(operation: &Operation) -> Option<String> {
    match operation {
        Operation::VhostPut { id, .. } | Operation::VhostSetExtra { id, .. } => {
            Some(id.as_str().to_string())
        }
        _ => None,
    }
}

/// Whether `operation` changes the web server's configuration (and so needs it installed).
fn changes(operation: &Operation) -> bool {
    matches!(
        operation,
        Operation::VhostPut { .. }
            | Operation::VhostDelete { .. }
            | Operation::VhostSetExtra { .. }
            | Operation::CertificateDeploy { .. }
            | Operation::CertificateRemove { .. }
            | Operation::CertificateDeployIssued { .. }
            | Operation::CacheSet { .. }
            | Operation::CacheDisable { .. }
    )
}

impl<S: WebServer + 'static> Handler for WebHandler<S> {
    fn handles(&self, operation: &Operation) -> bool {
        handles(operation)
    }

    fn handle(
        &self,
        operation: Operation,
        context: TaskContext,
    ) -> BoxFuture<'static, TaskOutcome> {
        let handler = self.clone();
        Box::pin(async move {
            handler
                .perform(operation, &context)
                .await
                .unwrap_or_else(|| {
                    Err(ErrorData::new(
                        ErrorCode::Internal,
                        "the web handler got another kind of operation",
                    ))
                })
        })
    }
}

impl WebError {
    /// The error as it crosses the wire. A refused change carries the failed step, nginx's
    /// output and whether the previous configuration is back (`stage`, `output`, `restored`).
    pub fn to_error_data(&self) -> ErrorData {
        match self {
            WebError::Invalid(error) => error.to_error_data(),
            WebError::NotFound(_) => ErrorData::new(ErrorCode::NotFound, self.to_string()),
            WebError::Conflict(_) => ErrorData::new(ErrorCode::Conflict, self.to_string()),
            WebError::Apply(failure) => apply_error_data(failure),
            WebError::Io { .. } | WebError::State(_) => {
                ErrorData::new(ErrorCode::Internal, self.to_string())
            }
        }
    }
}

fn apply_error_data(failure: &ApplyFailure) -> ErrorData {
    let mut data = ErrorData::new(ErrorCode::CommandFailed, failure.to_string())
        .with_detail("stage", failure.stage.as_str())
        .with_detail("restored", failure.restored.to_string());
    if !failure.output.is_empty() {
        data = data.with_detail("output", failure.output.clone());
    }
    if let Some(error) = &failure.restore_error {
        data = data.with_detail("restore_error", error.clone());
    }
    data
}

//! The ACME client: one account per directory (its key kept in the store), and the issuance of
//! one certificate for a vhost's names over HTTP-01, answered by the vhost's own nginx through
//! the instance's agent. The certificate's private key is made on the agent and never leaves it:
//! the agent answers a signing request and later receives the issued chain.

use std::future::Future;
use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, Order, OrderStatus, RetryPolicy,
};
use protocol::ErrorData;
use protocol::web::CertificateStatus;
use tokio::sync::Mutex;

use crate::config::AcmeSettings;
use crate::store::records::AcmeAccountRecord;
use crate::store::{Store, StoreError, Table};

/// How long an order may take to become ready, and its certificate to be issued.
const ORDER_TIMEOUT: Duration = Duration::from_secs(120);

/// Why an issuance failed.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    /// The ACME server could not be reached or refused a request.
    #[error("{context}: {message}")]
    Server {
        /// What was being done.
        context: &'static str,
        /// The server's or the client's words.
        message: String,
    },
    /// The server did not validate the names.
    #[error("the ACME server did not validate the names: {0}")]
    NotValidated(String),
    /// The agent failed a step.
    #[error("{context}: {error}")]
    Agent {
        /// What was being done.
        context: &'static str,
        /// The agent's failure.
        error: ErrorData,
    },
    /// The stored account could not be read or written.
    #[error("the ACME account could not be kept: {0}")]
    Store(String),
}

impl From<StoreError> for AcmeError {
    fn from(error: StoreError) -> AcmeError {
        AcmeError::Store(error.to_string())
    }
}

fn server(context: &'static str) -> impl FnOnce(instant_acme::Error) -> AcmeError {
    move |error| AcmeError::Server {
        context,
        message: error.to_string(),
    }
}

fn by_agent(context: &'static str) -> impl FnOnce(ErrorData) -> AcmeError {
    move |error| AcmeError::Agent { context, error }
}

/// What issuance needs from the vhost's agent.
pub trait VhostAgent: Send + Sync {
    /// Makes nginx answer `/.well-known/acme-challenge/<token>` with the key authorization.
    fn put_challenge(
        &self,
        token: &str,
        key_authorization: &str,
    ) -> impl Future<Output = Result<(), ErrorData>> + Send;
    /// Stops answering the token.
    fn remove_challenge(&self, token: &str) -> impl Future<Output = Result<(), ErrorData>> + Send;
    /// A new key on the agent and a signing request (DER) for the vhost's names.
    fn signing_request(&self) -> impl Future<Output = Result<Vec<u8>, ErrorData>> + Send;
    /// Deploys the issued chain (PEM) with that key.
    fn deploy(
        &self,
        chain: String,
    ) -> impl Future<Output = Result<CertificateStatus, ErrorData>> + Send;
}

/// The coordinator's ACME client.
pub struct AcmeClient {
    settings: AcmeSettings,
    store: Store,
    account: Mutex<Option<Account>>,
}

impl std::fmt::Debug for AcmeClient {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("AcmeClient")
            .field("directory", &self.settings.directory)
            .finish_non_exhaustive()
    }
}

impl AcmeClient {
    /// A client of the configured directory, keeping its account in `store`.
    pub fn new(settings: AcmeSettings, store: Store) -> AcmeClient {
        AcmeClient {
            settings,
            store,
            account: Mutex::new(None),
        }
    }

    /// The settings in use.
    pub fn settings(&self) -> &AcmeSettings {
        &self.settings
    }

    fn builder(&self) -> Result<instant_acme::AccountBuilder, AcmeError> {
        match &self.settings.ca_file {
            Some(path) => Account::builder_with_root(path),
            None => Account::builder(),
        }
        .map_err(server("setting up the ACME client"))
    }

    /// The account at the directory: the stored one, or a new one (stored before use).
    pub async fn account(&self) -> Result<Account, AcmeError> {
        let mut cached = self.account.lock().await;
        if let Some(account) = cached.as_ref() {
            return Ok(account.clone());
        }
        let directory = &self.settings.directory;
        let stored: Option<AcmeAccountRecord> = self.store.get(Table::AcmeAccounts, directory)?;
        let account = match stored {
            Some(record) => {
                let credentials: AccountCredentials = serde_json::from_value(record.credentials)
                    .map_err(|error| AcmeError::Store(error.to_string()))?;
                self.builder()?
                    .from_credentials(credentials)
                    .await
                    .map_err(server("restoring the ACME account"))?
            }
            None => {
                let contact = self
                    .settings
                    .contact
                    .as_ref()
                    .map(|email| format!("mailto:{email}"));
                let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
                let (account, credentials) = self
                    .builder()?
                    .create(
                        &NewAccount {
                            contact: &contacts,
                            terms_of_service_agreed: true,
                            only_return_existing: false,
                        },
                        directory.clone(),
                        None,
                    )
                    .await
                    .map_err(server("creating the ACME account"))?;
                let record = AcmeAccountRecord {
                    account_url: account.id().to_string(),
                    credentials: serde_json::to_value(&credentials)
                        .map_err(|error| AcmeError::Store(error.to_string()))?,
                    created_at: crate::clock::now_rfc3339(),
                };
                self.store.put(Table::AcmeAccounts, directory, &record)?;
                tracing::info!(%directory, account = %record.account_url, "created an ACME account");
                account
            }
        };
        *cached = Some(account.clone());
        Ok(account)
    }

    /// Issues a certificate for `names` and has the agent deploy it. Every challenge answer put
    /// on the agent is taken away again, whatever happens. `log` hears each step.
    pub async fn issue<A: VhostAgent>(
        &self,
        names: &[String],
        agent: &A,
        log: &(dyn Fn(String) + Send + Sync),
    ) -> Result<CertificateStatus, AcmeError> {
        let account = self.account().await?;
        let identifiers: Vec<Identifier> = names.iter().cloned().map(Identifier::Dns).collect();
        let mut order = account
            .new_order(&NewOrder::new(&identifiers))
            .await
            .map_err(server("creating the ACME order"))?;
        log(format!("ordered a certificate for {}", names.join(", ")));
        let mut tokens = Vec::new();
        let outcome = complete(&mut order, agent, &mut tokens, log).await;
        for token in &tokens {
            if let Err(error) = agent.remove_challenge(token).await {
                log(format!(
                    "the challenge answer {token} could not be removed: {error}"
                ));
            }
        }
        outcome
    }
}

async fn complete<A: VhostAgent>(
    order: &mut Order,
    agent: &A,
    tokens: &mut Vec<String>,
    log: &(dyn Fn(String) + Send + Sync),
) -> Result<CertificateStatus, AcmeError> {
    {
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization = authorization.map_err(server("reading an authorization"))?;
            let name = authorization.identifier().to_string();
            match authorization.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => {
                    return Err(AcmeError::NotValidated(format!(
                        "the authorization for {name} is {other:?}"
                    )));
                }
            }
            let mut challenge =
                authorization
                    .challenge(ChallengeType::Http01)
                    .ok_or_else(|| {
                        AcmeError::NotValidated(format!(
                            "no HTTP-01 challenge is offered for {name}"
                        ))
                    })?;
            let token = challenge.token.clone();
            agent
                .put_challenge(&token, challenge.key_authorization().as_str())
                .await
                .map_err(by_agent("answering the HTTP-01 challenge"))?;
            tokens.push(token);
            challenge
                .set_ready()
                .await
                .map_err(server("telling the ACME server the challenge is ready"))?;
            log(format!("answering the HTTP-01 challenge for {name}"));
        }
    }
    let retries = RetryPolicy::new()
        .initial_delay(Duration::from_millis(250))
        .timeout(ORDER_TIMEOUT);
    let status = order
        .poll_ready(&retries)
        .await
        .map_err(server("waiting for the order"))?;
    if status != OrderStatus::Ready {
        return Err(AcmeError::NotValidated(
            failures(order)
                .await
                .unwrap_or_else(|| format!("the order is {status:?}")),
        ));
    }
    log("the names are validated".to_string());
    let csr = agent
        .signing_request()
        .await
        .map_err(by_agent("making the key and signing request"))?;
    order
        .finalize_csr(&csr)
        .await
        .map_err(server("finalizing the order"))?;
    let chain = order
        .poll_certificate(&retries)
        .await
        .map_err(server("fetching the certificate"))?;
    log("the certificate is issued; deploying it".to_string());
    agent
        .deploy(chain)
        .await
        .map_err(by_agent("deploying the certificate"))
}

/// What the server said about each failed challenge.
async fn failures(order: &mut Order) -> Option<String> {
    let mut reasons = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(authorization)) = authorizations.next().await {
        let name = authorization.identifier().to_string();
        for challenge in &authorization.challenges {
            if let Some(problem) = &challenge.error {
                reasons.push(format!("{name}: {problem}"));
            }
        }
    }
    (!reasons.is_empty()).then(|| reasons.join("; "))
}

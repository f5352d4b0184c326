//! Deploying and removing a vhost's certificate through the configuration transaction, its status,
//! and the ACME HTTP-01 answers nginx serves.
//!
//! Invariant: a new certificate is written to a fresh directory; the one in service is removed only
//! after the change that replaces it has been applied, so a failed renewal leaves it serving.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use crate::certs::{
    CertificateAttempt, CertificateSource, CertificateStatus, CertificateUpload, check_certificate,
    check_challenge,
};
use crate::vhosts::render::{CHALLENGE_PREFIX, challenge_root};
use crate::vhosts::server::WebServer;
use crate::vhosts::spec::VhostId;
use crate::vhosts::state::TlsBinding;
use crate::vhosts::{WebError, WebOps, io_context, remove_dir_if_present, write_file_atomically};

/// The file holding a vhost's latest certificate attempt.
const ATTEMPT_FILE: &str = "attempt.json";
/// The file holding the key made for a vhost's latest certificate signing request.
const PENDING_KEY_FILE: &str = "pending-key.pem";

impl<S: WebServer> WebOps<S> {
    fn vhost_tls_dir(&self, id: &VhostId) -> PathBuf {
        self.layout.tls_dir().join(id.as_str())
    }

    fn create_private_dir(dir: &Path) -> Result<(), WebError> {
        io_context(std::fs::create_dir_all(dir), || {
            format!("creating {}", dir.display())
        })?;
        io_context(
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)),
            || format!("restricting {}", dir.display()),
        )
    }

    /// Records the latest certificate attempt of a vhost (the coordinator reports ACME failures here).
    pub fn record_certificate_attempt(
        &self,
        id: &str,
        source: CertificateSource,
        error: Option<String>,
    ) -> Result<(), WebError> {
        let id = VhostId::parse(id)?;
        let dir = self.vhost_tls_dir(&id);
        Self::create_private_dir(&dir)?;
        let attempt = CertificateAttempt {
            at: OffsetDateTime::now_utc(),
            source,
            error,
        };
        let text = serde_json::to_vec_pretty(&attempt)
            .map_err(|error| WebError::State(error.to_string()))?;
        write_file_atomically(&dir.join(ATTEMPT_FILE), &text, 0o600)
    }

    /// Checks a certificate against the vhost's names and the clock, writes it (key 0600) and
    /// switches the vhost to HTTPS. On any failure the certificate in service stays.
    pub async fn deploy_certificate(
        &self,
        id: &str,
        upload: CertificateUpload,
        source: CertificateSource,
    ) -> Result<CertificateStatus, WebError> {
        let result = self.deploy_certificate_inner(id, upload, source).await;
        if VhostId::parse(id).is_ok() && !matches!(result, Err(WebError::NotFound(_))) {
            let error = result.as_ref().err().map(ToString::to_string);
            self.record_certificate_attempt(id, source, error)?;
        }
        result?;
        self.certificate_status(id)
    }

    /// Checks a certificate for the vhost as a deployment would, without deploying it.
    pub fn check_certificate(&self, id: &str, upload: &CertificateUpload) -> Result<(), WebError> {
        let id = VhostId::parse(id)?;
        let state = self.live_state()?;
        let record = state
            .vhosts
            .get(&id)
            .ok_or_else(|| WebError::NotFound(id.to_string()))?;
        let names = record.spec.validate(&self.layout.web_root)?.all_names();
        check_certificate(
            upload,
            &names,
            OffsetDateTime::now_utc(),
            CertificateSource::Upload,
        )?;
        Ok(())
    }

    async fn deploy_certificate_inner(
        &self,
        id: &str,
        upload: CertificateUpload,
        source: CertificateSource,
    ) -> Result<(), WebError> {
        let id = VhostId::parse(id)?;
        let now = OffsetDateTime::now_utc();
        let state = self.live_state()?;
        let record = state
            .vhosts
            .get(&id)
            .ok_or_else(|| WebError::NotFound(id.to_string()))?;
        let names = record.spec.validate(&self.layout.web_root)?.all_names();
        let checked = check_certificate(&upload, &names, now, source)?;

        let vhost_dir = self.vhost_tls_dir(&id);
        Self::create_private_dir(&vhost_dir)?;
        let dir = vhost_dir.join(format!(
            "{}-{}",
            &checked.info.fingerprint_sha256[..16],
            now.unix_timestamp_nanos()
        ));
        Self::create_private_dir(&dir)?;
        let binding = TlsBinding {
            dir: dir.clone(),
            info: checked.info.clone(),
        };
        write_file_atomically(
            &binding.certificate_file(),
            checked.fullchain_pem.as_bytes(),
            0o600,
        )?;
        write_file_atomically(&binding.key_file(), checked.key_pem.as_bytes(), 0o600)?;

        let key = id.clone();
        let redirect = upload.redirect_http;
        let applied = self
            .transact(now, move |state| {
                let record = state
                    .vhosts
                    .get_mut(&key)
                    .ok_or_else(|| WebError::NotFound(key.to_string()))?;
                record.tls = Some(binding);
                if let Some(redirect) = redirect {
                    record.spec.redirects.https = redirect;
                }
                Ok(Some(key))
            })
            .await;
        match applied {
            Ok(_) => {
                self.remove_unused_certificates(&id, Some(&dir));
                Ok(())
            }
            Err(error) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(error)
            }
        }
    }

    /// Makes a new private key for the vhost, kept in its certificate directory (0600) and never
    /// sent anywhere, and answers a certificate signing request (DER) for every name of the vhost.
    /// A later request replaces the key; [`WebOps::deploy_issued_certificate`] uses the latest.
    pub fn request_certificate_key(&self, id: &str) -> Result<Vec<u8>, WebError> {
        let id = VhostId::parse(id)?;
        let state = self.live_state()?;
        let record = state
            .vhosts
            .get(&id)
            .ok_or_else(|| WebError::NotFound(id.to_string()))?;
        let names: Vec<String> = record
            .spec
            .validate(&self.layout.web_root)?
            .all_names()
            .iter()
            .map(|name| name.as_str().to_string())
            .collect();
        let key = rcgen::KeyPair::generate()
            .map_err(|error| WebError::State(format!("making a key failed: {error}")))?;
        let csr = rcgen::CertificateParams::new(names)
            .and_then(|mut params| {
                params.distinguished_name = rcgen::DistinguishedName::new();
                params.serialize_request(&key)
            })
            .map_err(|error| {
                WebError::State(format!("making a signing request failed: {error}"))
            })?;
        let dir = self.vhost_tls_dir(&id);
        Self::create_private_dir(&dir)?;
        write_file_atomically(
            &dir.join(PENDING_KEY_FILE),
            key.serialize_pem().as_bytes(),
            0o600,
        )?;
        Ok(csr.der().to_vec())
    }

    /// Checks and deploys an issued certificate (leaf then chain, PEM) with the key of the latest
    /// [`WebOps::request_certificate_key`]; the key file is removed once the certificate serves.
    pub async fn deploy_issued_certificate(
        &self,
        id: &str,
        certificate_chain: String,
        redirect_http: Option<bool>,
        source: CertificateSource,
    ) -> Result<CertificateStatus, WebError> {
        let vhost = VhostId::parse(id)?;
        let key_file = self.vhost_tls_dir(&vhost).join(PENDING_KEY_FILE);
        let key = match std::fs::read_to_string(&key_file) {
            Ok(key) => key,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(WebError::Conflict(format!(
                    "vhost {vhost} has no key waiting for a certificate; request one first"
                )));
            }
            Err(source) => {
                return Err(WebError::Io {
                    context: "reading the waiting key".into(),
                    source,
                });
            }
        };
        let upload = CertificateUpload {
            certificate: certificate_chain,
            private_key: protocol::Secret::new(key),
            chain: None,
            redirect_http,
        };
        let status = self.deploy_certificate(id, upload, source).await?;
        let _ = std::fs::remove_file(&key_file);
        Ok(status)
    }

    /// Removes every certificate directory of a vhost but the one in service.
    fn remove_unused_certificates(&self, id: &VhostId, in_service: Option<&Path>) {
        let Ok(entries) = std::fs::read_dir(self.vhost_tls_dir(id)) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() && Some(path.as_path()) != in_service {
                let _ = std::fs::remove_dir_all(&path);
            }
        }
    }

    /// Turns TLS off for a vhost and removes its certificate files.
    pub async fn remove_certificate(&self, id: &str) -> Result<(), WebError> {
        let id = VhostId::parse(id)?;
        let key = id.clone();
        self.transact(OffsetDateTime::now_utc(), move |state| {
            let record = state
                .vhosts
                .get_mut(&key)
                .ok_or_else(|| WebError::NotFound(key.to_string()))?;
            record.tls = None;
            Ok(Some(key))
        })
        .await?;
        remove_dir_if_present(&self.vhost_tls_dir(&id))
    }

    /// The certificate in service, the redirect, and the latest attempt.
    pub fn certificate_status(&self, id: &str) -> Result<CertificateStatus, WebError> {
        let id = VhostId::parse(id)?;
        let state = self.live_state()?;
        let record = state
            .vhosts
            .get(&id)
            .ok_or_else(|| WebError::NotFound(id.to_string()))?;
        let attempt_file = self.vhost_tls_dir(&id).join(ATTEMPT_FILE);
        let last_attempt = std::fs::read(&attempt_file)
            .ok()
            .and_then(|text| serde_json::from_slice(&text).ok());
        Ok(CertificateStatus {
            certificate: record.tls.as_ref().map(|tls| tls.info.clone()),
            redirect_http: record.tls.is_some() && record.spec.redirects.https,
            last_attempt,
        })
    }

    fn challenge_file(&self, id: &VhostId, token: &str) -> PathBuf {
        challenge_root(&self.layout, id)
            .join(CHALLENGE_PREFIX.trim_matches('/'))
            .join(token)
    }

    /// Makes nginx answer `/.well-known/acme-challenge/<token>` for the vhost with the key
    /// authorization (no reload needed: the location is always there).
    pub fn put_challenge(
        &self,
        id: &str,
        token: &str,
        key_authorization: &str,
    ) -> Result<(), WebError> {
        let id = VhostId::parse(id)?;
        check_challenge(token, key_authorization)?;
        if !self.live_state()?.vhosts.contains_key(&id) {
            return Err(WebError::NotFound(id.to_string()));
        }
        let file = self.challenge_file(&id, token);
        if let Some(dir) = file.parent() {
            io_context(std::fs::create_dir_all(dir), || {
                format!("creating {}", dir.display())
            })?;
        }
        write_file_atomically(&file, key_authorization.as_bytes(), 0o644)
    }

    /// Stops answering a challenge token.
    pub fn remove_challenge(&self, id: &str, token: &str) -> Result<(), WebError> {
        let id = VhostId::parse(id)?;
        check_challenge(token, &format!("{token}.x"))?;
        match std::fs::remove_file(self.challenge_file(&id, token)) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(WebError::Io {
                context: "removing a challenge answer".into(),
                source,
            }),
        }
    }
}

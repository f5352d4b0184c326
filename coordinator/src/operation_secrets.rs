//! The secrets inside agent operations (database passwords, uploaded private keys), and the
//! task input of an operation with those secrets held apart (see `tasks::secrets`).

use protocol::{Operation, Secret};
use serde_json::{Value, json};

use crate::tasks::NewTask;
use crate::tasks::secrets::PLACEHOLDER;

/// The secrets an operation carries.
///
/// Every operation with a `protocol::Secret` field must be named here; the tests below build
/// each one and check that its secret stays out of the plain input.
pub fn secrets_of(operation: &Operation) -> Vec<&Secret> {
    match operation {
        Operation::DatabaseCreate { password, .. }
        | Operation::DatabaseChangePassword { password, .. } => vec![password],
        Operation::CertificateDeploy { upload, .. } => vec![&upload.private_key],
        _ => Vec::new(),
    }
}

/// `value` with every string equal to one of `secrets` replaced by the placeholder.
fn redact(value: Value, secrets: &[&str]) -> Value {
    match value {
        Value::String(text) if secrets.contains(&text.as_str()) => PLACEHOLDER.into(),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|item| redact(item, secrets))
                .collect(),
        ),
        Value::Object(fields) => Value::Object(
            fields
                .into_iter()
                .map(|(name, field)| (name, redact(field, secrets)))
                .collect(),
        ),
        other => other,
    }
}

/// `task` with `operation` as its input: the plain input has each secret replaced by the
/// placeholder, and an operation that carries secrets is held whole apart from it.
pub fn with_operation(task: NewTask, operation: &Operation) -> NewTask {
    let whole = json!({ "operation": operation });
    let secrets = secrets_of(operation);
    if secrets.is_empty() {
        return task.input(whole);
    }
    let exposed: Vec<&str> = secrets.iter().map(|secret| secret.expose()).collect();
    task.input(redact(whole.clone(), &exposed))
        .secret_input(whole)
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::DatabaseEngine;
    use protocol::web::certificate::{CertificateSource, CertificateUpload};
    use protocol::web::vhost::VhostId;

    fn operations(secret: &str) -> Vec<Operation> {
        vec![
            Operation::DatabaseCreate {
                engine: DatabaseEngine::MariaDb,
                name: "shop".into(),
                user: "shop".into(),
                password: Secret::new(secret),
            },
            Operation::DatabaseChangePassword {
                engine: DatabaseEngine::PostgreSql,
                user: "shop".into(),
                password: Secret::new(secret),
            },
            Operation::CertificateDeploy {
                vhost: VhostId::parse("shop").unwrap(),
                upload: CertificateUpload {
                    certificate: "-----BEGIN CERTIFICATE-----".into(),
                    private_key: Secret::new(secret),
                    chain: None,
                    redirect_http: None,
                },
                source: CertificateSource::Upload,
            },
        ]
    }

    #[test]
    fn an_operations_secret_is_held_apart_from_its_plain_input() {
        let secret = "correct horse battery staple";
        for operation in operations(secret) {
            let task = with_operation(NewTask::new("database.create", "user"), &operation);
            let plain = task.input.to_string();
            assert!(!plain.contains(secret), "{plain}");
            assert!(plain.contains(PLACEHOLDER), "{plain}");
            assert!(!format!("{task:?}").contains(secret));
            let whole = task.secret_input.expect("held apart").into_inner();
            let back: Operation = serde_json::from_value(whole["operation"].clone()).unwrap();
            assert_eq!(back, operation);
        }
    }

    #[test]
    fn an_operation_without_secrets_has_only_its_plain_input() {
        let operation = Operation::DatabaseDrop {
            engine: DatabaseEngine::MariaDb,
            name: "shop".into(),
        };
        let task = with_operation(NewTask::new("database.drop", "user"), &operation);
        assert_eq!(task.input, json!({ "operation": operation }));
        assert!(task.secret_input.is_none());
    }
}

//! The clients' settings from a topology's `connections`: the one place where passwords are
//! read from their environment variables or files and handed to a client (docs/SECURITY.md).

use std::time::Duration;

use sluice_connectors::kafka::{ClientOptions, KafkaSecurity, SaslCredentials};
use sluice_schemas::client::{RegistryAuth, RegistryClient};
use sluice_topology::{BrokerSecurity, Connections, RegistryConnection, SecretSource};

/// Why a connection's settings could not be turned into a client: a password source that
/// does not give one, or a registry client that cannot be built. The user's to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("password of {what}: {reason}")]
    Secret { what: String, reason: String },
    #[error("{0}")]
    Registry(#[from] sluice_schemas::client::ClientError),
}

fn read(
    source: Option<SecretSource>,
    what: impl Fn() -> String,
) -> Result<String, ConnectionError> {
    let source = source.ok_or_else(|| ConnectionError::Secret {
        what: what(),
        reason: "no `password_env` or `password_file` (run `sluice validate`)".into(),
    })?;
    source
        .read()
        .map(|s| s.expose().to_string())
        .map_err(|reason| ConnectionError::Secret {
            what: what(),
            reason,
        })
}

/// The broker's TLS and SASL settings with the password read.
pub fn kafka_security(brokers: &str, s: &BrokerSecurity) -> Result<KafkaSecurity, ConnectionError> {
    let sasl = match &s.sasl {
        None => None,
        Some(sasl) => Some(SaslCredentials {
            mechanism: sasl.mechanism.as_str().to_string(),
            username: sasl.username.clone(),
            password: read(sasl.password_source(), || {
                format!(
                    "SASL user `{}` at broker {brokers} (connections.security.sasl)",
                    sasl.username
                )
            })?,
        }),
    };
    Ok(KafkaSecurity {
        protocol: s.protocol.as_str().to_string(),
        ca: s.ca.clone(),
        sasl,
    })
}

/// Kafka client options for `connections`: the brokers with TLS and SASL.
pub fn client_options(c: &Connections) -> Result<ClientOptions, ConnectionError> {
    Ok(ClientOptions::secured(
        &c.brokers,
        kafka_security(&c.brokers, &c.security)?,
    ))
}

/// A schema registry client for `connections.registry`: its CA and basic auth.
pub fn registry_client(r: &RegistryConnection) -> Result<RegistryClient, ConnectionError> {
    let basic = match &r.basic_auth {
        None => None,
        Some(b) => Some((
            b.username.clone(),
            read(b.password_source(), || {
                format!(
                    "registry user `{}` at {} (connections.registry.basic_auth)",
                    b.username, r.url
                )
            })?,
        )),
    };
    let auth = RegistryAuth {
        ca: r.tls.as_ref().and_then(|t| t.ca.clone()),
        basic,
    };
    Ok(RegistryClient::with_auth(&r.url, auth)?)
}

/// How long the start-up connection check waits for the broker to answer.
pub const CONNECT_CHECK_TIMEOUT: Duration = Duration::from_secs(20);

/// The client of `connections.fluvio`, when the topology has topics there.
pub async fn fluvio_client(
    c: &Connections,
) -> Result<
    Option<std::sync::Arc<sluice_connectors::fluvio::FluvioClient>>,
    sluice_connectors::fluvio::FluvioError,
> {
    let Some(f) = &c.fluvio else {
        return Ok(None);
    };
    let client =
        sluice_connectors::fluvio::FluvioClient::connect(&f.endpoint, CONNECT_CHECK_TIMEOUT)
            .await?;
    Ok(Some(std::sync::Arc::new(client)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_password_names_the_user_and_the_variable() {
        let text = r#"apiVersion: sluice/v1
kind: Topology
metadata: { name: t }
connections:
  brokers: b:9093
  security:
    protocol: sasl_ssl
    sasl: { mechanism: SCRAM-SHA-256, username: alice, password_env: SLUICE_TEST_UNSET_PASSWORD_VAR }
  registry: http://127.0.0.1:1
topics: {}
stages: {}
"#;
        let loaded =
            sluice_topology::load_str(std::path::Path::new("t.yaml"), text, &|_| None).unwrap();
        let err = client_options(&loaded.topology.connections).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("alice") && msg.contains("b:9093"), "{msg}");
        assert!(msg.contains("SLUICE_TEST_UNSET_PASSWORD_VAR"), "{msg}");
    }
}

//! TLS and credentials in `connections`: the broker's `security`, the registry's `tls` and
//! `basic_auth`, the S3 store's `ca`. A password is never part of the file: it is named by
//! an environment variable (`password_env`) or a file (`password_file`) and read when a
//! client is built, so neither the parsed topology nor its `Debug` output holds it.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer};

/// How clients reach the Kafka-compatible broker (`connections.security`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerSecurity {
    /// librdkafka's `security.protocol`. Default `plaintext`.
    #[serde(default)]
    pub protocol: SecurityProtocol,
    /// PEM file of the certificate authorities that sign the broker's certificate
    /// (`ssl.ca.location`); relative to the topology file. Default: the system's roots.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// SASL mechanism and credentials; required by the `sasl_*` protocols.
    #[serde(default)]
    pub sasl: Option<SaslSpec>,
}

/// librdkafka's `security.protocol` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    /// No TLS, no authentication (the default, as librdkafka's).
    #[default]
    Plaintext,
    /// TLS, no SASL.
    Ssl,
    /// SASL without TLS: the password (PLAIN) or its proof (SCRAM) in clear.
    SaslPlaintext,
    /// SASL over TLS.
    SaslSsl,
}

impl SecurityProtocol {
    /// The value of librdkafka's `security.protocol`.
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }

    pub fn uses_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    pub fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// SASL mechanisms sluice configures (librdkafka's `sasl.mechanisms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// `connections.security.sasl`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaslSpec {
    pub mechanism: SaslMechanism,
    pub username: String,
    /// Environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File holding the password (one trailing newline ignored); relative to the topology file.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Never accepted (validation says what to write instead); its value is not kept.
    #[serde(default)]
    pub password: Option<IgnoredAny>,
}

impl SaslSpec {
    /// Where the password comes from, once validation passed.
    pub fn password_source(&self) -> Option<SecretSource> {
        source(&self.password_env, &self.password_file)
    }
}

/// `connections.registry.basic_auth`: HTTP basic authentication to the schema registry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthSpec {
    pub username: String,
    /// Environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File holding the password (one trailing newline ignored); relative to the topology file.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Never accepted (validation says what to write instead); its value is not kept.
    #[serde(default)]
    pub password: Option<IgnoredAny>,
}

impl BasicAuthSpec {
    /// Where the password comes from, once validation passed.
    pub fn password_source(&self) -> Option<SecretSource> {
        source(&self.password_env, &self.password_file)
    }
}

fn source(env: &Option<String>, file: &Option<PathBuf>) -> Option<SecretSource> {
    match (env, file) {
        (Some(v), None) => Some(SecretSource::Env(v.clone())),
        (None, Some(f)) => Some(SecretSource::File(f.clone())),
        _ => None,
    }
}

/// `tls:` of an HTTP connection.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSpec {
    /// PEM file of extra certificate authorities to trust; relative to the topology file.
    /// Default: the system's roots only.
    #[serde(default)]
    pub ca: Option<PathBuf>,
}

/// `connections.registry`: a URL, or a mapping with the URL, TLS and credentials.
#[derive(Debug, Clone)]
pub struct RegistryConnection {
    /// Base URL, `http://` or `https://`.
    pub url: String,
    pub tls: Option<TlsSpec>,
    pub basic_auth: Option<BasicAuthSpec>,
}

impl RegistryConnection {
    pub fn plain(url: impl Into<String>) -> Self {
        RegistryConnection {
            url: url.into(),
            tls: None,
            basic_auth: None,
        }
    }
}

impl fmt::Display for RegistryConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryMap {
    url: String,
    #[serde(default)]
    tls: Option<TlsSpec>,
    #[serde(default)]
    basic_auth: Option<BasicAuthSpec>,
}

impl<'de> Deserialize<'de> for RegistryConnection {
    /// A plain string keeps the files written before the mapping existed valid; the mapping
    /// is parsed as a struct so unknown keys are still reported by name.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RegistryConnection;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a registry URL or a mapping with `url`, `tls`, `basic_auth`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RegistryConnection::plain(v))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                let m =
                    RegistryMap::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(RegistryConnection {
                    url: m.url,
                    tls: m.tls,
                    basic_auth: m.basic_auth,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// Where a secret is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    Env(String),
    File(PathBuf),
}

impl SecretSource {
    /// Reads the secret: the variable's value, or the file's text without its trailing
    /// newline (a relative path was resolved against the topology file's folder when it was
    /// loaded). Errors name the variable or file, never the value.
    pub fn read(&self) -> Result<Secret, String> {
        match self {
            SecretSource::Env(name) => match std::env::var(name) {
                Ok(v) if !v.is_empty() => Ok(Secret(v)),
                _ => Err(format!("environment variable {name} is not set or empty")),
            },
            SecretSource::File(p) => {
                let path = p;
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read password file {}: {e}", path.display()))?;
                let text = text.strip_suffix('\n').unwrap_or(&text);
                let text = text.strip_suffix('\r').unwrap_or(text);
                if text.is_empty() {
                    return Err(format!("password file {} is empty", path.display()));
                }
                Ok(Secret(text.to_string()))
            }
        }
    }
}

/// A password read from its source; `Debug` and `Display` print `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The secret itself, for the one call that hands it to a client.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Makes the relative paths under `connections` (CA and password files) relative to the
/// topology file's folder, as every other path in the file is, so clients built far from
/// the loader find them.
pub(crate) fn resolve_paths(c: &mut crate::model::Connections, topology: &Path) {
    let fix = |p: &mut Option<PathBuf>| {
        if let Some(p) = p {
            *p = crate::load::resolve_relative(topology, p);
        }
    };
    fix(&mut c.security.ca);
    if let Some(sasl) = &mut c.security.sasl {
        fix(&mut sasl.password_file);
    }
    if let Some(tls) = &mut c.registry.tls {
        fix(&mut tls.ca);
    }
    if let Some(b) = &mut c.registry.basic_auth {
        fix(&mut b.password_file);
    }
    if let Some(s3) = &mut c.s3 {
        fix(&mut s3.ca);
    }
}

/// Checks of `connections` that need no network: protocol and SASL agree, each password has
/// exactly one source and none is written inline, CA files exist.
pub(crate) fn check(loaded: &crate::load::Loaded, push: &mut impl FnMut(String, String, String)) {
    let c = &loaded.topology.connections;
    let s = &c.security;
    match (&s.sasl, s.protocol.uses_sasl()) {
        (None, true) => push(
            "connections.security.protocol".into(),
            format!("protocol `{}` needs `sasl`", s.protocol.as_str()),
            "add `sasl: {mechanism: SCRAM-SHA-512, username: NAME, password_env: VAR}`".into(),
        ),
        (Some(_), false) => push(
            "connections.security.sasl".into(),
            format!(
                "`sasl` is set but protocol `{}` does not use it",
                s.protocol.as_str()
            ),
            "set `protocol: sasl_ssl` (or `sasl_plaintext` on a trusted network)".into(),
        ),
        _ => {}
    }
    if s.ca.is_some() && !s.protocol.uses_tls() {
        push(
            "connections.security.ca".into(),
            format!(
                "`ca` is set but protocol `{}` does not use TLS",
                s.protocol.as_str()
            ),
            "set `protocol: ssl` or `sasl_ssl`, or remove `ca`".into(),
        );
    }
    if let Some(ca) = &s.ca {
        check_ca(loaded, "connections.security.ca", ca, push);
    }
    if let Some(sasl) = &s.sasl {
        check_password(
            "connections.security.sasl",
            sasl.password.is_some(),
            &sasl.password_env,
            &sasl.password_file,
            push,
        );
    }
    let r = &c.registry;
    if let Some(tls) = &r.tls {
        if !r.url.starts_with("https://") {
            push(
                "connections.registry.url".into(),
                format!("`tls` is set but the registry URL `{}` is not https", r.url),
                "write the URL as `https://HOST:PORT`".into(),
            );
        }
        if let Some(ca) = &tls.ca {
            check_ca(loaded, "connections.registry.tls.ca", ca, push);
        }
    }
    if let Some(b) = &r.basic_auth {
        check_password(
            "connections.registry.basic_auth",
            b.password.is_some(),
            &b.password_env,
            &b.password_file,
            push,
        );
    }
    if let Some(ca) = c.s3.as_ref().and_then(|s3| s3.ca.as_ref()) {
        check_ca(loaded, "connections.s3.ca", ca, push);
    }
}

fn check_password(
    base: &str,
    inline: bool,
    env: &Option<String>,
    file: &Option<PathBuf>,
    push: &mut impl FnMut(String, String, String),
) {
    if inline {
        push(
            format!("{base}.password"),
            "a password written in the topology file is not accepted".into(),
            "remove it and name where it is kept: `password_env: VAR` (an environment variable) or `password_file: PATH`".into(),
        );
        return;
    }
    match (env, file) {
        (Some(_), Some(_)) => push(
            format!("{base}.password_file"),
            "both `password_env` and `password_file` are set".into(),
            "keep one of them".into(),
        ),
        (None, None) => push(
            base.to_string(),
            "no password source".into(),
            "add `password_env: VAR` or `password_file: PATH`".into(),
        ),
        _ => {}
    }
}

fn check_ca(
    loaded: &crate::load::Loaded,
    key: &str,
    ca: &Path,
    push: &mut impl FnMut(String, String, String),
) {
    let resolved = loaded.resolve(ca);
    if !resolved.is_file() {
        push(
            key.to_string(),
            format!("CA file {} does not exist", resolved.display()),
            "give a PEM file of the certificate authorities; paths are relative to the topology file's folder".into(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_print_redacted() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "<redacted> <redacted>");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn password_file_loses_one_trailing_newline() {
        let dir = std::env::temp_dir().join(format!("sluice-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("pw"), "s3cret\n").unwrap();
        let got = SecretSource::File(dir.join("pw")).read().unwrap();
        assert_eq!(got.expose(), "s3cret");
        let err = SecretSource::Env("SLUICE_TEST_SURELY_UNSET_VAR".into())
            .read()
            .unwrap_err();
        assert!(err.contains("SLUICE_TEST_SURELY_UNSET_VAR"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

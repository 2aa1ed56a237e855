//! A TLS + SASL broker and an HTTPS registry with basic auth, started by the test that needs
//! them and stopped when dropped; certificates made by the test with the `openssl` CLI.
//!
//! The broker is a second Nisshi on a random 127.0.0.1 port, on an SQLite file in a temporary
//! folder: Nisshi's memory engine cannot hold SCRAM credentials (it refuses
//! `--authentication`), and with `--authentication` only SASL requests are served before a
//! client has logged in, so the users are created first on the same storage with
//! authentication off, then the broker is started again with TLS and SASL.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{eventually, free_port, Sluice};

/// Users created on the secure broker: (name, password, nisshi mechanism, SASL mechanism).
pub const USERS: [(&str, &str, &str, &str); 2] = [
    ("alice", "alice-pw-256", "scram256", "SCRAM-SHA-256"),
    ("bob", "bob-pw-512", "scram512", "SCRAM-SHA-512"),
];

/// A CA, a server certificate it signed for 127.0.0.1 and localhost, and an unrelated CA.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub other_ca: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl (Debian package openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for (key, crt, cn) in [
            ("ca.key", "ca.pem", "sluice test CA"),
            ("other-ca.key", "other-ca.pem", "some other CA"),
        ] {
            openssl(
                d,
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-nodes",
                    "-keyout",
                    key,
                    "-out",
                    crt,
                    "-days",
                    "2",
                    "-subj",
                    &format!("/CN={cn}"),
                ],
            );
        }
        openssl(
            d,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
        );
        std::fs::write(
            d.join("san.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                "2",
                "-extfile",
                "san.ext",
            ],
        );
        Pki {
            ca: d.join("ca.pem"),
            cert: d.join("server.pem"),
            key: d.join("server.key"),
            other_ca: d.join("other-ca.pem"),
            dir,
        }
    }
}

fn nisshi() -> PathBuf {
    if let Some(p) = std::env::var_os("SLUICE_NISSHI_BIN") {
        return p.into();
    }
    let home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cargo"));
    let installed = home.join("bin/nisshi");
    assert!(
        installed.is_file(),
        "nisshi not found at {} (run scripts/setup, or set SLUICE_NISSHI_BIN)",
        installed.display()
    );
    installed
}

fn wait_listening(port: u16, child: &mut Child, log: &Path) {
    eventually(
        "the secure broker to listen",
        300,
        Duration::from_millis(100),
        || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "nisshi exited ({status}): {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            TcpStream::connect(("127.0.0.1", port)).ok()
        },
    );
}

/// Nisshi with TLS and SCRAM on 127.0.0.1:port (SQLite storage in its own folder).
pub struct SecureBroker {
    child: Child,
    pub port: u16,
    pub pki: Pki,
    pub dir: tempfile::TempDir,
}

impl SecureBroker {
    pub fn start() -> SecureBroker {
        let pki = Pki::new();
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let log = dir.path().join("nisshi.log");
        let spawn = |extra: &[&str]| -> Child {
            let out = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .unwrap();
            Command::new(nisshi())
                .arg("broker")
                .args(["--cluster-id", "sluice-secure-test"])
                .args(["--listener-url", &url, "--advertised-listener-url", &url])
                .args(["--storage-engine", "sqlite://broker.db"])
                .args(["--group-initial-rebalance-delay", "200ms"])
                .args(extra)
                .env("RUST_LOG", "warn")
                .current_dir(dir.path())
                .stdout(Stdio::from(out.try_clone().unwrap()))
                .stderr(Stdio::from(out))
                .spawn()
                .expect("start nisshi")
        };
        // 1. No authentication yet: create the SCRAM users.
        let mut setup = spawn(&[]);
        wait_listening(port, &mut setup, &log);
        for (user, password, mechanism, _) in USERS {
            let out = Command::new(nisshi())
                .args(["user", "create", "--broker", &url, "--mechanism", mechanism])
                .args([user, password])
                .output()
                .expect("run nisshi user create");
            assert!(
                out.status.success(),
                "nisshi user create {user}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        terminate(&mut setup);
        // 2. The same storage with TLS and SASL required.
        let (cert, key) = (pki.cert.to_str().unwrap(), pki.key.to_str().unwrap());
        let mut child = spawn(&["--authentication", "--cert", cert, "--key", key]);
        wait_listening(port, &mut child, &log);
        SecureBroker {
            child,
            port,
            pki,
            dir,
        }
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nisshi.log")).unwrap_or_default()
    }
}

fn terminate(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

impl Drop for SecureBroker {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

/// `sluice registry` over HTTPS with basic auth, its schemas in a topic of its own on the
/// shared (plaintext) stack broker.
pub struct SecureRegistry {
    _run: Sluice,
    pub url: String,
    pub password_file: PathBuf,
}

pub const REGISTRY_USER: &str = "sluice-reader";
pub const REGISTRY_PASSWORD: &str = "registry-pw";

impl SecureRegistry {
    pub fn start(pki: &Pki, stack_brokers: &str, topic: &str) -> SecureRegistry {
        let d = pki.dir.path();
        let users = d.join("registry-users");
        std::fs::write(&users, format!("{REGISTRY_USER}:{REGISTRY_PASSWORD}\n")).unwrap();
        let password_file = d.join("registry-password");
        std::fs::write(&password_file, format!("{REGISTRY_PASSWORD}\n")).unwrap();
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let run = Sluice::spawn(
            &[
                "registry",
                "--listen",
                &listen,
                "--brokers",
                stack_brokers,
                "--topic",
                topic,
                "--cert",
                pki.cert.to_str().unwrap(),
                "--key",
                pki.key.to_str().unwrap(),
                "--basic-auth-file",
                users.to_str().unwrap(),
            ],
            &d.join("registry.log"),
        );
        // Ready once it listens: it binds only after reading its topic to the end.
        eventually(
            "the HTTPS registry to listen",
            600,
            Duration::from_millis(100),
            || TcpStream::connect(("127.0.0.1", port)).ok(),
        );
        SecureRegistry {
            _run: run,
            url: format!("https://127.0.0.1:{port}"),
            password_file,
        }
    }
}

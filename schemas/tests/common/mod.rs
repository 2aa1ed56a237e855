//! Shared helpers for tests that need the broker.

#![allow(dead_code, unreachable_pub)]

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sluice_schemas::registry::{Registry, RegistryConfig};

/// Broker addresses from the environment; a missing or unreachable broker fails the test.
pub fn brokers() -> String {
    let brokers = std::env::var("SLUICE_BROKERS")
        .unwrap_or_else(|_| panic!("SLUICE_BROKERS is not set: start the stack: scripts/stack up"));
    let first = brokers.split(',').next().unwrap_or_default().to_string();
    let reachable = first
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| TcpStream::connect_timeout(&a, std::time::Duration::from_secs(3)).is_ok());
    assert!(
        reachable,
        "broker {first} is unreachable: start the stack: scripts/stack up"
    );
    brokers
}

/// A topic name no other test run uses.
pub fn random_topic(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Starts a registry on 127.0.0.1 on `topic` and returns its base URL.
pub async fn start_registry(topic: &str) -> String {
    let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut cfg = RegistryConfig::new(listen, brokers());
    cfg.topic = topic.to_string();
    let (addr, serve) = Registry::bind(cfg).await.expect("registry starts");
    tokio::spawn(async move {
        if let Err(e) = serve.await {
            panic!("registry stopped: {e}");
        }
    });
    format!("http://{addr}")
}

//! Test helpers: addresses of the shared stack from the environment, private service
//! instances for tests that stop and restart them, and small clients to read data back.
#![allow(dead_code, unreachable_pub)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

const START_STACK: &str = "start the stack: scripts/stack up (and export what it prints)";

/// A name no other test run uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{:016x}", rand::random::<u64>())
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn env_or_fail(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!("{name} is not set: {START_STACK}"),
    }
}

/// Polls `check` up to `tries` times, 100 ms apart; true as soon as it holds.
pub async fn poll<F, Fut>(tries: usize, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..tries {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// The shared TSDB: (questdb-rs conf string, query URL). `SLUICE_ILP_ADDR` may be a conf
/// string (`http::addr=...;`) or a bare `host:port` of an ILP/TCP listener.
pub async fn shared_tsdb() -> (String, String) {
    let ilp = env_or_fail("SLUICE_ILP_ADDR");
    let conf = if ilp.contains("::") {
        ilp
    } else {
        format!("tcp::addr={ilp};")
    };
    let url = env_or_fail("SLUICE_TSDB_QUERY_URL")
        .trim_end_matches('/')
        .to_owned();
    let up = reqwest::get(format!("{url}/health"))
        .await
        .map(|r| r.status().is_success())
        .unwrap_or(false);
    assert!(
        up,
        "the TSDB at {url} does not answer /health: {START_STACK}"
    );
    (conf, url)
}

/// The shared S3 server as an archive config with a fresh prefix.
pub async fn shared_s3() -> sluice_connectors::s3::S3ArchiveConfig {
    let endpoint = env_or_fail("SLUICE_S3_ENDPOINT");
    let mut c = sluice_connectors::s3::S3ArchiveConfig::new(env_or_fail("SLUICE_S3_BUCKET"));
    c.allow_http = endpoint.starts_with("http://");
    c.endpoint = Some(endpoint.clone());
    c.region = std::env::var("SLUICE_S3_REGION").unwrap_or_else(|_| "us-east-1".into());
    c.access_key_id = Some(env_or_fail("SLUICE_S3_ACCESS_KEY_ID"));
    c.secret_access_key = Some(env_or_fail("SLUICE_S3_SECRET_ACCESS_KEY"));
    c.prefix = unique("test");
    let up = reqwest::get(&endpoint).await.is_ok();
    assert!(
        up,
        "the S3 server at {endpoint} does not answer: {START_STACK}"
    );
    c
}

/// Reads back from VictoriaMetrics.
pub struct Tsdb {
    pub url: String,
}

/// One exported series: `table_field` name, labels, samples.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub labels: Value,
    pub values: Vec<f64>,
    pub timestamps: Vec<i64>,
}

impl Tsdb {
    /// Makes everything received so far searchable (a real VictoriaMetrics endpoint).
    pub async fn force_flush(&self) {
        let r = reqwest::get(format!("{}/internal/force_flush", self.url))
            .await
            .expect("force_flush");
        assert!(
            r.status().is_success(),
            "force_flush answered {}",
            r.status()
        );
    }

    /// `/api/v1/export` of every series whose name starts with `table_`.
    pub async fn export(&self, table: &str) -> Vec<Series> {
        self.force_flush().await;
        let selector = percent_encode(&format!("{{__name__=~\"{table}_.*\"}}"));
        let body = reqwest::get(format!("{}/api/v1/export?match%5B%5D={selector}", self.url))
            .await
            .expect("export")
            .text()
            .await
            .expect("export body");
        body.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| {
                let v: Value = serde_json::from_str(line).expect("export line is JSON");
                let mut labels = v["metric"].clone();
                let name = labels["__name__"].as_str().unwrap().to_owned();
                labels.as_object_mut().unwrap().remove("__name__");
                Series {
                    name,
                    labels,
                    values: v["values"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_f64().unwrap())
                        .collect(),
                    timestamps: v["timestamps"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_i64().unwrap())
                        .collect(),
                }
            })
            .collect()
    }
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A process this test started and owns; killed on drop.
struct Owned(Option<Child>);

impl Owned {
    /// SIGTERM and wait: the process shuts down the way an operator stops it.
    fn terminate(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
    /// SIGKILL and wait.
    fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A private VictoriaMetrics on random ports with its own data dir, for outage tests.
pub struct PrivateVm {
    pub http_port: u16,
    pub influx_port: u16,
    pub dir: tempfile::TempDir,
    proc: Owned,
}

impl PrivateVm {
    pub async fn start() -> Self {
        let mut vm = Self {
            http_port: free_port(),
            influx_port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            proc: Owned(None),
        };
        vm.launch().await;
        vm
    }

    async fn launch(&mut self) {
        let child = Command::new("victoria-metrics")
            .arg(format!("-storageDataPath={}", self.dir.path().display()))
            .arg("-retentionPeriod=100y")
            .arg(format!("-httpListenAddr=127.0.0.1:{}", self.http_port))
            .arg(format!("-influxListenAddr=127.0.0.1:{}", self.influx_port))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("victoria-metrics is not installed: apt-get install victoria-metrics");
        self.proc = Owned(Some(child));
        let url = self.query_url();
        let up = poll(300, || {
            let url = url.clone();
            async move {
                reqwest::get(format!("{url}/health"))
                    .await
                    .map(|r| r.status().is_success())
                    .unwrap_or(false)
            }
        })
        .await;
        assert!(up, "private victoria-metrics did not come up on {url}");
    }

    /// ILP over HTTP, so a flush returns only once the server took the rows. questdb-rs's
    /// own retry is off: the sink's backoff is what is under test.
    pub fn ilp_http_conf(&self) -> String {
        format!(
            "http::addr=127.0.0.1:{};protocol_version=1;retry_timeout=0;request_timeout=2000;",
            self.http_port
        )
    }

    pub fn query_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    pub fn stop(&mut self) {
        self.proc.terminate();
    }

    /// Starts again on the same ports and data dir.
    pub async fn restart(&mut self) {
        self.launch().await;
    }
}

/// A private moto S3 server on a random port. moto keeps objects in memory only, so a
/// restart starts empty (tests must check only what was written after the restart).
pub struct PrivateMoto {
    pub port: u16,
    pub bucket: String,
    proc: Owned,
}

impl PrivateMoto {
    pub async fn start() -> Self {
        let mut m = Self {
            port: free_port(),
            bucket: unique("bucket").replace('_', "-"),
            proc: Owned(None),
        };
        m.launch().await;
        m
    }

    async fn launch(&mut self) {
        let bin = std::env::var("MOTO_SERVER")
            .map(PathBuf::from)
            .unwrap_or_else(|_| "moto_server".into());
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server is not installed: pip install 'moto[server]'");
        self.proc = Owned(Some(child));
        let endpoint = self.endpoint();
        let up = poll(300, || {
            let endpoint = endpoint.clone();
            async move { reqwest::get(&endpoint).await.is_ok() }
        })
        .await;
        assert!(up, "private moto_server did not come up on {endpoint}");
        // moto accepts an unsigned bucket creation.
        let r = reqwest::Client::new()
            .put(format!("{endpoint}/{}", self.bucket))
            .send()
            .await
            .expect("create bucket");
        assert!(
            r.status().is_success(),
            "create bucket answered {}",
            r.status()
        );
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn config(&self) -> sluice_connectors::s3::S3ArchiveConfig {
        let mut c = sluice_connectors::s3::S3ArchiveConfig::new(self.bucket.clone());
        c.endpoint = Some(self.endpoint());
        c.allow_http = true;
        c.access_key_id = Some("test".into());
        c.secret_access_key = Some("test".into());
        c.prefix = "telemetry".into();
        c
    }

    pub fn kill(&mut self) {
        self.proc.kill();
    }

    pub async fn restart(&mut self) {
        self.launch().await;
    }
}

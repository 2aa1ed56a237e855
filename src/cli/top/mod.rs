//! `sluice top [FILE] [--url URL]...`: a live view of a running topology, like `vector
//! top`. It scrapes every instance's `/metrics` (the topology's `metrics.listen`, or the
//! URLs given), sums them per stage and redraws a table every `--interval`: records in and
//! out with rates, lag, commit time p50/p99, end-to-end latency p99, restore progress,
//! dead letters per second and failed commits. `--once` prints one table (rates over one
//! interval) as plain text, for scripts and tests.

mod scrape;
mod view;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use view::Snapshot;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The topology file: its stages give the rows, its `metrics.listen` the endpoint.
    pub file: Option<PathBuf>,
    /// A `/metrics` URL of one instance (`http://10.0.0.7:9464/metrics`, or just
    /// `10.0.0.7:9464`); repeat for every instance. Replaces the topology's address.
    #[arg(long = "url")]
    pub urls: Vec<String>,
    /// Time between two scrapes (`2s`, `500ms`).
    #[arg(long, default_value = "2s")]
    pub interval: humantime::Duration,
    /// Print one table, with rates over one interval, and exit.
    #[arg(long)]
    pub once: bool,
}

pub(crate) fn run(a: Args) -> anyhow::Result<ExitCode> {
    let (order, mut urls) = match &a.file {
        Some(f) => {
            let loaded = sluice_topology::load(f).map_err(|e| anyhow::anyhow!("{e}"))?;
            let t = loaded.topology;
            let order = t.stages.iter().map(|s| s.name.clone()).collect();
            (order, vec![metrics_url(t.metrics.listen)])
        }
        None => (Vec::new(), Vec::new()),
    };
    if !a.urls.is_empty() {
        urls = a.urls.iter().map(|u| normalise(u)).collect();
    }
    if urls.is_empty() {
        anyhow::bail!("nothing to watch: give the topology file (its `metrics.listen` is scraped) or `--url` for each instance");
    }
    let interval: Duration = a.interval.into();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = reqwest::Client::builder()
        .timeout(interval.clamp(Duration::from_millis(500), Duration::from_secs(5)))
        .build()?;
    let scrape = || rt.block_on(snapshot(&client, &urls));
    let mut before = scrape();
    if a.once {
        std::thread::sleep(interval);
        let now = scrape();
        if now.up.is_empty() {
            eprint!("{}", header(&now, interval));
            return Ok(ExitCode::FAILURE);
        }
        print!(
            "{}{}",
            header(&now, interval),
            view::render(&order, Some(&before), &now)
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = std::io::stdout();
    let draw = |out: &mut std::io::Stdout, b: Option<&Snapshot>, n: &Snapshot| {
        // Home and clear, then the table: a redraw without a terminal library.
        let text = format!(
            "\x1b[H\x1b[2J{}{}\n(Ctrl-C to quit)\n",
            header(n, interval),
            view::render(&order, b, n)
        );
        out.write_all(text.as_bytes())
            .and_then(|_| out.flush())
            .context("writing to the terminal")
    };
    draw(&mut out, None, &before)?;
    loop {
        std::thread::sleep(interval);
        let now = scrape();
        draw(&mut out, Some(&before), &now)?;
        before = now;
    }
}

/// The line above the table: what was scraped, and what could not be.
fn header(s: &Snapshot, interval: Duration) -> String {
    let mut h = format!(
        "sluice top: {} instance(s) up, every {}\n",
        s.up.len(),
        humantime::format_duration(interval)
    );
    for (url, why) in &s.down {
        h.push_str(&format!("  down: {url}: {why}\n"));
    }
    h
}

/// Scrapes every endpoint at once and sums what answered.
async fn snapshot(client: &reqwest::Client, urls: &[String]) -> Snapshot {
    let results = futures::future::join_all(urls.iter().map(|u| fetch(client, u))).await;
    let mut snap = Snapshot {
        at: Instant::now(),
        stages: Default::default(),
        up: Vec::new(),
        down: Vec::new(),
    };
    for (url, r) in urls.iter().zip(results) {
        match r {
            Ok(text) => {
                for (stage, n) in scrape::by_stage(&scrape::parse(&text)) {
                    snap.stages.entry(stage).or_default().merge(&n);
                }
                snap.up.push(url.clone());
            }
            Err(e) => snap.down.push((url.clone(), e)),
        }
    }
    snap
}

async fn fetch(client: &reqwest::Client, url: &str) -> Result<String, String> {
    let resp = client.get(url).send().await.map_err(|e| {
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg = format!("{msg}: {s}");
            src = std::error::Error::source(s);
        }
        msg
    })?;
    if !resp.status().is_success() {
        return Err(format!("HTTP {}", resp.status()));
    }
    resp.text().await.map_err(|e| e.to_string())
}

/// The `/metrics` URL of a `metrics.listen` address; an unspecified IP means this machine.
fn metrics_url(listen: SocketAddr) -> String {
    let host = if listen.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        listen.ip().to_string()
    };
    match listen {
        SocketAddr::V6(_) if !listen.ip().is_unspecified() => {
            format!("http://[{host}]:{}/metrics", listen.port())
        }
        _ => format!("http://{host}:{}/metrics", listen.port()),
    }
}

/// `host:port` or a URL without a path becomes the full `/metrics` URL.
fn normalise(url: &str) -> String {
    let with_scheme = if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    };
    let after_scheme = with_scheme.split_once("://").map_or("", |(_, r)| r);
    if after_scheme.contains('/') {
        with_scheme
    } else {
        format!("{with_scheme}/metrics")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_full_metrics_urls() {
        assert_eq!(normalise("10.0.0.7:9464"), "http://10.0.0.7:9464/metrics");
        assert_eq!(
            normalise("http://h:1/metrics"),
            "http://h:1/metrics".to_string()
        );
        assert_eq!(normalise("http://h:1"), "http://h:1/metrics");
        assert_eq!(
            metrics_url("0.0.0.0:9464".parse().unwrap()),
            "http://127.0.0.1:9464/metrics"
        );
        assert_eq!(
            metrics_url("[::1]:9464".parse().unwrap()),
            "http://[::1]:9464/metrics"
        );
    }
}

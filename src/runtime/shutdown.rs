//! The process-wide shutdown request. A signal handler (`sluice run`) sets it; stages finish
//! their batch and commit, a restore in progress gives up (a restore interrupted anywhere is
//! safe: docs/EXACTLY_ONCE.md, "Crash point by crash point"), and a sink flush that is still
//! retrying `SINK_GRACE` after the request (its service is down) stops waiting.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// When the shutdown was requested, in ms since `base()`, plus one; 0 while none was.
static REQUESTED_AT: AtomicU64 = AtomicU64::new(0);

/// How long a sink flush may still take after a shutdown request: enough for a healthy
/// service to take the last batch, short of the process's `--shutdown-timeout` (30 s).
pub const SINK_GRACE: Duration = Duration::from_secs(10);

/// How often a wait checks for a shutdown request.
const CHECK_EVERY: Duration = Duration::from_millis(100);

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// Asks every stage of this process to stop.
pub fn request() {
    let now = base().elapsed().as_millis() as u64 + 1;
    let _ = REQUESTED_AT.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
}

/// True once a shutdown was requested.
pub fn requested() -> bool {
    REQUESTED_AT.load(Ordering::Relaxed) != 0
}

/// How long ago the shutdown was requested, if it was.
fn requested_for() -> Option<Duration> {
    match REQUESTED_AT.load(Ordering::Relaxed) {
        0 => None,
        at => Some(Duration::from_millis(
            (base().elapsed().as_millis() as u64 + 1).saturating_sub(at),
        )),
    }
}

/// Runs a sink's flush `fut` on `rt` to completion, unless a shutdown was requested more than
/// `SINK_GRACE` ago and it is still running (retrying a service that is down): then `None`,
/// and `fut` is dropped. The sink keeps its unflushed batch; nothing was committed for it.
pub fn block_on_unless_stopped<F: Future>(
    rt: &tokio::runtime::Handle,
    fut: F,
) -> Option<F::Output> {
    rt.block_on(async {
        tokio::select! {
            out = fut => Some(out),
            () = stopped_for(SINK_GRACE) => None,
        }
    })
}

/// Resolves once a shutdown was requested at least `grace` ago.
async fn stopped_for(grace: Duration) {
    while requested_for().is_none_or(|d| d < grace) {
        tokio::time::sleep(CHECK_EVERY).await;
    }
}

//! Detects that this process was paused (SIGSTOP, a frozen VM or container) for long enough
//! that the group may have expired its membership and given its partitions to another
//! instance. Such a zombie must not write anything from the batch it held: a watchdog thread
//! ticks every `TICK`; a stage checks, before it processes or commits, that no tick was late
//! by more than `SUSPECT_AFTER` since the stage last looked (docs/EXACTLY_ONCE.md, "Zombies").

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const TICK: Duration = Duration::from_millis(100);

/// A pause longer than this is treated as a possible loss of membership: a third of the
/// consumer's `session.timeout.ms` (30 s, connectors/src/kafka/client.rs), so the check
/// fires well before the group can have moved a partition.
pub(crate) const SUSPECT_AFTER: Duration = Duration::from_secs(10);

struct Watch {
    start: Instant,
    /// ms since `start` of the last tick.
    last_tick: AtomicU64,
    /// Pauses seen so far.
    pauses: AtomicU64,
    /// Length of the last pause seen, ms.
    last_pause: AtomicU64,
}

impl Watch {
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }
}

fn watch() -> &'static Watch {
    static WATCH: OnceLock<&'static Watch> = OnceLock::new();
    WATCH.get_or_init(|| {
        let w: &'static Watch = Box::leak(Box::new(Watch {
            start: Instant::now(),
            last_tick: AtomicU64::new(0),
            pauses: AtomicU64::new(0),
            last_pause: AtomicU64::new(0),
        }));
        let spawned = std::thread::Builder::new()
            .name("pause-watch".into())
            .spawn(move || loop {
                std::thread::sleep(TICK);
                let now = w.now_ms();
                let gap = now.saturating_sub(w.last_tick.load(Ordering::Relaxed));
                if gap > SUSPECT_AFTER.as_millis() as u64 {
                    w.last_pause.store(gap, Ordering::Relaxed);
                    w.pauses.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(paused_ms = gap, "This process was paused; stages drop their uncommitted work and rejoin their groups.");
                }
                w.last_tick.store(now, Ordering::Relaxed);
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "Cannot start the pause watchdog; pauses (SIGSTOP) go unnoticed.");
        }
        w
    })
}

/// What a stage remembers to ask later whether a pause happened since.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mark(u64);

/// Now, as a mark (starts the watchdog on first use).
pub(crate) fn mark() -> Mark {
    Mark(watch().pauses.load(Ordering::Relaxed))
}

/// The length of a pause since `mark`, if there was one, or if one is going on right now
/// (the watchdog has not ticked for longer than `SUSPECT_AFTER`: this thread woke first).
pub(crate) fn since(mark: Mark) -> Option<Duration> {
    let w = watch();
    let stale = w
        .now_ms()
        .saturating_sub(w.last_tick.load(Ordering::Relaxed));
    if stale > SUSPECT_AFTER.as_millis() as u64 {
        return Some(Duration::from_millis(stale));
    }
    (w.pauses.load(Ordering::Relaxed) != mark.0)
        .then(|| Duration::from_millis(w.last_pause.load(Ordering::Relaxed)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_pause_is_reported_while_the_process_runs() {
        let m = mark();
        std::thread::sleep(TICK * 3);
        assert_eq!(since(m), None);
    }
}

//! Streaming anomaly detectors for sluice's `detect` stage, and a NAB runner and scorer.
//!
//! Every detector takes `(timestamp, value)` in order and returns a score in `[0, 1]` before
//! it sees the next point, does O(1) amortised work per point, and keeps bounded state that
//! [`AnyDetector::save`] writes as versioned bytes; [`DetectorSpec::restore`] reads them back
//! into a detector that scores exactly as the original would have.
//!
//! Non-finite values (NaN, ±inf) score 0 and leave the state untouched; gaps and repeated
//! timestamps are ordinary input.

mod cad;
mod codec;
mod context;
mod ensemble;
mod ewma;
mod mad;
pub mod multivariate;
pub mod nab;
mod seasonal;
mod spec;
mod stats;
mod zscore;

pub use cad::CadParams;
pub use ensemble::EnsembleParams;
pub use ewma::EwmaParams;
pub use mad::MadParams;
pub use multivariate::{MultivariateDetector, MultivariateSpec};
pub use seasonal::SeasonalParams;
pub use spec::{AnyDetector, DetectorSpec, OLDEST_READABLE_VERSION, STATE_FORMAT_VERSION};
pub use zscore::ZscoreParams;

/// Errors of this crate. Restore and spec errors are the caller's (bad bytes or names) and a
/// retry will not help; I/O errors come from the file system.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown detector {0:?}; known: zscore, ewma, mad, seasonal, ensemble, cad, null")]
    UnknownDetector(String),
    #[error(
        "detector state ends early at byte {at}; the bytes are truncated or not detector state"
    )]
    Truncated { at: usize },
    #[error("detector state has {extra} unexpected trailing bytes")]
    Trailing { extra: usize },
    #[error("detector state format version {0} is not supported (this build reads {OLDEST_READABLE_VERSION} to {STATE_FORMAT_VERSION})")]
    Version(u8),
    #[error("detector state was saved by {saved:?} but is restored as {wanted:?}")]
    KindMismatch { saved: String, wanted: &'static str },
    #[error("detector state does not fit the spec: {0}")]
    Incompatible(String),
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {msg}")]
    Parse {
        path: std::path::PathBuf,
        line: usize,
        msg: String,
    },
}

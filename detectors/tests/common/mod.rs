//! Shared by the integration tests: where the NAB corpus is.

use std::path::PathBuf;

/// `$SLUICE_NAB_DIR`, else `../shared/bench/nab` relative to the workspace root; panics
/// with a clear message if absent.
#[allow(dead_code, unreachable_pub)]
pub fn nab_dir() -> PathBuf {
    let dir = std::env::var_os("SLUICE_NAB_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/bench/nab"),
        PathBuf::from,
    );
    assert!(
        dir.join("data").is_dir() && dir.join("labels/combined_windows.json").is_file(),
        "the NAB corpus is missing: expected {} with data/ and labels/combined_windows.json \
         (it lives in the shared folder next to the workspace, not in the repo; \
         SLUICE_NAB_DIR points elsewhere)",
        dir.display()
    );
    dir
}

//! `sluice schemas push|check` library functions against `sluice registry`.

mod common;

use std::path::Path;

use sluice_schemas::{check, push, SchemaFileError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_then_check_an_evolved_file() {
    let url = common::start_registry(&common::random_topic("schemas-push")).await;
    let subject = common::random_topic("telemetry-value");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));

    // Every bundled .avsc is a valid schema and registers.
    for f in ["aggregate", "anomaly", "alert", "dead-letter"] {
        push(
            &url,
            &format!("{subject}-{f}"),
            &dir.join(format!("{f}.avsc")),
        )
        .await
        .unwrap();
    }

    // Nothing to compare with yet: compatible.
    check(&url, &subject, &dir.join("telemetry-v1.avsc"))
        .await
        .unwrap();
    let id1 = push(&url, &subject, &dir.join("telemetry-v1.avsc"))
        .await
        .unwrap();
    check(&url, &subject, &dir.join("telemetry-v2.avsc"))
        .await
        .unwrap();
    let id2 = push(&url, &subject, &dir.join("telemetry-v2.avsc"))
        .await
        .unwrap();
    assert_ne!(id1, id2);

    // Narrowing value back to float is not BACKWARD-compatible: it cannot read v2's doubles.
    let tmp = std::env::temp_dir().join(format!("{}.avsc", common::random_topic("narrowed")));
    let narrowed = include_str!("../telemetry-v2.avsc").replace(
        r#""name": "value", "type": "double""#,
        r#""name": "value", "type": "float""#,
    );
    std::fs::write(&tmp, narrowed).unwrap();
    let err = check(&url, &subject, &tmp).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, SchemaFileError::Incompatible { .. }), "{msg}");
    assert!(msg.contains(tmp.to_str().unwrap()), "names the file: {msg}");
    assert!(msg.contains(&subject), "names the subject: {msg}");
    assert!(
        msg.contains("/Telemetry/value") && msg.contains("double cannot be read as float"),
        "{msg}"
    );
    let err = push(&url, &subject, &tmp).await.unwrap_err();
    assert!(matches!(err, SchemaFileError::Incompatible { .. }), "{err}");

    // Not a schema at all.
    std::fs::write(&tmp, "{\"type\": \"record\"}").unwrap();
    let err = check(&url, &subject, &tmp).await.unwrap_err();
    assert!(matches!(err, SchemaFileError::Invalid { .. }), "{err}");
    std::fs::remove_file(&tmp).unwrap();
}

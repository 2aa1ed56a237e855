//! Python's confluent-kafka `SchemaRegistryClient`, `AvroSerializer` and `AvroDeserializer`
//! (from PyPI, unchanged) against an in-process `sluice registry`, via pytest.
//! Needs: `pip install 'confluent-kafka[avro,schemaregistry]' pytest`.

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_python_client_works_unchanged() {
    let url = common::start_registry(&common::random_topic("schemas-python")).await;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python");
    let out = tokio::process::Command::new("python3")
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", dir])
        .env("SLUICE_TEST_REGISTRY_URL", &url)
        .output()
        .await
        .expect(
            "python3 runs (install Python 3 with confluent-kafka[avro,schemaregistry] and pytest)",
        );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "pytest failed ({}):\n{stdout}\n{stderr}\n(needs: pip install 'confluent-kafka[avro,schemaregistry]' pytest)",
        out.status
    );
    assert!(stdout.contains("passed"), "{stdout}");
}

//! `sluice registry` over HTTP against a real broker: the Confluent REST surface, its error
//! codes, persistence in the schemas topic, and two instances sharing one topic.

mod common;

use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};
use sluice_schemas::client::RegistryClient;

const V1: &str = include_str!("../telemetry-v1.avsc");
const V2: &str = include_str!("../telemetry-v2.avsc");
const CT: &str = "application/vnd.schemaregistry.v1+json";

async fn call(method: Method, url: String, body: Option<String>) -> (StatusCode, Value) {
    let mut req = Client::new()
        .request(method, url)
        .header("Content-Type", CT);
    if let Some(b) = body {
        req = req.body(b);
    }
    let resp = req.send().await.expect("registry answers");
    let status = resp.status();
    let text = resp.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, v)
}

fn schema_body(s: &str) -> Option<String> {
    Some(json!({ "schema": s }).to_string())
}

fn assert_error(got: &(StatusCode, Value), status: u16, code: u64) {
    assert_eq!(got.0.as_u16(), status, "{got:?}");
    assert_eq!(got.1["error_code"], code, "{got:?}");
    assert!(got.1["message"].is_string(), "{got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_surface_and_error_codes() {
    let url = common::start_registry(&common::random_topic("schemas-api")).await;
    let s = "telemetry-value";

    // Unknown subject, version and id.
    assert_error(
        &call(Method::GET, format!("{url}/subjects/{s}/versions"), None).await,
        404,
        40401,
    );
    assert_error(
        &call(
            Method::GET,
            format!("{url}/subjects/{s}/versions/latest"),
            None,
        )
        .await,
        404,
        40401,
    );
    assert_error(
        &call(Method::GET, format!("{url}/schemas/ids/999"), None).await,
        404,
        40403,
    );
    assert_error(
        &call(Method::POST, format!("{url}/subjects/{s}"), schema_body(V1)).await,
        404,
        40401,
    );

    // Bad bodies and schemas.
    assert_error(
        &call(
            Method::POST,
            format!("{url}/subjects/{s}/versions"),
            Some("{not json".into()),
        )
        .await,
        400,
        400,
    );
    assert_error(
        &call(
            Method::POST,
            format!("{url}/subjects/{s}/versions"),
            schema_body("{\"type\":\"nope\"}"),
        )
        .await,
        422,
        42201,
    );
    assert_error(
        &call(
            Method::POST,
            format!("{url}/subjects/{s}/versions"),
            schema_body("not json at all"),
        )
        .await,
        422,
        42201,
    );

    // Register v1 then v2 (BACKWARD by default).
    let (st, v) = call(
        Method::POST,
        format!("{url}/subjects/{s}/versions"),
        schema_body(V1),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let id1 = v["id"].as_u64().unwrap();
    let (_, again) = call(
        Method::POST,
        format!("{url}/subjects/{s}/versions"),
        schema_body(V1),
    )
    .await;
    assert_eq!(again["id"].as_u64(), Some(id1), "same schema, same id");
    let (_, v) = call(
        Method::POST,
        format!("{url}/subjects/{s}/versions"),
        schema_body(V2),
    )
    .await;
    let id2 = v["id"].as_u64().unwrap();
    assert_ne!(id1, id2);

    let (_, v) = call(Method::GET, format!("{url}/subjects"), None).await;
    assert_eq!(v, json!([s]));
    let (_, v) = call(Method::GET, format!("{url}/subjects/{s}/versions"), None).await;
    assert_eq!(v, json!([1, 2]));
    let (_, v) = call(
        Method::GET,
        format!("{url}/subjects/{s}/versions/latest"),
        None,
    )
    .await;
    assert_eq!(
        (
            v["version"].as_u64(),
            v["id"].as_u64(),
            v["subject"].as_str()
        ),
        (Some(2), Some(id2), Some(s))
    );
    let (_, v) = call(Method::GET, format!("{url}/subjects/{s}/versions/1"), None).await;
    assert_eq!(v["id"].as_u64(), Some(id1));
    assert_error(
        &call(Method::GET, format!("{url}/subjects/{s}/versions/7"), None).await,
        404,
        40402,
    );
    assert_error(
        &call(
            Method::GET,
            format!("{url}/subjects/{s}/versions/zero"),
            None,
        )
        .await,
        422,
        42202,
    );
    let (_, v) = call(Method::GET, format!("{url}/schemas/ids/{id2}"), None).await;
    let stored: Value = serde_json::from_str(v["schema"].as_str().unwrap()).unwrap();
    assert_eq!(stored, serde_json::from_str::<Value>(V2).unwrap());

    // Look up.
    let (_, v) = call(Method::POST, format!("{url}/subjects/{s}"), schema_body(V1)).await;
    assert_eq!(
        (v["version"].as_u64(), v["id"].as_u64()),
        (Some(1), Some(id1))
    );
    let other = r#"{"type":"record","name":"Other","fields":[]}"#;
    assert_error(
        &call(
            Method::POST,
            format!("{url}/subjects/{s}"),
            schema_body(other),
        )
        .await,
        404,
        40403,
    );

    // Incompatible under BACKWARD: v1 cannot read v2 data.
    let got = call(
        Method::POST,
        format!("{url}/subjects/{s}/versions"),
        schema_body(&V1.replace("first version", "again")),
    )
    .await;
    assert_error(&got, 409, 409);
    let (_, v) = call(
        Method::POST,
        format!("{url}/compatibility/subjects/{s}/versions/latest?verbose=true"),
        schema_body(V1),
    )
    .await;
    assert_eq!(v["is_compatible"], false);
    assert!(v["messages"].to_string().contains("/Telemetry/ts"), "{v}");
    let (_, v) = call(
        Method::POST,
        format!("{url}/compatibility/subjects/{s}/versions/2"),
        schema_body(V2),
    )
    .await;
    assert_eq!(v["is_compatible"], true);
    assert_error(
        &call(
            Method::POST,
            format!("{url}/compatibility/subjects/nope/versions/latest"),
            schema_body(V2),
        )
        .await,
        404,
        40401,
    );

    // Config.
    let (_, v) = call(Method::GET, format!("{url}/config"), None).await;
    assert_eq!(v["compatibilityLevel"], "BACKWARD");
    assert_error(
        &call(Method::GET, format!("{url}/config/{s}"), None).await,
        404,
        40408,
    );
    assert_error(
        &call(
            Method::PUT,
            format!("{url}/config"),
            Some(r#"{"compatibility":"SIDEWAYS"}"#.into()),
        )
        .await,
        422,
        42203,
    );
    let (_, v) = call(
        Method::PUT,
        format!("{url}/config/{s}"),
        Some(r#"{"compatibility":"NONE"}"#.into()),
    )
    .await;
    assert_eq!(v["compatibility"], "NONE");
    let (_, v) = call(Method::GET, format!("{url}/config/{s}"), None).await;
    assert_eq!(v["compatibilityLevel"], "NONE");
    let (st, v) = call(
        Method::POST,
        format!("{url}/subjects/{s}/versions"),
        schema_body(&V1.replace("first version", "again")),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "NONE accepts anything: {v}");
    let (_, v) = call(
        Method::PUT,
        format!("{url}/config"),
        Some(r#"{"compatibility":"FULL_TRANSITIVE"}"#.into()),
    )
    .await;
    assert_eq!(v["compatibility"], "FULL_TRANSITIVE");
    let (_, v) = call(Method::DELETE, format!("{url}/config/{s}"), None).await;
    assert_eq!(v["compatibilityLevel"], "NONE");

    // Deletes: soft, then hard; hard first is refused.
    assert_error(
        &call(
            Method::DELETE,
            format!("{url}/subjects/{s}/versions/1?permanent=true"),
            None,
        )
        .await,
        404,
        40407,
    );
    let (_, v) = call(
        Method::DELETE,
        format!("{url}/subjects/{s}/versions/1"),
        None,
    )
    .await;
    assert_eq!(v, json!(1));
    let (_, v) = call(Method::GET, format!("{url}/subjects/{s}/versions"), None).await;
    assert_eq!(v, json!([2, 3]));
    let (_, v) = call(
        Method::GET,
        format!("{url}/subjects/{s}/versions?deleted=true"),
        None,
    )
    .await;
    assert_eq!(v, json!([1, 2, 3]));
    let (_, v) = call(
        Method::DELETE,
        format!("{url}/subjects/{s}/versions/1?permanent=true"),
        None,
    )
    .await;
    assert_eq!(v, json!(1));
    assert_error(
        &call(
            Method::DELETE,
            format!("{url}/subjects/{s}?permanent=true"),
            None,
        )
        .await,
        404,
        40405,
    );
    let (_, v) = call(Method::DELETE, format!("{url}/subjects/{s}"), None).await;
    assert_eq!(v, json!([2, 3]));
    assert_error(
        &call(Method::GET, format!("{url}/subjects/{s}/versions"), None).await,
        404,
        40401,
    );
    let (_, v) = call(Method::GET, format!("{url}/subjects?deleted=true"), None).await;
    assert_eq!(v, json!([s]));
    let (_, v) = call(
        Method::DELETE,
        format!("{url}/subjects/{s}?permanent=true"),
        None,
    )
    .await;
    assert_eq!(v, json!([2, 3]));
    let (_, v) = call(Method::GET, format!("{url}/subjects?deleted=true"), None).await;
    assert_eq!(v, json!([]));
    assert_error(
        &call(Method::GET, format!("{url}/schemas/ids/{id2}"), None).await,
        404,
        40403,
    );
    assert_error(
        &call(Method::GET, format!("{url}/no/such/path"), None).await,
        404,
        404,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_topic_and_survive_restart() {
    let topic = common::random_topic("schemas-shared");
    let a = common::start_registry(&topic).await;
    let b = common::start_registry(&topic).await;
    let (ca, cb) = (RegistryClient::new(&a), RegistryClient::new(&b));

    // Concurrent registers of different schemas on both instances get distinct ids.
    let mut tasks = Vec::new();
    for i in 0..6 {
        let client = if i % 2 == 0 { ca.clone() } else { cb.clone() };
        let schema =
            format!(r#"{{"type":"record","name":"R{i}","fields":[{{"name":"f","type":"int"}}]}}"#);
        tasks.push(tokio::spawn(async move {
            (
                client.register(&format!("s{i}"), &schema).await.unwrap(),
                schema,
            )
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    let mut seen: Vec<u32> = ids.iter().map(|(id, _)| *id).collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), 6, "ids are unique across instances: {ids:?}");

    // Each id means the same schema on both instances.
    for (id, schema) in &ids {
        for c in [RegistryClient::new(&a), RegistryClient::new(&b)] {
            let got: Value = serde_json::from_str(&c.schema_by_id(*id).await.unwrap()).unwrap();
            assert_eq!(got, serde_json::from_str::<Value>(schema).unwrap());
        }
    }

    // A register on A is visible on B (B converges by tailing the topic).
    let id = ca.register("shared-subject", V1).await.unwrap();
    let mut latest = None;
    for _ in 0..200 {
        match cb.latest("shared-subject").await {
            Ok(v) => {
                latest = Some(v);
                break;
            }
            Err(e) => assert_eq!(e.code(), Some(40401), "{e}"),
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let latest = latest.expect("B sees A's register");
    assert_eq!((latest.id, latest.version), (id, 1));
    // Registering the same schema on B returns A's id.
    assert_eq!(cb.register("shared-subject", V1).await.unwrap(), id);

    // A fresh instance (a restart) reads everything back from the topic before serving.
    let c = common::start_registry(&topic).await;
    let cc = RegistryClient::new(&c);
    assert_eq!(cc.latest("shared-subject").await.unwrap().id, id);
    for (id, _) in &ids {
        cc.schema_by_id(*id).await.unwrap();
    }
}

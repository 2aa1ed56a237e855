//! `sluice ingest` with HTTP bridges, against the local broker and registry: readings
//! `POST`ed with each device's bearer token land in the raw topic exactly as sent, and only
//! those answered `202`; every refusal (401, 403, 400, 413, 415, 405, 404, 429) is answered
//! with its reason and stores nothing, not even the good readings of a refused request;
//! tokens follow their compacted topic (added, rotated, revoked) and their file (re-read,
//! a broken edit ignored); HTTPS with the test's own CA; a `kill -9` in mid-stream loses no
//! acknowledged reading; SIGTERM answers what is in flight and exits 0.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use apache_avro::types::Value;
use common::secure::Pki;
use common::{
    eventually_or, free_port, landed_readings, metric_where, unique, Sluice, TestTopology,
};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;

fn sha256_hex(token: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes token records (device, its tokens' hashes or None for a tombstone) with a plain
/// producer.
fn put_tokens(brokers: &str, topic: &str, entries: &[(String, Option<Vec<String>>)]) {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    for (device, tokens) in entries {
        let value = tokens.as_ref().map(|ts| {
            ts.iter()
                .map(|t| sha256_hex(t))
                .collect::<Vec<_>>()
                .join(",")
        });
        let mut rec = BaseRecord::<str, str>::to(topic).key(device.as_str());
        if let Some(v) = &value {
            rec = rec.payload(v);
        }
        p.send(rec).map_err(|(e, _)| e).unwrap();
    }
    p.flush(Duration::from_secs(30)).unwrap();
}

/// What a request got: the status and JSON body, or a transport error.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: serde_json::Value,
    headers: reqwest::header::HeaderMap,
}

struct Client {
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
    url: String,
}

impl Client {
    fn new(url: String, ca: Option<&Path>) -> Client {
        let mut b = reqwest::Client::builder().timeout(Duration::from_secs(60));
        if let Some(ca) = ca {
            let pem = std::fs::read(ca).unwrap();
            b = b.add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
        }
        Client {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            http: b.build().unwrap(),
            url,
        }
    }

    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        auth: Option<String>,
        ctype: Option<&str>,
        body: Vec<u8>,
    ) -> reqwest::RequestBuilder {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.url))
            .body(body);
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        if let Some(c) = ctype {
            r = r.header("content-type", c);
        }
        r
    }

    fn send(&self, r: reqwest::RequestBuilder) -> Result<Answer, String> {
        self.rt.block_on(answer(r))
    }

    /// POST /v1/telemetry with `Bearer token`.
    fn post(&self, token: &str, ctype: &str, body: Vec<u8>) -> Result<Answer, String> {
        self.send(self.request(
            reqwest::Method::POST,
            "/v1/telemetry",
            Some(format!("Bearer {token}")),
            Some(ctype),
            body,
        ))
    }
}

/// A refusal decided before the body is read leaves the connection usable: on one TCP
/// connection, a request with an unknown token whose body arrives only after its headers
/// (half of it, a pause for the answer, the rest), then a second request. A server that
/// answered and closed with the body unread would reset the connection here.
/// Returns the (status, error) of both answers.
fn refused_then_reused(port: u16, token: &str) -> [(u16, &'static str); 2] {
    use std::io::{BufRead as _, BufReader, Read as _, Write as _};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let body = vec![b' '; 48 * 1024];
    write!(
        conn,
        "POST /v1/telemetry HTTP/1.1\r\nhost: x\r\nauthorization: Bearer no-such-token\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    conn.write_all(&body[..body.len() / 2]).unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let read_answer = |reader: &mut BufReader<std::net::TcpStream>| {
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        let mut len = 0usize;
        let mut close = false;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let line = line.trim_end().to_ascii_lowercase();
            if line.is_empty() {
                break;
            }
            if let Some(v) = line.strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
            close |= line == "connection: close";
        }
        let mut b = vec![0; len];
        reader.read_exact(&mut b).unwrap();
        (status, close, String::from_utf8_lossy(&b).into_owned())
    };
    // The answer comes once the whole body is in: send the rest, then read it.
    conn.write_all(&body[body.len() / 2..]).unwrap();
    let (status, close, text) = read_answer(&mut reader);
    assert!(status.starts_with("HTTP/1.1 401"), "{status} {text}");
    assert!(!close, "a drained refusal keeps the connection: {text}");
    let good = serde_json::to_vec(&serde_json::json!([])).unwrap();
    write!(
        conn,
        "POST /v2/telemetry HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        good.len()
    )
    .unwrap();
    conn.write_all(&good).unwrap();
    let (status, _, text) = read_answer(&mut reader);
    assert!(
        status.starts_with("HTTP/1.1 404"),
        "the second request on the connection: {status} {text}"
    );
    [(401, "invalid_token"), (404, "not_found")]
}

async fn answer(r: reqwest::RequestBuilder) -> Result<Answer, String> {
    let resp = r.send().await.map_err(|e| format!("{e:?}"))?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.map_err(|e| e.to_string())?;
    let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    Ok(Answer {
        status,
        body,
        headers,
    })
}

fn reading(device: Option<&str>, seq: i64) -> serde_json::Value {
    let mut v = serde_json::json!({
        "metric": "temperature",
        "ts": 1_700_000_000_000i64 + seq * 1000,
        "value": 20.0 + (seq % 7) as f64,
        "seq": seq,
    });
    if let Some(d) = device {
        v["device_id"] = d.into();
    }
    v
}

fn json_body(items: &[serde_json::Value]) -> Vec<u8> {
    serde_json::Value::from(items.to_vec())
        .to_string()
        .into_bytes()
}

/// Readings `from..from+n` of `device`, without the device field (the token names it).
fn batch(from: i64, n: i64) -> Vec<serde_json::Value> {
    (from..from + n).map(|s| reading(None, s)).collect()
}

const JSON: &str = "application/json";

#[test]
fn http_readings_land_once_refusals_store_nothing_and_tokens_follow_their_stores() {
    let brokers = common::env("SLUICE_BROKERS");
    let pki = Pki::new();
    let https_port = free_port();
    let t = TestTopology::new(|text| {
        let https = format!(
            "  devices-https:\n    kind: http\n    listen: 127.0.0.1:{https_port}\n    tls: {{ cert: {}, key: {} }}\n    tokens: {{ file: tokens.yaml }}\n    output: OUT\n\nstages:",
            pki.cert.display(),
            pki.key.display()
        );
        text.replace("max_body: 1MiB ", "max_body: 64KiB ")
            .replace("max_records: 10000 ", "max_records: 50 ")
            .replace("max_pending: 50000 ", "max_pending: 100 ")
            .replacen("\nstages:", &format!("\n{https}"), 1)
    });
    let raw = t.topic("telemetry.raw");
    let tokens_topic = t.topic("devices.tokens");
    let text = std::fs::read_to_string(&t.path)
        .unwrap()
        .replace("output: OUT", &format!("output: {raw}"));
    std::fs::write(&t.path, text).unwrap();
    let p = unique("");
    let dev = |n: &str| format!("{p}-{n}");
    let tok = |n: &str| format!("token-{p}-{n}");
    // The file bridge's tokens, beside the topology (a relative path).
    let token_file = t.dir.path().join("tokens.yaml");
    std::fs::write(
        &token_file,
        format!("{}: {}\n", dev("c"), sha256_hex(&tok("c"))),
    )
    .unwrap();

    let log = t.dir.path().join("ingest.log");
    let path = t.path.to_str().unwrap().to_string();
    let args = [
        "ingest",
        &path,
        "--bridge",
        "devices-http",
        "--bridge",
        "devices-https",
    ];
    let mut ingest = Sluice::spawn(&args, &log);
    let port = t.metrics_port;
    let log_tail = || std::fs::read_to_string(&log).unwrap_or_default();
    let wait_up = |what: &str| {
        eventually_or(
            what,
            240,
            Duration::from_millis(250),
            || match metric_where(port, "sluice_ingest_connected", "") {
                Some(n) if n >= 2.0 => Ok(()),
                other => Err(format!("serving {other:?}; log:\n{}", log_tail())),
            },
        )
    };
    wait_up("both bridges to serve");
    let http = Client::new(format!("http://127.0.0.1:{}", t.http_port), None);
    let https = Client::new(
        format!("https://127.0.0.1:{https_port}"),
        Some(pki.ca.as_path()),
    );

    // Every reading answered 202, and how many requests each bridge answered with each code.
    let mut expected: BTreeSet<(String, i64)> = BTreeSet::new();
    let mut codes: BTreeMap<(&str, u16), u64> = BTreeMap::new();
    let mut note = |bridge: &'static str, a: &Answer| {
        *codes.entry((bridge, a.status)).or_default() += 1;
    };

    // --- tokens from the topic: added after the start, read within moments ---------------
    put_tokens(
        &brokers,
        &tokens_topic,
        &[
            (dev("a"), Some(vec![tok("a1"), tok("a2")])),
            (dev("b"), Some(vec![tok("b")])),
        ],
    );
    eventually_or(
        "the token topic's first records to be read",
        240,
        Duration::from_millis(250),
        || {
            let a = http.post(&tok("a1"), JSON, json_body(&[reading(None, 1)]))?;
            note("devices-http", &a);
            match a.status {
                202 => Ok(()),
                401 => Err(format!("still 401: {:?}", a.body)),
                s => panic!("unexpected {s}: {:?}", a.body),
            }
        },
    );
    expected.insert((dev("a"), 1));

    // --- readings: arrays without the device field, one with it, Avro back to back -------
    for i in 0..20 {
        let a = http
            .post(&tok("a1"), JSON, json_body(&batch(100 + i * 25, 25)))
            .unwrap();
        note("devices-http", &a);
        assert_eq!(a.status, 202, "{:?}", a.body);
        assert_eq!(a.body["accepted"], 25);
        expected.extend((100 + i * 25..125 + i * 25).map(|s| (dev("a"), s)));
    }
    for s in 1..=10 {
        let body = reading(Some(dev("b").as_str()), s).to_string().into_bytes();
        let a = http
            .post(&tok("b"), "application/json; charset=utf-8", body)
            .unwrap();
        note("devices-http", &a);
        assert_eq!(a.status, 202, "{:?}", a.body);
        expected.insert((dev("b"), s));
    }
    let v1_text =
        std::fs::read_to_string(common::repo().join("schemas/telemetry-v1.avsc")).unwrap();
    let v1 = apache_avro::Schema::parse_str(&v1_text).unwrap();
    let registry = sluice_schemas::client::RegistryClient::new(&common::env("SLUICE_REGISTRY_URL"));
    let v1_id = http
        .rt
        .block_on(registry.register(&format!("{raw}-value"), &v1_text))
        .unwrap();
    let framed = |device: &str, seq: i64| {
        let rec = Value::Record(vec![
            ("device_id".into(), Value::String(device.into())),
            ("metric".into(), Value::String("humidity".into())),
            ("ts".into(), Value::TimestampMillis(1_700_000_000_000 + seq)),
            ("value".into(), Value::Float(40.0)),
            ("seq".into(), Value::Long(seq)),
            ("firmware".into(), Value::String("1.2".into())),
        ]);
        let mut out = Vec::new();
        sluice_schemas::wire::write_header(v1_id, &mut out);
        out.extend(sluice_ops::codec::encode_once(&v1, &rec).unwrap());
        out
    };
    let avro: Vec<u8> = (500..503).flat_map(|s| framed(&dev("b"), s)).collect();
    let a = http
        .post(&tok("b"), "application/vnd.confluent.avro", avro)
        .unwrap();
    note("devices-http", &a);
    assert_eq!(
        (a.status, a.body["accepted"].as_u64()),
        (202, Some(3)),
        "{:?}",
        a.body
    );
    expected.extend((500..503).map(|s| (dev("b"), s)));

    // --- refusals: each answered with its reason; none of their readings may land --------
    // Their seqs are 9000 and up.
    let bearer = |t: &str| format!("Bearer {t}");
    let mut good_and_bad = batch(9000, 3);
    good_and_bad[1]["value"] = "hot".into();
    let mut huge = reading(None, 9010);
    huge["firmware"] = "x".repeat(70 * 1024).into();
    let cases: Vec<(u16, &str, reqwest::RequestBuilder)> = vec![
        (
            401,
            "missing_token",
            http.request(
                reqwest::Method::POST,
                "/v1/telemetry",
                None,
                Some(JSON),
                json_body(&batch(9020, 1)),
            ),
        ),
        (
            401,
            "missing_token",
            http.request(
                reqwest::Method::POST,
                "/v1/telemetry",
                Some("Basic YTpi".into()),
                Some(JSON),
                json_body(&batch(9021, 1)),
            ),
        ),
        (
            401,
            "invalid_token",
            http.request(
                reqwest::Method::POST,
                "/v1/telemetry",
                Some(bearer("no-such-token")),
                Some(JSON),
                json_body(&batch(9022, 1)),
            ),
        ),
        (
            403,
            "device_mismatch",
            http.request(
                reqwest::Method::POST,
                "/v1/telemetry",
                Some(bearer(&tok("a1"))),
                Some(JSON),
                json_body(&[reading(Some(dev("b").as_str()), 9023)]),
            ),
        ),
        (
            400,
            "bad_json",
            http.request(
                reqwest::Method::POST,
                "/v1/telemetry",
                Some(bearer(&tok("a1"))),
                Some(JSON),
                b"{not json".to_vec(),
            ),
        ),
        (
            400,
            "wrong_type",
            http.request(
                reqwest::Method::POST,
                "/v1/telemetry",
                Some(bearer(&tok("a1"))),
                Some(JSON),
                json_body(&good_and_bad),
            ),
        ),
        (
            400,
            "missing_field",
            http.request(
                reqwest::Method::POST,
                "/v1/telemetry",
                Some(bearer(&tok("a1"))),
                Some(JSON),
                br#"[{"metric":"t","ts":1,"value":1.0}]"#.to_vec(),
            ),
        ),
        (
            400,
            "bad_avro",
            http.request(
                reqwest::Method::POST,
                "/v1/telemetry",
                Some(bearer(&tok("b"))),
                Some("avro/binary"),
                b"{\"seq\":9030}".to_vec(),
            ),
        ),
        (
            413,
            "too_large",
            http.request(
                reqwest::Method::POST,
                "/v1/telemetry",
                Some(bearer(&tok("a1"))),
                Some(JSON),
                json_body(&[huge]),
            ),
        ),
        (
            413,
            "too_many_records",
            http.request(
                reqwest::Method::POST,
                "/v1/telemetry",
                Some(bearer(&tok("a1"))),
                Some(JSON),
                json_body(&batch(9100, 51)),
            ),
        ),
        (
            415,
            "unsupported_media_type",
            http.request(
                reqwest::Method::POST,
                "/v1/telemetry",
                Some(bearer(&tok("a1"))),
                Some("text/plain"),
                json_body(&batch(9040, 1)),
            ),
        ),
        (
            405,
            "method_not_allowed",
            http.request(
                reqwest::Method::GET,
                "/v1/telemetry",
                Some(bearer(&tok("a1"))),
                None,
                vec![],
            ),
        ),
        (
            404,
            "not_found",
            http.request(
                reqwest::Method::POST,
                "/v2/telemetry",
                Some(bearer(&tok("a1"))),
                Some(JSON),
                json_body(&batch(9050, 1)),
            ),
        ),
    ];
    let mut refused: BTreeMap<&str, u64> = BTreeMap::new();
    for (status, error, req) in cases {
        let a = http.send(req).unwrap();
        note("devices-http", &a);
        assert_eq!(a.status, status, "{error}: {:?}", a.body);
        assert_eq!(a.body["error"], error, "{:?}", a.body);
        assert!(
            !a.body["reason"].as_str().unwrap_or("").is_empty(),
            "{error}: a reason for people: {:?}",
            a.body
        );
        if status == 401 {
            assert!(a.headers.contains_key("www-authenticate"), "{error}");
        }
        if status == 405 {
            assert_eq!(a.headers["allow"], "POST");
        }
        *refused.entry(error).or_default() += 1;
    }
    println!("refusals answered: {refused:?}");
    // Two more answers, counted by the bridge's metrics like the others.
    for (status, error) in refused_then_reused(t.http_port, &tok("a1")) {
        note(
            "devices-http",
            &Answer {
                status,
                body: serde_json::Value::Null,
                headers: Default::default(),
            },
        );
        *refused.entry(error).or_default() += 1;
    }

    // --- backpressure: max_pending 100, requests of 50 at once: some are 429, and a 429
    // stores nothing (each reading of this phase lands exactly once after the resends) ---
    let mut seq = 20_000i64;
    let mut busy = 0;
    for round in 0..5 {
        let reqs: Vec<(i64, reqwest::RequestBuilder)> = (0..16)
            .map(|_| {
                seq += 50;
                (
                    seq,
                    http.request(
                        reqwest::Method::POST,
                        "/v1/telemetry",
                        Some(bearer(&tok("a2"))),
                        Some(JSON),
                        json_body(&batch(seq, 50)),
                    ),
                )
            })
            .collect();
        let (starts, builders): (Vec<i64>, Vec<_>) = reqs.into_iter().unzip();
        let answers = http
            .rt
            .block_on(futures::future::join_all(builders.into_iter().map(answer)));
        for (start, a) in starts.into_iter().zip(answers) {
            let a = a.unwrap();
            note("devices-http", &a);
            match a.status {
                202 => {}
                429 => {
                    busy += 1;
                    assert_eq!(a.body["error"], "busy");
                    assert_eq!(a.headers["retry-after"], "1");
                    *refused.entry("busy").or_default() += 1;
                    // Resent alone until it fits, as a device would.
                    loop {
                        let again = http
                            .post(&tok("a2"), JSON, json_body(&batch(start, 50)))
                            .unwrap();
                        note("devices-http", &again);
                        if again.status == 202 {
                            break;
                        }
                        assert_eq!(again.status, 429, "{:?}", again.body);
                        *refused.entry("busy").or_default() += 1;
                    }
                }
                s => panic!("a burst request got {s}: {:?}", a.body),
            }
            expected.extend((start..start + 50).map(|s| (dev("a"), s)));
        }
        println!("burst {round}: {busy} answered 429 so far");
        if busy > 0 {
            break;
        }
    }
    assert!(
        busy > 0,
        "16 requests of 50 at once never exceeded max_pending 100"
    );

    // --- HTTPS with the file's tokens; the file re-read on change; a broken edit ignored --
    let a = https
        .post(&tok("c"), JSON, json_body(&batch(1, 5)))
        .unwrap();
    note("devices-https", &a);
    assert_eq!(a.status, 202, "{:?}", a.body);
    expected.extend((1..6).map(|s| (dev("c"), s)));
    let untrusting = Client::new(format!("https://127.0.0.1:{https_port}"), None);
    let err = untrusting
        .post(&tok("c"), JSON, json_body(&batch(9060, 1)))
        .expect_err("a client without the test CA must not get through");
    println!("client without the CA: {err}");
    let plain = Client::new(format!("http://127.0.0.1:{https_port}"), None);
    assert!(
        plain
            .post(&tok("c"), JSON, json_body(&batch(9061, 1)))
            .is_err(),
        "plain HTTP to the HTTPS bridge must fail"
    );
    std::fs::write(
        &token_file,
        format!(
            "{}: {}\n{}: [{}]\n",
            dev("c"),
            sha256_hex(&tok("c")),
            dev("d"),
            sha256_hex(&tok("d"))
        ),
    )
    .unwrap();
    eventually_or(
        "the token file to be re-read",
        120,
        Duration::from_millis(250),
        || {
            let a = https.post(&tok("d"), JSON, json_body(&batch(1, 1)))?;
            note("devices-https", &a);
            match a.status {
                202 => Ok(()),
                401 => Err("still 401".to_string()),
                s => panic!("unexpected {s}: {:?}", a.body),
            }
        },
    );
    expected.insert((dev("d"), 1));
    std::fs::write(&token_file, "this: is: not: yaml: [\n").unwrap();
    eventually_or(
        "the broken file to be noticed",
        120,
        Duration::from_millis(250),
        || match metric_where(port, "sluice_ingest_token_errors_total", "devices-https") {
            Some(n) if n >= 1.0 => Ok(()),
            other => Err(format!("token errors {other:?}")),
        },
    );
    let a = https
        .post(&tok("d"), JSON, json_body(&batch(2, 1)))
        .unwrap();
    note("devices-https", &a);
    assert_eq!(
        a.status, 202,
        "the tokens read before stay in force: {:?}",
        a.body
    );
    expected.insert((dev("d"), 2));
    // A start with a broken file is refused (`sluice validate` names the file): mend it for
    // the restart below.
    std::fs::write(
        &token_file,
        format!(
            "{}: {}\n{}: [{}]\n",
            dev("c"),
            sha256_hex(&tok("c")),
            dev("d"),
            sha256_hex(&tok("d"))
        ),
    )
    .unwrap();

    // --- rotation and revocation through the topic -------------------------------------
    put_tokens(
        &brokers,
        &tokens_topic,
        &[(dev("a"), Some(vec![tok("a2")])), (dev("b"), None)],
    );
    // Until the bridge read them, the old tokens still work: a probe answered 202 stored its
    // reading (expected from then on); done once both are 401.
    let mut probe = 30_000i64;
    eventually_or(
        "the rotation and the revocation",
        120,
        Duration::from_millis(250),
        || {
            let mut in_force = Vec::new();
            for (token, device) in [(tok("a1"), dev("a")), (tok("b"), dev("b"))] {
                probe += 1;
                let a = http.post(&token, JSON, json_body(&batch(probe, 1)))?;
                note("devices-http", &a);
                match a.status {
                    202 => {
                        expected.insert((device, probe));
                        in_force.push(token);
                    }
                    401 => *refused.entry("invalid_token").or_default() += 1,
                    s => panic!("unexpected {s}: {:?}", a.body),
                }
            }
            if in_force.is_empty() {
                Ok(())
            } else {
                Err(format!("still in force: {in_force:?}"))
            }
        },
    );
    let a = http
        .post(&tok("a2"), JSON, json_body(&batch(600, 5)))
        .unwrap();
    note("devices-http", &a);
    assert_eq!(a.status, 202, "the rotated-in token works: {:?}", a.body);
    expected.extend((600..605).map(|s| (dev("a"), s)));

    // --- what landed: exactly the accepted readings, once each ---------------------------
    let got = eventually_or(
        "every accepted reading in the raw topic",
        240,
        Duration::from_millis(500),
        || {
            let got = landed_readings(&brokers, &raw);
            let keys: BTreeSet<_> = got.keys().cloned().collect();
            if keys.is_superset(&expected) {
                Ok(got)
            } else {
                Err(format!("{} missing", expected.difference(&keys).count()))
            }
        },
    );
    let keys: BTreeSet<_> = got.keys().cloned().collect();
    let extra: Vec<_> = keys.difference(&expected).take(10).collect();
    assert!(
        extra.is_empty(),
        "readings that were refused landed: {extra:?}"
    );
    let repeats: Vec<_> = got.iter().filter(|(_, n)| **n > 1).take(10).collect();
    assert!(
        repeats.is_empty(),
        "readings stored twice without a crash: {repeats:?}"
    );
    println!("{} readings landed once each", got.len());

    // --- the metrics count what the clients saw ------------------------------------------
    for ((bridge, code), n) in &codes {
        let m = metric_where(
            port,
            "sluice_ingest_http_responses_total",
            &format!("bridge=\"{bridge}\",code=\"{code}\""),
        );
        assert_eq!(m, Some(*n as f64), "{bridge} {code}");
    }
    for (reason, n) in &refused {
        let m = metric_where(
            port,
            "sluice_ingest_refused_total",
            &format!("bridge=\"devices-http\",reason=\"{reason}\""),
        );
        assert_eq!(m, Some(*n as f64), "refused {reason}");
    }
    let produced = metric_where(
        port,
        "sluice_ingest_produced_total",
        "bridge=\"devices-http\"",
    )
    .unwrap()
        + metric_where(
            port,
            "sluice_ingest_produced_total",
            "bridge=\"devices-https\"",
        )
        .unwrap();
    assert_eq!(produced as usize, expected.len());
    assert_eq!(
        metric_where(port, "sluice_ingest_acks_pending", ""),
        Some(0.0)
    );
    assert_eq!(
        metric_where(port, "sluice_ingest_tokens", "bridge=\"devices-http\""),
        Some(1.0),
        "a2 only: a1 rotated out, b revoked"
    );

    // --- kill -9 in mid-stream; the restart reads the tokens again; nothing acknowledged lost
    let stream_expected: BTreeSet<(String, i64)> = (0..100)
        .flat_map(|i| (0..5).map(move |j| 40_000 + i * 5 + j))
        .map(|s| (dev("a"), s))
        .collect();
    let (accepted_tx, accepted_rx) = std::sync::mpsc::channel::<i64>();
    let streamer = {
        let url = format!("http://127.0.0.1:{}", t.http_port);
        let token = tok("a2");
        std::thread::spawn(move || {
            let c = Client::new(url, None);
            for i in 0..100 {
                let from = 40_000 + i * 5;
                // As a device: resend until answered 202 (refused connections while down,
                // 401 until the restarted bridge read its tokens, 503 if not stored).
                let mut tries = 0;
                loop {
                    tries += 1;
                    assert!(tries < 2_000, "request {i} never accepted");
                    match c.post(&token, JSON, json_body(&batch(from, 5))) {
                        Ok(a) if a.status == 202 => break,
                        _ => std::thread::sleep(Duration::from_millis(100)), // a device's backoff
                    }
                }
                accepted_tx.send(from).unwrap();
            }
        })
    };
    for _ in 0..20 {
        accepted_rx
            .recv_timeout(Duration::from_secs(240))
            .expect("the stream under way");
    }
    ingest.kill9();
    let mut ingest = Sluice::spawn(&args, &log);
    wait_up("both bridges to serve again");
    streamer.join().expect("streamer");
    let all: BTreeSet<_> = expected.union(&stream_expected).cloned().collect();
    let got = eventually_or(
        "every reading after the kill",
        240,
        Duration::from_millis(500),
        || {
            let got = landed_readings(&brokers, &raw);
            let keys: BTreeSet<_> = got.keys().cloned().collect();
            if keys.is_superset(&all) {
                Ok(got)
            } else {
                Err(format!(
                    "{} missing; log:\n{}",
                    all.difference(&keys).count(),
                    log_tail()
                ))
            }
        },
    );
    let keys: BTreeSet<_> = got.keys().cloned().collect();
    assert_eq!(keys, all, "exactly the accepted readings");
    let repeats: usize = got.values().map(|n| n - 1).sum();
    println!(
        "after kill -9 and restart: {} readings, {repeats} repeats (identical copies)",
        got.len()
    );

    // --- SIGTERM: answers what is in flight, exits 0 ----------------------------------------
    let status = ingest.terminate();
    assert!(
        status.success(),
        "SIGTERM exit {status:?}; log:\n{}",
        log_tail()
    );
    assert!(
        log_tail().contains("requests received"),
        "the exit summary: {}",
        log_tail()
    );
}

/// The raw topic on Fluvio (docs/FLUVIO.md): each request is answered `202` only once
/// Fluvio acknowledged all of its readings, and a plain Fluvio reader finds every accepted
/// reading once, in Kafka's partition for its device.
#[test]
fn http_readings_land_once_on_a_raw_topic_on_fluvio() {
    let brokers = common::env("SLUICE_BROKERS");
    let t = TestTopology::new(|text| common::raw_on_fluvio(&text).0);
    let raw = format!("{}-telemetry-raw", t.suffix);
    let tokens_topic = t.topic("devices.tokens");
    let p = unique("");
    let dev = |n: i64| format!("{p}-h{n}");
    let tok = |n: i64| format!("token-{p}-{n}");

    let log = t.dir.path().join("ingest.log");
    let path = t.path.to_str().unwrap().to_string();
    let mut ingest = Sluice::spawn(&["ingest", &path, "--bridge", "devices-http"], &log);
    let port = t.metrics_port;
    let log_tail = || std::fs::read_to_string(&log).unwrap_or_default();
    eventually_or(
        "the bridge to serve",
        240,
        Duration::from_millis(250),
        || match metric_where(port, "sluice_ingest_connected", "") {
            Some(n) if n >= 1.0 => Ok(()),
            other => Err(format!("serving {other:?}; log:\n{}", log_tail())),
        },
    );
    let http = Client::new(format!("http://127.0.0.1:{}", t.http_port), None);
    put_tokens(
        &brokers,
        &tokens_topic,
        &(0..4)
            .map(|d| (dev(d), Some(vec![tok(d)])))
            .collect::<Vec<_>>(),
    );
    let mut expected: BTreeSet<(String, i64)> = BTreeSet::new();
    eventually_or(
        "the tokens to be read",
        240,
        Duration::from_millis(250),
        || {
            let a = http.post(&tok(0), JSON, json_body(&[reading(None, 1)]))?;
            match a.status {
                202 => Ok(()),
                401 => Err(format!("still 401: {:?}", a.body)),
                s => panic!("unexpected {s}: {:?}", a.body),
            }
        },
    );
    expected.insert((dev(0), 1));
    for d in 0..4 {
        for i in 0..5 {
            let from = 10 + i * 20;
            let a = http
                .post(&tok(d), JSON, json_body(&batch(from, 20)))
                .unwrap();
            assert_eq!(a.status, 202, "{:?}", a.body);
            assert_eq!(a.body["accepted"], 20);
            expected.extend((from..from + 20).map(|s| (dev(d), s)));
        }
    }
    let (got, partitions) = common::fluvio_readings(&raw, expected.len());
    let keys: BTreeSet<_> = got.keys().cloned().collect();
    assert_eq!(keys, expected, "every reading answered 202, and only those");
    let repeats: usize = got.values().map(|n| n - 1).sum();
    assert_eq!(repeats, 0, "no crash, no repeats");
    println!(
        "{} readings on Fluvio's {raw}, once each, in {partitions} partitions",
        got.len()
    );
    let st = ingest.terminate();
    assert!(st.success(), "SIGTERM exits 0: {st}; log:\n{}", log_tail());
}

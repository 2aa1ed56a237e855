//! One MQTT session, 3.1.1 or 5, behind one interface: a persistent session under a fixed
//! client id, QoS 1, and acknowledgements sent by the bridge itself (manual acks), never by
//! the client library on receipt.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::Publish as Publish5;
use rumqttc::v5::mqttbytes::QoS as QoS5;
use sluice_topology::ingest::{MqttIngestSpec, MqttProtocol};
use tokio::sync::mpsc;

/// What a session needs from the topology.
pub(crate) struct SessionConfig {
    pub(crate) bridge: String,
    pub(crate) client_id: String,
    pub(crate) spec: MqttIngestSpec,
}

/// A message received and not yet acknowledged.
pub(crate) struct Incoming {
    pub(crate) topic: String,
    pub(crate) payload: Bytes,
    pub(crate) ack: AckToken,
}

/// What acknowledging a message needs (its packet id and QoS).
pub(crate) enum AckToken {
    V311(rumqttc::Publish),
    V5(Publish5),
}

#[derive(Clone)]
pub(crate) enum Client {
    V311(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

/// Largest packet the client library accepts from the broker. Payloads over the bridge's
/// `max_payload` but under this are dead letters; larger ones would break the connection
/// (3.1.1) or are dropped by the broker (5, which is told this limit): docs/INGEST.md.
pub(crate) const MAX_PACKET: usize = 16 << 20;

impl Client {
    /// Sends the PUBACK for `token` (queued behind earlier requests, so acks go in order).
    pub(crate) async fn ack(&self, token: &AckToken) -> Result<(), String> {
        match (self, token) {
            (Client::V311(c), AckToken::V311(p)) => c.ack(p).await.map_err(|e| e.to_string()),
            (Client::V5(c), AckToken::V5(p)) => c.ack(p).await.map_err(|e| e.to_string()),
            _ => Err("an ack token of the other protocol".into()),
        }
    }

    /// A clean DISCONNECT: the broker keeps the session (and queues for it) until it expires.
    pub(crate) async fn disconnect(&self) -> Result<(), String> {
        match self {
            Client::V311(c) => c.disconnect().await.map_err(|e| e.to_string()),
            Client::V5(c) => c.disconnect().await.map_err(|e| e.to_string()),
        }
    }
}

/// Connects (lazily: the event loop does it) and starts the task that drives the
/// connection: it reconnects after errors, subscribes after every CONNACK (the session
/// keeps the subscription; repeating it is harmless and covers a session the broker
/// dropped), and hands each PUBLISH to the returned channel. The task ends after the
/// bridge's DISCONNECT went out.
pub(crate) fn start(
    cfg: &SessionConfig,
    connected: Arc<AtomicBool>,
    queue: usize,
) -> (
    Client,
    mpsc::Receiver<Incoming>,
    tokio::task::JoinHandle<()>,
) {
    let spec = &cfg.spec;
    let (tx, rx) = mpsc::channel(queue);
    let filter = spec.topic.0.clone();
    let bridge = cfg.bridge.clone();
    // Room for one ack per message the bridge may hold, plus subscribe and disconnect.
    let requests = spec.max_unacked + 16;
    match spec.protocol {
        MqttProtocol::V311 => {
            let mut o = rumqttc::MqttOptions::new(&cfg.client_id, &spec.url.host, spec.url.port);
            o.set_clean_session(false)
                .set_manual_acks(true)
                .set_keep_alive(spec.keep_alive)
                .set_max_packet_size(MAX_PACKET, MAX_PACKET)
                .set_request_channel_capacity(requests);
            let (client, mut el) = rumqttc::AsyncClient::new(o, requests);
            let c = client.clone();
            let task = tokio::spawn(async move {
                use rumqttc::{Event, Outgoing, Packet};
                loop {
                    match el.poll().await {
                        Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                            tracing::info!(
                                bridge,
                                session_present = ack.session_present,
                                "Connected to the MQTT broker."
                            );
                            if let Err(e) = c.try_subscribe(&filter, rumqttc::QoS::AtLeastOnce) {
                                tracing::error!(bridge, error = %e, "Cannot subscribe.");
                            }
                        }
                        // Ready once the subscription stands: from then on nothing is missed.
                        Ok(Event::Incoming(Packet::SubAck(_))) => {
                            connected.store(true, Ordering::Relaxed);
                        }
                        Ok(Event::Incoming(Packet::Publish(p))) => {
                            let m = Incoming {
                                topic: p.topic.clone(),
                                payload: p.payload.clone(),
                                ack: AckToken::V311(p),
                            };
                            if tx.send(m).await.is_err() {
                                return;
                            }
                        }
                        Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
                        Ok(_) => {}
                        Err(e) => {
                            if lost(&bridge, &connected, &e.to_string(), &tx).await {
                                return;
                            }
                        }
                    }
                }
            });
            (Client::V311(client), rx, task)
        }
        MqttProtocol::V5 => {
            let mut o =
                rumqttc::v5::MqttOptions::new(&cfg.client_id, &spec.url.host, spec.url.port);
            let expiry = u32::try_from(spec.session_expiry.as_secs()).unwrap_or(u32::MAX);
            o.set_clean_start(false)
                .set_session_expiry_interval(Some(expiry))
                .set_manual_acks(true)
                .set_keep_alive(spec.keep_alive)
                .set_max_packet_size(Some(MAX_PACKET as u32))
                .set_receive_maximum(Some(u16::try_from(spec.max_unacked).unwrap_or(u16::MAX)))
                .set_request_channel_capacity(requests);
            let (client, mut el) = rumqttc::v5::AsyncClient::new(o, requests);
            let c = client.clone();
            let task = tokio::spawn(async move {
                use rumqttc::v5::mqttbytes::v5::Packet;
                use rumqttc::v5::Event;
                use rumqttc::Outgoing;
                loop {
                    match el.poll().await {
                        Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                            tracing::info!(
                                bridge,
                                session_present = ack.session_present,
                                "Connected to the MQTT broker."
                            );
                            if let Err(e) = c.try_subscribe(&filter, QoS5::AtLeastOnce) {
                                tracing::error!(bridge, error = %e, "Cannot subscribe.");
                            }
                        }
                        Ok(Event::Incoming(Packet::SubAck(_))) => {
                            connected.store(true, Ordering::Relaxed);
                        }
                        Ok(Event::Incoming(Packet::Publish(p))) => {
                            let m = Incoming {
                                topic: String::from_utf8_lossy(&p.topic).into_owned(),
                                payload: p.payload.clone(),
                                ack: AckToken::V5(p),
                            };
                            if tx.send(m).await.is_err() {
                                return;
                            }
                        }
                        Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
                        Ok(_) => {}
                        Err(e) => {
                            if lost(&bridge, &connected, &e.to_string(), &tx).await {
                                return;
                            }
                        }
                    }
                }
            });
            (Client::V5(client), rx, task)
        }
    }
}

/// After a connection error: marks the session down and waits before the event loop
/// reconnects. True when the bridge is gone (nobody reads the channel).
async fn lost(
    bridge: &str,
    connected: &AtomicBool,
    error: &str,
    tx: &mpsc::Sender<Incoming>,
) -> bool {
    if tx.is_closed() {
        return true;
    }
    if connected.swap(false, Ordering::Relaxed) {
        crate::metrics::METRICS
            .ingest_disconnects
            .with_label_values(&[bridge])
            .inc();
        tracing::warn!(
            bridge,
            error,
            "MQTT connection lost; reconnecting. Unacknowledged messages come again."
        );
    } else {
        tracing::debug!(bridge, error, "MQTT broker not reachable; retrying.");
    }
    // Retry backoff, not synchronisation: the broker is away.
    tokio::time::sleep(Duration::from_secs(1)).await;
    false
}

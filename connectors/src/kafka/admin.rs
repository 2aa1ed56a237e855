//! Creating the topics a topology needs, idempotently.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use super::client::{admin_config, ClientOptions, KafkaError};

/// A topic to create if it does not exist.
#[derive(Debug, Clone)]
pub struct TopicToCreate {
    pub name: String,
    pub partitions: i32,
    pub replication: i32,
    pub configs: Vec<(String, String)>,
}

/// What [`ensure_topics`] did with one topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicOutcome {
    /// Created with the requested partitions, replication and configs.
    Created,
    /// It was there already and was left as it is (its settings are whatever it was first
    /// created with).
    AlreadyExisted,
}

/// Creates the topics that are missing; existing ones are left as they are. Returns what
/// happened to each, in the order of `topics`.
pub async fn ensure_topics(
    opts: &ClientOptions,
    topics: &[TopicToCreate],
) -> Result<Vec<TopicOutcome>, KafkaError> {
    let brokers = opts.brokers.as_str();
    let admin: AdminClient<DefaultClientContext> = admin_config(opts).create()?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| {
            t.configs.iter().fold(
                NewTopic::new(
                    &t.name,
                    t.partitions,
                    TopicReplication::Fixed(t.replication),
                ),
                |n, (k, v)| n.set(k, v),
            )
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(new.iter(), &opts)
        .await
        .map_err(|source| KafkaError::Unreachable {
            brokers: brokers.to_string(),
            source,
        })?;
    let mut outcomes = std::collections::HashMap::new();
    for r in results {
        match r {
            Ok(topic) => {
                outcomes.insert(topic, TopicOutcome::Created);
            }
            Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => {
                outcomes.insert(topic, TopicOutcome::AlreadyExisted);
            }
            Err((topic, code)) => {
                return Err(KafkaError::CreateTopic {
                    topic,
                    brokers: brokers.to_string(),
                    reason: code.to_string(),
                })
            }
        }
    }
    topics
        .iter()
        .map(|t| {
            outcomes
                .get(&t.name)
                .copied()
                .ok_or_else(|| KafkaError::CreateTopic {
                    topic: t.name.clone(),
                    brokers: brokers.to_string(),
                    reason: "the broker's answer did not mention the topic".into(),
                })
        })
        .collect()
}

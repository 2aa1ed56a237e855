//! `sluice topics create FILE`.

use std::path::PathBuf;
use std::process::ExitCode;

use sluice_connectors::kafka::TopicOutcome;
use sluice_topology::TopicPlan;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create every topic and changelog the topology needs (existing ones are kept), and
    /// print what was set on each: partitions, replication, min.insync.replicas, configs.
    Create {
        /// The topology file.
        file: PathBuf,
    },
}

pub(crate) fn run(c: Command) -> anyhow::Result<ExitCode> {
    let Command::Create { file } = c;
    let loaded = sluice_topology::load(&file).map_err(|e| anyhow::anyhow!("{e}"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let done = rt.block_on(super::run::create_topics(&loaded.topology))?;
    let t = &loaded.topology;
    let (fluvio, kafka): (Vec<_>, Vec<_>) = done
        .iter()
        .partition(|(p, _)| t.broker_of(&p.name) == sluice_topology::Broker::Fluvio);
    let cluster = |on: &[&(TopicPlan, TopicOutcome)], at: &str| {
        let created = on
            .iter()
            .filter(|(_, o)| *o == TopicOutcome::Created)
            .count();
        println!(
            "{} topics on {at}: {created} created, {} already existed",
            on.len(),
            on.len() - created
        );
        for (plan, outcome) in on {
            println!("{}", describe(plan, *outcome));
        }
    };
    cluster(&kafka, &t.connections.brokers);
    if let Some(f) = &t.connections.fluvio {
        cluster(&fluvio, &format!("the Fluvio cluster at {}", f.endpoint));
    }
    Ok(ExitCode::SUCCESS)
}

/// One line per topic. An existing topic keeps what it was created with, which sluice does
/// not read back (some brokers answer DescribeConfigs only partly, docs/BROKER_GAPS.md), so
/// its line says what the topology asks for instead of claiming it was set.
fn describe(p: &TopicPlan, outcome: TopicOutcome) -> String {
    let settings = std::iter::once(format!("partitions={}", p.partitions))
        .chain(std::iter::once(format!("replication={}", p.replication)))
        .chain(p.all_configs().iter().map(|(k, v)| format!("{k}={v}")))
        .collect::<Vec<_>>()
        .join(" ");
    match outcome {
        TopicOutcome::Created => format!("{}: created: {settings}", p.name),
        TopicOutcome::AlreadyExisted => format!(
            "{}: already existed, left as it is; the topology asks for {settings}",
            p.name
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_names_every_setting_and_what_was_done() {
        let p = TopicPlan {
            name: "app-s-ids-changelog".into(),
            partitions: 4,
            replication: 3,
            min_insync_replicas: 2,
            configs: vec![("cleanup.policy", "compact".into())],
        };
        assert_eq!(
            describe(&p, TopicOutcome::Created),
            "app-s-ids-changelog: created: partitions=4 replication=3 min.insync.replicas=2 cleanup.policy=compact"
        );
        assert!(describe(&p, TopicOutcome::AlreadyExisted)
            .starts_with("app-s-ids-changelog: already existed, left as it is; the topology asks for partitions=4 replication=3 min.insync.replicas=2"));
    }
}

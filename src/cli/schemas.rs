//! `sluice schemas push|check`: the topology's `.avsc` files and the registry.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Register every topic's `schema:` under its `subject:`.
    Push {
        #[arg(long, default_value = "topology/iot.yaml")]
        topology: PathBuf,
    },
    /// Tell whether a changed `.avsc` is compatible with its subject, before pushing it.
    Check {
        /// The `.avsc` file.
        file: PathBuf,
        /// The subject it would be registered under.
        #[arg(long)]
        subject: String,
        /// Registry URL.
        #[arg(
            long,
            env = "SLUICE_REGISTRY_URL",
            default_value = "http://127.0.0.1:18081"
        )]
        registry: String,
    },
}

pub(crate) fn run(c: Command) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match c {
        Command::Push { topology } => {
            let loaded = sluice_topology::load(&topology).map_err(|e| anyhow::anyhow!("{e}"))?;
            let ids = rt.block_on(push_topology(&loaded))?;
            let mut ids: Vec<_> = ids.into_iter().collect();
            ids.sort();
            for (subject, id) in ids {
                println!("{subject}: id {id}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Check {
            file,
            subject,
            registry,
        } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let client = sluice_schemas::client::RegistryClient::new(&registry);
            let verdict = rt
                .block_on(client.check_compatibility(&subject, &text))
                .with_context(|| format!("asking the registry at {registry} about {subject}"))?;
            if verdict.is_compatible {
                println!("{}: compatible with {subject}", file.display());
                Ok(ExitCode::SUCCESS)
            } else {
                println!("{}: NOT compatible with {subject}", file.display());
                for m in verdict.messages {
                    println!("  - {m}");
                }
                Ok(ExitCode::from(1))
            }
        }
    }
}

/// Registers each topic's schema under its subject; returns subject -> id.
pub(crate) async fn push_topology(
    loaded: &sluice_topology::Loaded,
) -> anyhow::Result<HashMap<String, u32>> {
    let t = &loaded.topology;
    let client = crate::connections::registry_client(&t.connections.registry)?;
    let mut ids = HashMap::new();
    for spec in t.topics.values() {
        let (Some(subject), Some(schema)) = (&spec.subject, &spec.schema) else {
            continue;
        };
        let path = loaded.resolve(schema);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let id = client.register(subject, &text).await.with_context(|| {
            format!(
                "registering {} under {subject} with the schema registry at {}",
                path.display(),
                t.connections.registry
            )
        })?;
        ids.insert(subject.clone(), id);
    }
    // Pipeline outputs: the schema sluice derived from the operators.
    for stage in &t.stages {
        let sluice_topology::StageSpec::Pipeline(p) = &stage.spec else {
            continue;
        };
        let plan = p.plan();
        // A stage ending in a sink writes no topic, no subject; its branches do.
        let main = p
            .writes()
            .map(|_| (plan.output_schema, &plan.output_subject));
        let branches = plan
            .branches
            .iter()
            .map(|b| (b.output_schema, &b.output_subject));
        for (schema, subject) in main.into_iter().chain(branches) {
            // The full form (the canonical form would drop logical types).
            let text = serde_json::to_string(schema)?;
            let id = client.register(subject, &text).await.with_context(|| {
                format!(
                    "registering the output schema of stage {} under {subject} with the schema registry at {}",
                    stage.name, t.connections.registry
                )
            })?;
            ids.insert(subject.clone(), id);
        }
    }
    Ok(ids)
}

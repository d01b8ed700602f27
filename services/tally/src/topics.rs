//! `tally topics create`: every contract topic, idempotently.
use std::path::PathBuf;

use clap::Subcommand;
use serde::{Deserialize, Serialize};
use tally_contract::config::{load, ServiceConfig, KAFKA_BROKERS_ENV};
use tally_contract::kafka::{create_topics, KafkaConfig, TopicLayout, TopicOutcome};

use crate::error::TallyError;

#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Create every tally topic that is missing; existing topics are left as they are.
    Create {
        /// TOML file with a `[kafka]` section (brokers, topic_prefix, properties).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Partitions of each new topic.
        #[arg(long, default_value_t = TopicLayout::default().partitions)]
        partitions: i32,
        /// Replicas of each partition of each new topic.
        #[arg(long, default_value_t = TopicLayout::default().replication_factor)]
        replication_factor: i32,
    },
}

/// The part of a configuration file `tally topics` reads.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TopicsConfig {
    /// Kafka to create the topics in.
    #[serde(default)]
    pub(crate) kafka: KafkaConfig,
}

impl ServiceConfig for TopicsConfig {
    const ENV_ALIASES: &'static [(&'static str, &'static str)] =
        &[(KAFKA_BROKERS_ENV, "kafka.brokers")];
}

pub async fn run(command: TopicsCommand) -> Result<(), TallyError> {
    match command {
        TopicsCommand::Create {
            config,
            partitions,
            replication_factor,
        } => {
            if partitions < 1 || replication_factor < 1 {
                return Err(TallyError::Usage(
                    "--partitions and --replication-factor must be at least 1".into(),
                ));
            }
            let config: TopicsConfig = load(config.as_deref())?;
            let layout = TopicLayout {
                partitions,
                replication_factor,
            };
            for (name, outcome) in create_topics(&config.kafka, layout).await? {
                println!("{}", describe(&name, &outcome, layout));
            }
            Ok(())
        }
    }
}

fn describe(name: &str, outcome: &TopicOutcome, layout: TopicLayout) -> String {
    match outcome {
        TopicOutcome::Created => format!(
            "created {name} ({} partitions, replication factor {})",
            layout.partitions, layout.replication_factor
        ),
        TopicOutcome::AlreadyExisted { partitions }
            if *partitions == layout.partitions as usize =>
        {
            format!("exists  {name} ({partitions} partitions)")
        }
        TopicOutcome::AlreadyExisted { partitions } => format!(
            "exists  {name} ({partitions} partitions; {} were asked for, left as is)",
            layout.partitions
        ),
    }
}

//! `create_topics` against the real broker: every contract topic, idempotently.
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use tally_contract::kafka::{
    create_topics, partition_count, KafkaConfig, TopicLayout, TopicOutcome,
};
use tally_contract::topics::Topic;
use tally_tests::{delete_topics, kafka_config, require_kafka, unique_name};

#[tokio::test]
async fn creating_topics_twice_creates_once_and_then_finds_them() {
    require_kafka();
    let config = KafkaConfig {
        topic_prefix: format!("{}.", unique_name("it")),
        ..kafka_config()
    };
    let layout = TopicLayout {
        partitions: 4,
        replication_factor: 1,
    };

    let first = create_topics(&config, layout).await.expect("first run");
    let names: Vec<String> = Topic::ALL.iter().map(|t| config.topic(*t)).collect();
    assert_eq!(
        first.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
        names
    );
    assert!(
        first.iter().all(|(_, o)| *o == TopicOutcome::Created),
        "{first:?}"
    );

    let second = create_topics(&config, layout).await.expect("second run");
    assert!(
        second
            .iter()
            .all(|(_, o)| *o == TopicOutcome::AlreadyExisted { partitions: 4 }),
        "{second:?}"
    );

    let admin: AdminClient<DefaultClientContext> = config.client_config().create().unwrap();
    for name in &names {
        assert_eq!(partition_count(&admin, name).unwrap(), 4, "{name}");
    }
    delete_topics(names);
}

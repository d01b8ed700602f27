//! Which topic goes to which table, and how a record becomes a row: one small impl per table.
use clickhouse::{RowOwned, RowWrite};
use tally_contract::records::{
    Alert, DeployEvent, EnrichedLlmCall, LoopSignal, SpendWindow, TicketEvent,
};
use tally_contract::topics::Topic;
use tally_contract::{decode, ContractError};

use crate::rows::{AlertRow, DeployRow, LlmCallRow, LoopSignalRow, SpendWindowRow, TicketRow};

/// A ClickHouse table the sink fills from one topic.
pub trait SinkTable: Send + Sync + 'static {
    /// The row type, field for field as the table's columns.
    type Row: RowOwned
        + RowWrite
        + serde::Serialize
        + serde::de::DeserializeOwned
        + Clone
        + std::fmt::Debug
        + Send
        + Sync;
    /// Table name.
    const TABLE: &'static str;
    /// Topic it reads.
    const TOPIC: Topic;
    /// Decodes a record into its row.
    fn row(payload: &[u8], partition: i32, offset: i64) -> Result<Self::Row, ContractError>;
}

macro_rules! sink_table {
    ($name:ident, $table:literal, $topic:expr, $record:ty, $row:ty, |$value:ident, $partition:ident, $offset:ident| $make:expr) => {
        #[doc = concat!("`", $table, "` ← its topic.")]
        pub struct $name;

        impl SinkTable for $name {
            type Row = $row;
            const TABLE: &'static str = $table;
            const TOPIC: Topic = $topic;
            fn row(payload: &[u8], $partition: i32, $offset: i64) -> Result<$row, ContractError> {
                let $value: $record = decode(payload)?;
                Ok($make)
            }
        }
    };
}

sink_table!(
    LlmCalls,
    "llm_calls",
    Topic::LlmCallsEnriched,
    EnrichedLlmCall,
    LlmCallRow,
    |value, partition, offset| LlmCallRow::new(value, partition, offset)
);
sink_table!(
    Deploys,
    "deploys",
    Topic::Deploys,
    DeployEvent,
    DeployRow,
    |value, _partition, _offset| value.into()
);
sink_table!(
    Tickets,
    "tickets",
    Topic::Tickets,
    TicketEvent,
    TicketRow,
    |value, _partition, _offset| value.into()
);
sink_table!(
    SpendWindows,
    "spend_windows",
    Topic::SpendWindows,
    SpendWindow,
    SpendWindowRow,
    |value, _partition, _offset| value.into()
);
sink_table!(
    LoopSignals,
    "loop_signals",
    Topic::LoopSignals,
    LoopSignal,
    LoopSignalRow,
    |value, _partition, _offset| value.into()
);
sink_table!(
    Alerts,
    "alerts",
    Topic::Alerts,
    Alert,
    AlertRow,
    |value, _partition, _offset| value.into()
);

/// Every table name the sink knows, in the default order.
pub const ALL: [&str; 6] = [
    "llm_calls",
    "deploys",
    "tickets",
    "spend_windows",
    "loop_signals",
    "alerts",
];

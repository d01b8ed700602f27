//! Rust mirrors of the Avro records in `schemas/`: field for field, same names, same
//! nullability. The round-trip and golden-bytes tests keep them in step with the `.avsc` files.
//!
//! Timestamps are microseconds since the Unix epoch, UTC ([`Micros`]). Money is integer
//! nano-dollars, energy integer micro-watt-hours, CO2e integer micrograms.
mod derived;
mod events;
mod llm_call;

pub use derived::{Alert, DeadLetter, EnrichedLlmCall, LoopSignal, SpendWindow};
pub use events::{DeployEvent, TicketEvent};
pub use llm_call::LlmCall;

use serde::{Deserialize, Serialize};

/// Microseconds since the Unix epoch, UTC (Avro `timestamp-micros`).
pub type Micros = i64;

/// The most tokens one call may count in any token field (input, output, cache reads, cache
/// writes, reasoning), a thousand times the largest context window: ingest refuses a call
/// above it (422 naming the field). It keeps every per-call figure within an `i64` and every
/// sum exact (sums are 128-bit: see [`crate::wide`]).
pub const MAX_TOKENS_PER_CALL: i64 = 1_000_000_000;

macro_rules! avro_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $symbol:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $symbol)] $variant),+
        }

        impl $name {
            /// Every symbol, in schema order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The symbol as the schema spells it.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $symbol),+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($symbol => Ok($name::$variant),)+
                    other => Err(format!(
                        "unknown {} {other:?}; expected one of: {}",
                        stringify!($name),
                        [$($symbol),+].join(", ")
                    )),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

avro_enum!(
    /// Provider service tier; selects the catalogue's tier prices.
    ServiceTier { Standard => "standard", Batch => "batch", Priority => "priority", Flex => "flex" }
);
avro_enum!(
    /// Outcome of an LLM call.
    CallStatus { Ok => "ok", Error => "error" }
);
avro_enum!(
    /// Outcome of a deploy.
    DeployStatus { Succeeded => "succeeded", Failed => "failed", RolledBack => "rolled_back" }
);
avro_enum!(
    /// What kind of work a ticket is.
    TicketKind { Feature => "feature", Bug => "bug", Chore => "chore", Incident => "incident" }
);
avro_enum!(
    /// Ticket life-cycle status.
    TicketStatus { Opened => "opened", InProgress => "in_progress", Closed => "closed", Reopened => "reopened" }
);
avro_enum!(
    /// Which attribute a spend window is keyed by besides tenant and team.
    SpendDimension { Model => "model", User => "user", Workflow => "workflow" }
);
avro_enum!(
    /// Which runaway behaviour a loop signal reports.
    LoopSignalType {
        RetryStorm => "retry_storm",
        RepeatedToolCall => "repeated_tool_call",
        Cycle => "cycle",
        ContextGrowth => "context_growth",
        IdleBurn => "idle_burn",
        UsageSpike => "usage_spike",
    }
);
avro_enum!(
    /// Life-cycle of a loop signal.
    SignalState { Open => "open", Update => "update", Resolved => "resolved" }
);
avro_enum!(
    /// How urgently a person should look.
    Severity { Info => "info", Warning => "warning", Critical => "critical" }
);
avro_enum!(
    /// What raised an alert.
    AlertKind {
        BudgetThreshold => "budget_threshold",
        BudgetBurnRate => "budget_burn_rate",
        UsageReview => "usage_review",
        LoopSignal => "loop_signal",
    }
);
avro_enum!(
    /// Whether an alert is active.
    AlertState { Firing => "firing", Resolved => "resolved" }
);

macro_rules! avro_record {
    ($($ty:ident),+) => {
        $(impl crate::codec::AvroRecord for $ty {
            const RECORD_NAME: &'static str = stringify!($ty);
        })+
    };
}

avro_record!(
    LlmCall,
    DeployEvent,
    TicketEvent,
    EnrichedLlmCall,
    SpendWindow,
    LoopSignal,
    Alert,
    DeadLetter
);

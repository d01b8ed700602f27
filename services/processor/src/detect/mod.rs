//! Runaway-agent detection: pure logic, no I/O. The `detect` stage ([`crate::stages`]) feeds
//! it enriched calls in partition order and produces what it returns.
//!
//! Calls are grouped into sessions ([`session`]): by `session_id`, else `trace_id`, else user
//! × agent within an idle gap. Each signal is a small check in a file of its own that looks at
//! a session's latest steps ([`retry_storm`], [`repeated_tool_call`], [`cycle`],
//! [`context_growth`], [`idle_burn`]) or at a team workflow's token rate ([`usage_spike`]).
//! [`episode`] turns what the checks find into `LoopSignal`s and `Alert`s with a life-cycle:
//! open once, update while the loop continues (at most every `update_interval_secs`),
//! escalate to critical once, resolve after `quiet_period_secs` without a continuing call.
//! [`engine`] holds the state of one input partition and ties these together.
pub mod config;
pub mod context_growth;
pub mod cycle;
pub mod engine;
pub mod episode;
pub mod idle_burn;
pub mod repeated_tool_call;
pub mod retry_storm;
pub mod session;
pub mod usage_spike;

pub use config::DetectConfig;
pub use engine::{Detector, Emission};

#[cfg(test)]
mod tests;

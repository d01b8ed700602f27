//! Generated LLM traffic for demos, tests and benchmarks, deterministic for a seed.
//!
//! - [`sessions`]: one session of calls of a given shape — healthy ones (chat, coding agent,
//!   flaky provider, multi-agent team, batch job, retrieval assistant, steady workflow) and
//!   each runaway kind (retry storm, repeated tool call, cycle, context growth, idle burn,
//!   usage spike) — built by [`sessions::Gen`].
//! - [`traffic`]: a whole workload: teams of different sizes and habits in several regions,
//!   business-hours cycles, a mix of real catalogue models, deploys and tickets related to the
//!   teams' work, and injected runaway agents labelled in their tags.
//!
//! What it must not do: price or rate anything. It makes calls (tokens, models, ids, times)
//! and labels; what they cost is for `tally-accounting` (and the oracles that check it).
pub mod sessions;
pub mod traffic;

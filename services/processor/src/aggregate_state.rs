//! The aggregate stage's state in its changelog, one record per piece, written only when the
//! piece changed and deleted (a tombstone) when it goes: an open window (`w/<key>`), the
//! watermark (`wm`), a budget's period, a team's or user's trailing buckets, a review mark and
//! the newest event time (`b/<key>`), the business-metric totals of a label set (`m/<key>`,
//! [`crate::business`]). A restore reads the live records back; a transaction
//! writes what it changed, not the whole partition.
//!
//! A changelog written before (one snapshot of the partition per transaction, keyed by the
//! partition number) is read too; its key is deleted once its pieces are written.
use serde::{Deserialize, Serialize};
use tally_contract::records::Micros;

use crate::budgets::{BudgetKey, BudgetState};
use crate::business::MetricKey;
use crate::stages::PartitionState;
use crate::state_codec;
use crate::windows::WindowKey;

const WINDOW: &str = "w/";
const WATERMARK: &str = "wm";
const BUDGET: &str = "b/";
const METRICS: &str = "m/";

/// A budget period's record.
#[derive(Serialize, Deserialize)]
struct PeriodValue {
    spent: i128,
    fired: std::collections::BTreeSet<u32>,
}

/// One changelog record: key and value (`None` deletes).
pub type Change = (String, Option<Vec<u8>>);

/// A record's key: its prefix, then the piece's key as JSON. Keys stay as earlier tallies
/// wrote them, so a compacted changelog keeps one record per piece across upgrades.
fn key_of<T: Serialize>(prefix: &str, key: &T) -> String {
    let mut bytes = Vec::with_capacity(prefix.len() + 160);
    bytes.extend_from_slice(prefix.as_bytes());
    serde_json::to_writer(&mut bytes, key).expect("state serialises");
    String::from_utf8(bytes).expect("JSON is UTF-8")
}

/// A value's bytes ([`crate::state_codec`]).
fn value<T: Serialize>(value: &T) -> Vec<u8> {
    state_codec::to_bytes(value).expect("state serialises")
}

/// The records of what changed in `state` since the last call, and clears the marks.
pub fn take_changes(state: &mut PartitionState) -> Vec<Change> {
    let mut changes = Vec::new();
    for (key, totals) in state.windows.take_changes() {
        changes.push((key_of(WINDOW, &key), totals.as_ref().map(value)));
    }
    if std::mem::take(&mut state.windows.watermark_changed) {
        changes.push((WATERMARK.into(), Some(value(&state.windows.watermark))));
    }
    let budgets = &mut state.budgets;
    for key in std::mem::take(&mut budgets.changed) {
        let value = match &key {
            BudgetKey::Period(name, start) => {
                let id = (name.clone(), *start);
                let spent = budgets.spent_by_budget.get(&id);
                let fired = budgets.fired_by_budget.get(&id);
                (spent.is_some() || fired.is_some()).then(|| {
                    value(&PeriodValue {
                        spent: spent.copied().unwrap_or(0),
                        fired: fired.cloned().unwrap_or_default(),
                    })
                })
            }
            BudgetKey::Minutes(tenant, team) => budgets
                .minutes
                .get(&(tenant.clone(), team.clone()))
                .map(value),
            BudgetKey::Hours(tenant, user) => budgets
                .hours
                .get(&(tenant.clone(), user.clone()))
                .map(value),
            BudgetKey::Reviewed(tenant, user, day) => budgets
                .reviewed
                .contains(&(tenant.clone(), user.clone(), *day))
                .then(|| b"1".to_vec()),
            BudgetKey::Newest => Some(value(&budgets.newest)),
        };
        changes.push((key_of(BUDGET, &key), value));
    }
    let business = &mut state.business;
    for key in std::mem::take(&mut business.changed) {
        let totals = business.totals.get(&key).map(value);
        changes.push((key_of(METRICS, &key), totals));
    }
    changes
}

/// Applies one changelog record read back (the latest per key wins; `None` deletes).
/// Returns whether it was a whole-partition snapshot of the earlier format.
pub fn restore(
    state: &mut PartitionState,
    key: &str,
    value: Option<&[u8]>,
) -> Result<bool, String> {
    let bad = |e: serde_json::Error| format!("{key}: {e}");
    let in_key = |e: String| format!("{key}: {e}");
    if let Some(window) = key.strip_prefix(WINDOW) {
        let window: WindowKey = serde_json::from_str(window).map_err(bad)?;
        match value {
            Some(bytes) => {
                let totals = state_codec::from_bytes(bytes).map_err(in_key)?;
                state
                    .windows
                    .restore_window(window, totals)
                    .map_err(|e| format!("{key}: {e}"))?;
            }
            None => state.windows.forget_window(&window),
        }
    } else if key == WATERMARK {
        if let Some(bytes) = value {
            state.windows.watermark = state_codec::from_bytes::<Micros>(bytes).map_err(in_key)?;
        }
    } else if let Some(budget) = key.strip_prefix(BUDGET) {
        restore_budget(
            &mut state.budgets,
            serde_json::from_str(budget).map_err(bad)?,
            value,
        )
        .map_err(in_key)?;
    } else if let Some(metric) = key.strip_prefix(METRICS) {
        let metric: MetricKey = serde_json::from_str(metric).map_err(bad)?;
        match value {
            Some(bytes) => {
                state
                    .business
                    .totals
                    .insert(metric, state_codec::from_bytes(bytes).map_err(in_key)?);
            }
            None => {
                state.business.totals.remove(&metric);
            }
        }
    } else if key.parse::<i32>().is_ok() {
        // The earlier format: the whole partition, replaced by every newer snapshot.
        *state = match value {
            Some(bytes) => serde_json::from_slice(bytes).map_err(bad)?,
            None => PartitionState::default(),
        };
        return Ok(true);
    } else {
        return Err(format!("{key}: not a key of the aggregate state"));
    }
    Ok(false)
}

fn restore_budget(
    budgets: &mut BudgetState,
    key: BudgetKey,
    value: Option<&[u8]>,
) -> Result<(), String> {
    match key {
        BudgetKey::Period(name, start) => {
            let id = (name, start);
            match value {
                Some(bytes) => {
                    let period: PeriodValue = state_codec::from_bytes(bytes)?;
                    budgets.spent_by_budget.insert(id.clone(), period.spent);
                    budgets.fired_by_budget.insert(id, period.fired);
                }
                None => {
                    budgets.spent_by_budget.remove(&id);
                    budgets.fired_by_budget.remove(&id);
                }
            }
        }
        BudgetKey::Minutes(tenant, team) => match value {
            Some(bytes) => {
                budgets
                    .minutes
                    .insert((tenant, team), state_codec::from_bytes(bytes)?);
            }
            None => {
                budgets.minutes.remove(&(tenant, team));
            }
        },
        BudgetKey::Hours(tenant, user) => match value {
            Some(bytes) => {
                budgets
                    .hours
                    .insert((tenant, user), state_codec::from_bytes(bytes)?);
            }
            None => {
                budgets.hours.remove(&(tenant, user));
            }
        },
        BudgetKey::Reviewed(tenant, user, day) => match value {
            Some(_) => {
                budgets.reviewed.insert((tenant, user, day));
            }
            None => {
                budgets.reviewed.remove(&(tenant, user, day));
            }
        },
        BudgetKey::Newest => {
            if let Some(bytes) = value {
                budgets.newest = state_codec::from_bytes(bytes)?;
            }
        }
    }
    Ok(())
}

/// Marks every piece of `state` changed, so the next write puts all of it per key (after a
/// restore from a whole-partition snapshot).
pub fn mark_all(state: &mut PartitionState) {
    state.windows.mark_all_changed();
    state.windows.watermark_changed = true;
    let budgets = &mut state.budgets;
    let periods: Vec<BudgetKey> = budgets
        .spent_by_budget
        .keys()
        .chain(budgets.fired_by_budget.keys())
        .map(|(n, s)| BudgetKey::Period(n.clone(), *s))
        .collect();
    budgets.changed.extend(periods);
    let minutes: Vec<BudgetKey> = budgets
        .minutes
        .keys()
        .map(|(t, m)| BudgetKey::Minutes(t.clone(), m.clone()))
        .collect();
    budgets.changed.extend(minutes);
    let hours: Vec<BudgetKey> = budgets
        .hours
        .keys()
        .map(|(t, u)| BudgetKey::Hours(t.clone(), u.clone()))
        .collect();
    budgets.changed.extend(hours);
    let reviewed: Vec<BudgetKey> = budgets
        .reviewed
        .iter()
        .map(|(t, u, d)| BudgetKey::Reviewed(t.clone(), u.clone(), *d))
        .collect();
    budgets.changed.extend(reviewed);
    budgets.changed.insert(BudgetKey::Newest);
    let metrics: Vec<MetricKey> = state.business.totals.keys().cloned().collect();
    state.business.changed.extend(metrics);
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::budgets::{apply, BudgetConfig, Period, RolesConfig};
    use crate::windows::tests::enriched;
    use crate::windows::{self, WindowConfig};

    fn replay(changes: &[Change]) -> PartitionState {
        let mut state = PartitionState::default();
        for (key, value) in changes {
            restore(&mut state, key, value.as_deref()).unwrap();
        }
        state
    }

    fn comparable(mut state: PartitionState) -> PartitionState {
        state.windows.clear_changes();
        state.budgets.changed.clear();
        state.business.changed.clear();
        state
    }

    #[test]
    fn the_pieces_written_per_transaction_restore_the_state_and_closed_ones_are_deleted() {
        let config = WindowConfig {
            sizes_secs: vec![60],
            allowed_lateness_secs: 0,
            max_out_of_order_secs: 0,
            idle_close_secs: 0,
        };
        let budget: BudgetConfig = serde_json::from_value(serde_json::json!({
            "name": "b", "tenant": "acme", "team": "payments", "period": "day", "amount_usd": "1"
        }))
        .unwrap();
        assert_eq!(budget.period, Period::Day);
        let mut state = PartitionState::default();
        let mut log: Vec<Change> = Vec::new();
        for (i, at) in [10, 20, 70, 75, 200].into_iter().enumerate() {
            let mut call = enriched(&format!("c{i}"), at, "m", Some(1_000));
            call.call.tenant = "acme".into();
            call.call.team = "payments".into();
            windows::apply(&config, &mut state.windows, &call);
            apply(
                std::slice::from_ref(&budget),
                &RolesConfig::default(),
                &mut state.budgets,
                &call,
                0,
            );
            state.business.add(&call, 1_000);
            windows::take_parts(&mut state.windows, 0, i as i64, 0);
            let changes = take_changes(&mut state);
            assert!(changes.len() < 12, "only what changed: {changes:?}");
            log.extend(changes);
        }
        assert!(
            log.iter()
                .any(|(k, v)| k.starts_with(WINDOW) && v.is_none()),
            "closed windows are deleted"
        );
        let totals = state.business.totals.values().next().unwrap();
        assert_eq!(totals.calls.iter().sum::<i64>(), 5);
        assert_eq!(comparable(replay(&log)), comparable(state));
    }

    #[test]
    fn pieces_whose_values_an_earlier_tally_wrote_as_json_restore_the_same_state() {
        let config = WindowConfig {
            sizes_secs: vec![60, 3_600],
            allowed_lateness_secs: 0,
            max_out_of_order_secs: 0,
            idle_close_secs: 0,
        };
        let mut state = PartitionState::default();
        for (i, at) in [10, 20, 70].into_iter().enumerate() {
            let call = enriched(&format!("c{i}"), at, "m", Some(1_000 + i as i64));
            windows::apply(&config, &mut state.windows, &call);
            state.business.add(&call, 1_000);
        }
        windows::take_parts(&mut state.windows, 0, 0, 0);
        let binary = take_changes(&mut state);
        // The same pieces with their values as JSON, as tally wrote them before.
        let as_json: Vec<Change> = binary
            .iter()
            .map(|(key, bytes)| {
                let Some(bytes) = bytes.as_deref() else {
                    return (key.clone(), None);
                };
                let json = if key.starts_with(WINDOW) {
                    let totals: crate::windows::WindowTotals =
                        state_codec::from_bytes(bytes).unwrap();
                    serde_json::to_vec(&totals).unwrap()
                } else if key == WATERMARK {
                    serde_json::to_vec(&state_codec::from_bytes::<Micros>(bytes).unwrap()).unwrap()
                } else {
                    let totals: crate::business::Totals = state_codec::from_bytes(bytes).unwrap();
                    serde_json::to_vec(&totals).unwrap()
                };
                assert!(json.len() > bytes.len(), "{key}: binary is the smaller");
                (key.clone(), Some(json))
            })
            .collect();
        assert!(as_json.iter().any(|(k, _)| k.starts_with(WINDOW)));
        assert!(as_json.iter().any(|(k, _)| k.starts_with(METRICS)));
        assert_eq!(comparable(replay(&as_json)), comparable(replay(&binary)));
        assert_eq!(comparable(replay(&binary)), comparable(state));
    }

    /// A key that changed form would leave the earlier record of its piece in the compacted
    /// changelog, to be restored again after the piece was deleted: keys keep their form.
    #[test]
    fn keys_are_written_as_earlier_tallies_wrote_them() {
        let config = WindowConfig {
            sizes_secs: vec![60],
            allowed_lateness_secs: 0,
            max_out_of_order_secs: 0,
            idle_close_secs: 0,
        };
        let mut state = PartitionState::default();
        let mut call = enriched("c0", 10, "m", Some(1_000));
        call.call.team = "pay\"ments/eu".into();
        windows::apply(&config, &mut state.windows, &call);
        state.business.add(&call, 1_000);
        let keys: BTreeSet<String> = take_changes(&mut state)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        let window = r#"w/{"window_seconds":60,"window_start":0,"tenant":"acme","team":"pay\"ments/eu","dimension":"model","dimension_value":"m"}"#;
        assert!(keys.contains(window), "{keys:#?}");
        assert!(keys.contains("wm"), "{keys:#?}");
        assert!(
            keys.iter()
                .any(|k| k.starts_with(r#"m/{"tenant":"acme","team":"pay\"ments/eu""#)),
            "{keys:#?}"
        );
    }

    #[test]
    fn a_snapshot_of_the_earlier_format_is_read_then_replaced_by_pieces() {
        let mut snapshot = PartitionState::default();
        snapshot.windows.watermark = 42;
        snapshot.budgets.spent_by_budget.insert(("b".into(), 0), 7);
        let bytes = serde_json::to_vec(&snapshot).unwrap();
        let mut state = PartitionState::default();
        assert!(restore(&mut state, "3", Some(&bytes)).unwrap());
        mark_all(&mut state);
        let pieces = take_changes(&mut state);
        let again = replay(&pieces);
        assert_eq!(again.windows.watermark, 42);
        assert_eq!(again.budgets.spent_by_budget[&("b".into(), 0)], 7);
        assert!(restore(&mut state, "nonsense", None).is_err());
    }
}

//! The aggregate stage's state at scale: 1,000,000 open windows (keys), measured for the heap
//! they take (a counting allocator), the changelog bytes they write, and the time to restore
//! them from those records. `cargo bench -p tally-processor --bench state_restore`
//! (`TALLY_STATE_KEYS` to change the count, `TALLY_STATE_CALLS_PER_KEY` for windows of more
//! than one call each).
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use tally_processor::aggregate_state;
use tally_processor::stages::PartitionState;
use tally_processor::windows::{self, WindowConfig};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn main() {
    let keys: usize = std::env::var("TALLY_STATE_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    // One call per user of one team, over 1,000 minutes: each opens its user's window; the
    // model and the 1,000 workflows add a few.
    let config = WindowConfig {
        sizes_secs: vec![60],
        allowed_lateness_secs: 86_400 * 365,
        max_out_of_order_secs: 0,
        idle_close_secs: 0,
    };
    let template: tally_contract::records::EnrichedLlmCall =
        serde_json::from_str(include_str!("../../../tests/golden/EnrichedLlmCall.json")).unwrap();
    let per_key: usize = std::env::var("TALLY_STATE_CALLS_PER_KEY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let calls = keys * per_key;
    let before = LIVE.load(Ordering::Relaxed);
    let mut state = PartitionState::default();
    for n in 0..calls {
        let i = n % keys;
        let mut call = template.clone();
        call.call.user = Some(format!("user-{i}"));
        call.call.workflow = Some(format!("workflow-{}", i % 1_000));
        call.call.occurred_at = 1_795_428_000_000_000 + (i as i64 % 1_000) * 60_000_000;
        windows::apply(&config, &mut state.windows, &call);
    }
    let open = state.windows.windows.len();
    let records = aggregate_state::take_changes(&mut state);
    let heap = (LIVE.load(Ordering::Relaxed) - before) as f64;
    let changelog: usize = records
        .iter()
        .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
        .sum();
    // The records are not state: their bytes and the vector holding them are left out.
    let records_heap = (records
        .iter()
        .map(|(k, v)| k.capacity() + v.as_ref().map_or(0, Vec::capacity))
        .sum::<usize>()
        + records.capacity() * std::mem::size_of_val(&records[0])) as f64;
    let started = Instant::now();
    let mut restored = PartitionState::default();
    for (key, value) in &records {
        aggregate_state::restore(&mut restored, key, value.as_deref()).unwrap();
    }
    let restore = started.elapsed();
    assert_eq!(restored.windows.windows.len(), open);
    println!(
        "open windows {open} ({per_key} calls each): state {:.0} bytes a key in memory, changelog {:.0} bytes a key, restore {:.2} s ({:.0} keys/s)",
        (heap - records_heap) / open as f64,
        changelog as f64 / open as f64,
        restore.as_secs_f64(),
        open as f64 / restore.as_secs_f64()
    );
}

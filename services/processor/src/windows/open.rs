//! The open windows of one partition, kept small enough for millions of keys.
//!
//! A window key is four 32-bit numbers: the window (its size and start, numbered in
//! [`Windows`]), the tenant, the team, and the value with its dimension in the top two bits
//! (names kept once in [`Names`], numbered where their text starts). A window's twelve sums
//! are packed as LEB128 varints into 47 bytes while they are non-negative and fit (a hundred
//! calls of a heavy agent request); a window whose sums need more keeps them whole, 128-bit,
//! in a side table. Slots are 64 bytes in chunks of 4,096 (only the last one grows by doubling), found through
//! a hash table of slot numbers; the names are bytes in chunks too. What closed is dropped: the name table and the slots are
//! rebuilt from the open windows once they hold twice what those need, so the state stays
//! within about twice the open windows whatever the keys were.
use std::collections::{BTreeMap, BTreeSet};
use std::hash::BuildHasher;

use foldhash::fast::RandomState;
use hashbrown::hash_table::Entry;
use hashbrown::HashTable;
use tally_contract::records::{EnrichedLlmCall, Micros, SpendDimension};

use super::{WindowKey, WindowTotals};

/// Slots per chunk: only the last chunk grows by doubling, so at most half a chunk is idle.
const CHUNK_SLOTS: usize = 4_096;
/// Bytes of name text per chunk (a longer name gets a chunk of its own size).
const CHUNK_BYTES: usize = 1 << CHUNK_SHIFT;
const CHUNK_SHIFT: u32 = 20;
const CHUNK_MASK: u32 = (1 << CHUNK_SHIFT) - 1;
/// Bytes of packed sums a slot holds.
const PACKED_BYTES: usize = 47;
/// The `len` of a slot whose sums are in the side table (their index in its first 4 bytes).
const WIDE: u8 = u8::MAX;
/// The window number of an empty slot.
const EMPTY: u32 = u32::MAX;
/// Bits of a value's number that hold the name (the top two hold the dimension).
const NAME_BITS: u32 = 30;
/// Rebuilds wait until there are at least this many names (or free slots), so a small
/// state is not rebuilt at every transaction.
const REBUILD_FLOOR: usize = 512;

/// A window key in numbers; meaningful with the state's [`Names`] and [`Windows`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Key {
    window: u32,
    tenant: u32,
    team: u32,
    /// Dimension (top two bits) and name of the value.
    value: u32,
}

impl Key {
    fn dimension(self) -> SpendDimension {
        DIMENSIONS[(self.value >> NAME_BITS) as usize]
    }
    fn value_name(self) -> u32 {
        self.value & ((1 << NAME_BITS) - 1)
    }
}

const DIMENSIONS: [SpendDimension; 3] = [
    SpendDimension::Model,
    SpendDimension::User,
    SpendDimension::Workflow,
];

fn dimension_bits(dimension: SpendDimension) -> u32 {
    let index = DIMENSIONS
        .iter()
        .position(|d| *d == dimension)
        .expect("every dimension is listed") as u32;
    index << NAME_BITS
}

/// Names (tenants, teams, models, users, workflows), each kept once: its length as a varint,
/// then its bytes, in chunks of text. A name's number is where it starts (chunk × 1 MiB +
/// offset), so no table maps numbers to names; 30 bits of number allow about 1 GiB of live
/// names per partition (they are pruned to twice what the open windows use).
#[derive(Clone, Default)]
pub(crate) struct Names {
    /// Chunk `i` holds the names numbered from `i << CHUNK_SHIFT`.
    chunks: Vec<Vec<u8>>,
    count: usize,
    index: HashTable<u32>,
    hasher: RandomState,
}

fn name_at(chunks: &[Vec<u8>], id: u32) -> &str {
    let bytes = &chunks[(id >> CHUNK_SHIFT) as usize][(id & CHUNK_MASK) as usize..];
    let mut at = 0;
    let len = read_varint(bytes, &mut at) as usize;
    std::str::from_utf8(&bytes[at..at + len]).expect("stored from a str")
}

impl Names {
    /// The number of `name`, given one if it is new.
    pub(crate) fn id(&mut self, name: &str) -> u32 {
        let hash = self.hasher.hash_one(name);
        let Names {
            chunks,
            count,
            index,
            hasher,
        } = self;
        let entry = index.entry(
            hash,
            |&id| name_at(chunks, id) == name,
            |&id| hasher.hash_one(name_at(chunks, id)),
        );
        match entry {
            Entry::Occupied(found) => *found.get(),
            Entry::Vacant(vacant) => {
                let id = store(chunks, name);
                *count += 1;
                vacant.insert(id);
                id
            }
        }
    }

    /// The number of `name` if it has one.
    pub(crate) fn find(&self, name: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(name);
        self.index
            .find(hash, |&id| name_at(&self.chunks, id) == name)
            .copied()
    }

    /// The name numbered `id`.
    pub(crate) fn name(&self, id: u32) -> &str {
        name_at(&self.chunks, id)
    }

    /// How many names are held.
    pub(crate) fn len(&self) -> usize {
        self.count
    }
}

/// Appends `name` to the text and returns its number.
fn store(chunks: &mut Vec<Vec<u8>>, name: &str) -> u32 {
    let mut len = [0u8; 10];
    let mut width = 0;
    write_varint(&mut len, &mut width, name.len() as u64);
    let need = width + name.len();
    // A name starts within the first 1 MiB of its chunk; one longer than that has a chunk of
    // its own, which takes nothing after it.
    match chunks.last() {
        Some(last) if last.len() + need <= CHUNK_BYTES => {}
        // Grown by doubling up to a chunk (numbers are offsets, not addresses), so a
        // small state takes little.
        _ => chunks.push(Vec::new()),
    }
    let chunk = chunks.len() - 1;
    let text = &mut chunks[chunk];
    let id = (chunk << CHUNK_SHIFT) + text.len();
    assert!(
        id < 1 << NAME_BITS,
        "less than 1 GiB of names: they are pruned to twice the open windows'"
    );
    text.extend_from_slice(&len[..width]);
    text.extend_from_slice(name.as_bytes());
    id as u32
}

impl std::fmt::Debug for Names {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Names").field("len", &self.len()).finish()
    }
}

/// The windows (size and start) that have open keys, numbered; a number is reused once its
/// window has no key left.
#[derive(Debug, Clone, Default)]
struct Windows {
    by_time: BTreeMap<(i64, Micros), u32>,
    /// Size, start and open keys, by number.
    times: Vec<(i64, Micros, u32)>,
    free: Vec<u32>,
}

impl Windows {
    fn id(&mut self, size: i64, start: Micros) -> u32 {
        if let Some(id) = self.by_time.get(&(size, start)) {
            return *id;
        }
        let id = match self.free.pop() {
            Some(id) => {
                self.times[id as usize] = (size, start, 0);
                id
            }
            None => {
                self.times.push((size, start, 0));
                (self.times.len() - 1) as u32
            }
        };
        self.by_time.insert((size, start), id);
        id
    }

    fn opened(&mut self, id: u32) {
        self.times[id as usize].2 += 1;
    }

    fn closed(&mut self, id: u32) {
        let (size, start, open) = &mut self.times[id as usize];
        *open -= 1;
        if *open == 0 {
            self.by_time.remove(&(*size, *start));
            self.free.push(id);
        }
    }
}

/// A window's sums: packed varints, or (`len == WIDE`) the index of its whole totals.
#[derive(Clone, Copy)]
struct Packed {
    len: u8,
    bytes: [u8; PACKED_BYTES],
}

impl Packed {
    fn wide(index: u32) -> Packed {
        let mut bytes = [0; PACKED_BYTES];
        bytes[..4].copy_from_slice(&index.to_le_bytes());
        Packed { len: WIDE, bytes }
    }

    fn wide_index(&self) -> Option<usize> {
        (self.len == WIDE)
            .then(|| u32::from_le_bytes(self.bytes[..4].try_into().expect("4 bytes")) as usize)
    }

    /// `totals` packed, if every sum is non-negative, fits 64 bits and they all fit.
    fn pack(totals: &WindowTotals) -> Option<Packed> {
        let mut bytes = [0; PACKED_BYTES];
        let mut at = 0;
        for sum in fields(totals) {
            let sum = u64::try_from(sum).ok()?;
            if at + varint_width(sum) > PACKED_BYTES {
                return None;
            }
            write_varint(&mut bytes, &mut at, sum);
        }
        Some(Packed {
            len: at as u8,
            bytes,
        })
    }

    fn unpack(&self) -> WindowTotals {
        let mut at = 0;
        let mut next = || i128::from(read_varint(&self.bytes, &mut at));
        let calls = next() as i64;
        WindowTotals {
            calls,
            unpriced_calls: next() as i64,
            input_tokens: next(),
            output_tokens: next(),
            cache_read_tokens: next(),
            cache_write_tokens: next(),
            reasoning_tokens: next(),
            cost_nanos: next(),
            energy_uwh_central: next(),
            co2e_ug_low: next(),
            co2e_ug_central: next(),
            co2e_ug_high: next(),
        }
    }
}

/// The sums in the order they are packed.
fn fields(t: &WindowTotals) -> [i128; 12] {
    [
        t.calls.into(),
        t.unpriced_calls.into(),
        t.input_tokens,
        t.output_tokens,
        t.cache_read_tokens,
        t.cache_write_tokens,
        t.reasoning_tokens,
        t.cost_nanos,
        t.energy_uwh_central,
        t.co2e_ug_low,
        t.co2e_ug_central,
        t.co2e_ug_high,
    ]
}

fn varint_width(value: u64) -> usize {
    ((64 - value.leading_zeros() as usize).max(1)).div_ceil(7)
}

fn write_varint(out: &mut [u8], at: &mut usize, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out[*at] = byte;
            *at += 1;
            return;
        }
        out[*at] = byte | 0x80;
        *at += 1;
    }
}

fn read_varint(bytes: &[u8], at: &mut usize) -> u64 {
    let mut value = 0u64;
    let mut shift = 0;
    loop {
        let byte = bytes[*at];
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return value;
        }
        shift += 7;
    }
}

#[derive(Clone, Copy)]
struct Slot {
    key: Key,
    sums: Packed,
}

const EMPTY_SLOT: Slot = Slot {
    key: Key {
        window: EMPTY,
        tenant: 0,
        team: 0,
        value: 0,
    },
    sums: Packed {
        len: 0,
        bytes: [0; PACKED_BYTES],
    },
};

/// The open windows of a partition and their sums.
#[derive(Clone, Default)]
pub struct OpenWindows {
    names: Names,
    windows: Windows,
    chunks: Vec<Vec<Slot>>,
    free: Vec<u32>,
    index: HashTable<u32>,
    hasher: RandomState,
    wide: Vec<WindowTotals>,
    wide_free: Vec<u32>,
    /// Names held after the last rebuild.
    names_at_rebuild: usize,
}

fn slot(chunks: &[Vec<Slot>], id: u32) -> &Slot {
    &chunks[id as usize / CHUNK_SLOTS][id as usize % CHUNK_SLOTS]
}

fn slot_mut(chunks: &mut [Vec<Slot>], id: u32) -> &mut Slot {
    &mut chunks[id as usize / CHUNK_SLOTS][id as usize % CHUNK_SLOTS]
}

impl OpenWindows {
    /// The number of a name, for [`OpenWindows::key`].
    pub(crate) fn name_id(&mut self, name: &str) -> u32 {
        self.names.id(name)
    }

    /// The key of a window, numbering its window if it is new (a key made so must be added).
    pub(crate) fn key(
        &mut self,
        size: i64,
        start: Micros,
        tenant: u32,
        team: u32,
        dimension: SpendDimension,
        value: u32,
    ) -> Key {
        Key {
            window: self.windows.id(size, start),
            tenant,
            team,
            value: dimension_bits(dimension) | value,
        }
    }

    /// The key of `key` if its window is open.
    fn find_key(&self, key: &WindowKey) -> Option<Key> {
        let dimension: SpendDimension = key.dimension.parse().ok()?;
        Some(Key {
            window: *self
                .windows
                .by_time
                .get(&(key.window_seconds, key.window_start))?,
            tenant: self.names.find(&key.tenant)?,
            team: self.names.find(&key.team)?,
            value: dimension_bits(dimension) | self.names.find(&key.dimension_value)?,
        })
    }

    /// The key in names.
    pub(crate) fn window_key(&self, key: Key) -> WindowKey {
        let (size, start, _) = self.windows.times[key.window as usize];
        WindowKey {
            window_seconds: size,
            window_start: start,
            tenant: self.names.name(key.tenant).into(),
            team: self.names.name(key.team).into(),
            dimension: key.dimension().as_str().into(),
            dimension_value: self.names.name(key.value_name()).into(),
        }
    }

    fn find_slot(&self, key: Key) -> Option<u32> {
        let chunks = &self.chunks;
        self.index
            .find(self.hasher.hash_one(key), |&id| slot(chunks, id).key == key)
            .copied()
    }

    /// Adds `call` to the window `key`, opening it if needed.
    pub(crate) fn add(&mut self, key: Key, call: &EnrichedLlmCall) {
        let id = match self.find_slot(key) {
            Some(id) => id,
            None => self.open(key, &WindowTotals::default()),
        };
        let sums = &mut slot_mut(&mut self.chunks, id).sums;
        match sums.wide_index() {
            Some(index) => self.wide[index].add(call),
            None => {
                let mut totals = sums.unpack();
                totals.add(call);
                *sums = pack_or_keep_whole(&mut self.wide, &mut self.wide_free, totals);
            }
        }
    }

    /// Puts a window with `totals` (replacing what it had); refuses a dimension it does
    /// not know.
    pub(crate) fn insert(&mut self, key: WindowKey, totals: WindowTotals) -> Result<(), String> {
        let dimension: SpendDimension = key
            .dimension
            .parse()
            .map_err(|_| format!("a window of an unknown dimension {:?}", key.dimension))?;
        let (size, start) = (key.window_seconds, key.window_start);
        let key = Key {
            window: self.windows.id(size, start),
            tenant: self.names.id(&key.tenant),
            team: self.names.id(&key.team),
            value: dimension_bits(dimension) | self.names.id(&key.dimension_value),
        };
        if let Some(id) = self.find_slot(key) {
            self.release(id);
        }
        // Numbered again: releasing the window's only key may have freed its number.
        let key = Key {
            window: self.windows.id(size, start),
            ..key
        };
        self.open(key, &totals);
        Ok(())
    }

    /// Opens a slot for `key` with `totals`.
    fn open(&mut self, key: Key, totals: &WindowTotals) -> u32 {
        let sums = pack_or_keep_whole(&mut self.wide, &mut self.wide_free, totals.clone());
        let filled = Slot { key, sums };
        let id = match self.free.pop() {
            Some(id) => {
                *slot_mut(&mut self.chunks, id) = filled;
                id
            }
            None => {
                if self.chunks.last().is_none_or(|c| c.len() == CHUNK_SLOTS) {
                    // Grown by doubling up to a chunk, so a small state takes little.
                    self.chunks.push(Vec::new());
                }
                let last = self.chunks.len() - 1;
                self.chunks[last].push(filled);
                (last * CHUNK_SLOTS + self.chunks[last].len() - 1) as u32
            }
        };
        let (chunks, hasher) = (&self.chunks, &self.hasher);
        self.index
            .insert_unique(hasher.hash_one(key), id, |&other| {
                hasher.hash_one(slot(chunks, other).key)
            });
        self.windows.opened(key.window);
        id
    }

    /// Empties slot `id`, leaving its window number valid until the caller is done with it
    /// only if other keys still hold it.
    fn release(&mut self, id: u32) -> WindowTotals {
        let Slot { key, sums } = *slot(&self.chunks, id);
        if let Ok(found) = self
            .index
            .find_entry(self.hasher.hash_one(key), |&other| other == id)
        {
            found.remove();
        }
        let totals = match sums.wide_index() {
            Some(index) => {
                self.wide_free.push(index as u32);
                std::mem::take(&mut self.wide[index])
            }
            None => sums.unpack(),
        };
        *slot_mut(&mut self.chunks, id) = EMPTY_SLOT;
        self.free.push(id);
        self.windows.closed(key.window);
        totals
    }

    /// The totals of an open window.
    pub(crate) fn totals(&self, key: Key) -> Option<WindowTotals> {
        let id = self.find_slot(key)?;
        Some(self.sums_of(slot(&self.chunks, id)))
    }

    fn sums_of(&self, slot: &Slot) -> WindowTotals {
        match slot.sums.wide_index() {
            Some(index) => self.wide[index].clone(),
            None => slot.sums.unpack(),
        }
    }

    /// The totals of an open window, by names.
    pub fn get(&self, key: &WindowKey) -> Option<WindowTotals> {
        self.totals(self.find_key(key)?)
    }

    /// Removes an open window, by names.
    pub fn remove(&mut self, key: &WindowKey) -> Option<WindowTotals> {
        let id = self.find_slot(self.find_key(key)?)?;
        Some(self.release(id))
    }

    /// Removes the windows of `size` that start at or before `last_start`, in names.
    pub(crate) fn close_through(
        &mut self,
        size: i64,
        last_start: Micros,
    ) -> Vec<(Key, WindowKey, WindowTotals)> {
        let closing: BTreeSet<u32> = self
            .windows
            .by_time
            .range((size, Micros::MIN)..=(size, last_start))
            .map(|(_, id)| *id)
            .collect();
        // The watermark moves with nearly every call; the slots are scanned only when a
        // window closes (once per window size and start).
        if closing.is_empty() {
            return Vec::new();
        }
        self.close_where(|key| closing.contains(&key.window))
    }

    /// Removes every open window.
    pub(crate) fn close_all(&mut self) -> Vec<(Key, WindowKey, WindowTotals)> {
        self.close_where(|_| true)
    }

    fn close_where(&mut self, closes: impl Fn(Key) -> bool) -> Vec<(Key, WindowKey, WindowTotals)> {
        if self.is_empty() {
            return Vec::new();
        }
        let ids: Vec<u32> = self
            .slots()
            .filter(|(_, s)| closes(s.key))
            .map(|(id, _)| id)
            .collect();
        ids.into_iter()
            .map(|id| {
                let key = slot(&self.chunks, id).key;
                // Named before the slot goes: its window's number may be freed with it.
                let named = self.window_key(key);
                (key, named, self.release(id))
            })
            .collect()
    }

    fn slots(&self) -> impl Iterator<Item = (u32, &Slot)> {
        self.chunks
            .iter()
            .flatten()
            .enumerate()
            .filter(|(_, s)| s.key.window != EMPTY)
            .map(|(id, s)| (id as u32, s))
    }

    /// The open windows' keys in numbers.
    pub(crate) fn keys_in_numbers(&self) -> impl Iterator<Item = Key> + '_ {
        self.slots().map(|(_, s)| s.key)
    }

    /// The open windows, in names (unordered).
    pub fn iter(&self) -> impl Iterator<Item = (WindowKey, WindowTotals)> + '_ {
        self.slots()
            .map(|(_, s)| (self.window_key(s.key), self.sums_of(s)))
    }

    /// The open windows' keys, in names (unordered).
    pub fn keys(&self) -> impl Iterator<Item = WindowKey> + '_ {
        self.slots().map(|(_, s)| self.window_key(s.key))
    }

    /// How many windows are open.
    pub fn len(&self) -> usize {
        self.slots_held() - self.free.len()
    }

    fn slots_held(&self) -> usize {
        self.chunks.iter().map(Vec::len).sum()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many names are held.
    pub fn names_held(&self) -> usize {
        self.names.len()
    }

    /// Rebuilds the state from its open windows when the names or the free slots are more
    /// than the open windows need (twice, and at least [`REBUILD_FLOOR`]), so closed
    /// windows' names and slots are let go. `also` (keys the caller holds in numbers) are
    /// renumbered with the rest; they must be open windows.
    pub(crate) fn shrink(&mut self, also: &mut std::collections::HashSet<Key, RandomState>) {
        let names_grew = self.names.len() >= 2 * self.names_at_rebuild.max(REBUILD_FLOOR);
        let slots_idle = self.free.len() >= REBUILD_FLOOR.max(self.len())
            || self.wide_free.len() >= REBUILD_FLOOR.max(self.wide.len() / 2);
        if !names_grew && !slots_idle {
            return;
        }
        let mut rebuilt = OpenWindows::default();
        // Names are numbered where their text starts, so the old numbers are sparse.
        let mut renamed = std::collections::HashMap::<u32, u32, RandomState>::default();
        let mut rename = |id: u32, into: &mut OpenWindows| -> u32 {
            *renamed
                .entry(id)
                .or_insert_with(|| into.names.id(self.names.name(id)))
        };
        let mut renumbered = BTreeMap::new();
        for (_, old) in self.slots() {
            let (size, start, _) = self.windows.times[old.key.window as usize];
            let key = Key {
                window: rebuilt.windows.id(size, start),
                tenant: rename(old.key.tenant, &mut rebuilt),
                team: rename(old.key.team, &mut rebuilt),
                value: (old.key.value & !((1 << NAME_BITS) - 1))
                    | rename(old.key.value_name(), &mut rebuilt),
            };
            rebuilt.open(key, &self.sums_of(old));
            if also.contains(&old.key) {
                renumbered.insert(old.key, key);
            }
        }
        *also = also
            .iter()
            .filter_map(|key| renumbered.get(key).copied())
            .collect();
        rebuilt.names_at_rebuild = rebuilt.names.len();
        *self = rebuilt;
    }
}

/// `totals` packed, or kept whole in the side table `wide` when they do not pack.
fn pack_or_keep_whole(
    wide: &mut Vec<WindowTotals>,
    free: &mut Vec<u32>,
    totals: WindowTotals,
) -> Packed {
    if let Some(packed) = Packed::pack(&totals) {
        return packed;
    }
    let index = match free.pop() {
        Some(index) => {
            wide[index as usize] = totals;
            index
        }
        None => {
            wide.push(totals);
            (wide.len() - 1) as u32
        }
    };
    Packed::wide(index)
}

impl PartialEq for OpenWindows {
    /// The same windows with the same sums, however numbered.
    fn eq(&self, other: &OpenWindows) -> bool {
        let sorted = |w: &OpenWindows| w.iter().collect::<BTreeMap<_, _>>();
        sorted(self) == sorted(other)
    }
}

impl std::fmt::Debug for OpenWindows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.iter().collect::<BTreeMap<_, _>>())
            .finish()
    }
}

impl serde::Serialize for OpenWindows {
    /// As a list of `[key, totals]` pairs in key order (the earlier snapshots' format).
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter().collect::<BTreeMap<_, _>>())
    }
}

impl<'de> serde::Deserialize<'de> for OpenWindows {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut windows = OpenWindows::default();
        for (key, totals) in Vec::<(WindowKey, WindowTotals)>::deserialize(deserializer)? {
            windows
                .insert(key, totals)
                .map_err(serde::de::Error::custom)?;
        }
        Ok(windows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(sum: i128) -> WindowTotals {
        WindowTotals {
            calls: 3,
            unpriced_calls: 1,
            input_tokens: sum,
            output_tokens: sum,
            cache_read_tokens: 0,
            cache_write_tokens: 0,
            reasoning_tokens: 0,
            cost_nanos: sum,
            energy_uwh_central: 5,
            co2e_ug_low: 6,
            co2e_ug_central: 7,
            co2e_ug_high: 8,
        }
    }

    #[test]
    fn sums_pack_exactly_and_those_that_do_not_fit_are_refused() {
        for sum in [0, 1, 127, 128, 110_400_000, u64::MAX as i128] {
            let packed = Packed::pack(&totals(sum)).unwrap();
            assert_eq!(packed.unpack(), totals(sum));
        }
        // Beyond 64 bits, negative, or too many bytes: whole, in the side table.
        assert!(Packed::pack(&totals(u64::MAX as i128 + 1)).is_none());
        assert!(Packed::pack(&totals(-1)).is_none());
        let mut big = totals(u64::MAX as i128);
        big.energy_uwh_central = u64::MAX as i128;
        assert!(Packed::pack(&big).is_none());
    }

    #[test]
    fn names_are_found_by_their_numbers_across_chunks_and_long_names() {
        let mut names = Names::default();
        let long = "x".repeat(3 * CHUNK_BYTES / 2);
        let mut ids = Vec::new();
        for n in 0..200_000 {
            let name = match n {
                1_000 | 150_000 => long.clone() + &n.to_string(),
                _ => format!("user-{n}"),
            };
            ids.push((names.id(&name), name));
        }
        assert!(
            names.chunks.len() > 3,
            "several chunks: {}",
            names.chunks.len()
        );
        assert_eq!(names.len(), 200_000);
        for (id, name) in &ids {
            assert_eq!(names.name(*id), name);
            assert_eq!(names.find(name), Some(*id));
            assert_eq!(names.id(name), *id, "an old name keeps its number");
        }
        assert_eq!(names.find("nobody"), None);
    }

    fn key(size: i64, start: i64, user: &str) -> WindowKey {
        WindowKey {
            window_seconds: size,
            window_start: start,
            tenant: "t".into(),
            team: "payments".into(),
            dimension: "user".into(),
            dimension_value: user.into(),
        }
    }

    #[test]
    fn windows_are_found_by_names_replaced_removed_and_closed_by_time() {
        let mut open = OpenWindows::default();
        open.insert(key(60, 0, "ann"), totals(1)).unwrap();
        open.insert(key(60, 60, "ann"), totals(2)).unwrap();
        open.insert(key(3_600, 0, "bob"), totals(i128::MAX))
            .unwrap();
        open.insert(key(60, 0, "ann"), totals(4)).unwrap(); // replaces
        assert_eq!(open.len(), 3);
        assert_eq!(open.get(&key(60, 0, "ann")), Some(totals(4)));
        assert_eq!(open.get(&key(3_600, 0, "bob")), Some(totals(i128::MAX)));
        assert_eq!(open.get(&key(60, 0, "bob")), None);
        let closed = open.close_through(60, 0);
        assert_eq!(closed.len(), 1);
        assert_eq!(
            (&closed[0].1, &closed[0].2),
            (&key(60, 0, "ann"), &totals(4))
        );
        assert_eq!(open.remove(&key(3_600, 0, "bob")), Some(totals(i128::MAX)));
        assert_eq!(
            open.iter().collect::<Vec<_>>(),
            [(key(60, 60, "ann"), totals(2))]
        );
    }

    #[test]
    fn a_rebuild_keeps_the_open_windows_and_lets_the_rest_go() {
        let mut open = OpenWindows::default();
        for n in 0..5_000i64 {
            open.insert(key(60, n * 60, &format!("user-{n}")), totals(n.into()))
                .unwrap();
        }
        let closed = open.close_through(60, 4_900 * 60);
        assert_eq!(closed.len(), 4_901);
        let kept = open.iter().collect::<BTreeMap<_, _>>();
        let mut held: std::collections::HashSet<Key, RandomState> =
            [open.find_key(&key(60, 4_999 * 60, "user-4999")).unwrap()]
                .into_iter()
                .collect();
        open.shrink(&mut held);
        assert_eq!(
            open.names_held(),
            2 + 99,
            "tenant, team and the 99 open users"
        );
        assert_eq!(open.slots_held(), 99);
        assert_eq!(open.iter().collect::<BTreeMap<_, _>>(), kept);
        assert_eq!(
            held.into_iter()
                .map(|k| open.window_key(k))
                .collect::<Vec<_>>(),
            [key(60, 4_999 * 60, "user-4999")]
        );
    }
}

//! One schema check across every place a record's fields are written by hand.
//!
//! A record's fields are spelled out in six places: the Avro schema (`schemas/*.avsc`, the
//! contract), the Rust record type (`tally_contract::records`), the sink's row type
//! (`tally_sink::rows`), the ClickHouse table (`sql/migrations/`, read back from
//! `system.columns` of a freshly migrated database), the embedded store's DataFusion table
//! (`tally_embedded::store::schema`, traced from the row type with overrides for timestamps and
//! wide integers) and the table `tally query` shows (a view over the stored one). They are kept
//! in step by hand, and a field added to one and forgotten in another is dropped silently
//! (Avro resolution and serde skip fields they do not know) or fails only at the first insert.
//!
//! Each place is read into plain columns (name and a type in a small common vocabulary, [`Ty`]),
//! and one pure function, [`compare`], lines them up along the real mapping (Avro record →
//! Rust record → row → ClickHouse → DataFusion → `tally query`). The mapping is not one to one;
//! every intended difference is one entry of [`ALLOWED`], with its reason, and any other
//! difference — or an entry that no longer happens — is reported, all of them at once. Two
//! representation rules are not differences but how a place spells a type (see
//! [`Place::sees`]): Rust holds a timestamp as an `i64` (`Micros`), and rows and tables hold an
//! Avro enum as its symbol, a string.
//!
//! The report views of both stores (`sql/migrations/0003_views.sql` and its successors,
//! `sql/datafusion/`) are compared by column names: planning them in DataFusion already fails
//! on a column that does not exist, and their numeric types differ by dialect (a ClickHouse
//! `count()` is a `UInt64`, DataFusion's an `Int64`).
//!
//! The second test shows the check fails: a field added to the Avro schema of `LlmCall` only,
//! a column added to a copy of the ClickHouse columns only, a type changed there, and an
//! allowed difference that stopped happening, are each reported as exactly one new mismatch.
mod gather;
mod trace;

use std::collections::{BTreeSet, HashSet};
use std::fmt;

use serde_json::Value as Json;
use tally_contract::records::{
    Alert, DeadLetter, DeployEvent, EnrichedLlmCall, LlmCall, LoopSignal, SpendWindow, TicketEvent,
};
use tally_contract::AvroRecord;
use tally_sink::migrate::{migrate, Migration};
use tally_sink::tables::{self, SinkTable};
use tally_tests::TestDatabase;

use gather::{
    arrow_columns, avro_fields, clickhouse_relations, clickhouse_type, record_fields, row_fields,
    Relations,
};

// ---- The vocabulary ---------------------------------------------------------------------

/// A column type, as every place can say it.
#[derive(Debug, Clone, PartialEq)]
pub enum Ty {
    String,
    Bytes,
    Bool,
    Int32,
    Int64,
    /// A wide integer: Avro `decimal(38, 0)`, Rust `i128`, ClickHouse `Int128`, Arrow
    /// `Decimal128(38, 0)` (see `tally_contract::wide`).
    Int128,
    Float64,
    /// Microseconds since the epoch, UTC: Avro `timestamp-micros`, ClickHouse
    /// `DateTime64(6, 'UTC')`, Arrow `Timestamp(µs, "UTC")`.
    TimestampMicros,
    Decimal(u8, i8),
    /// An enum and its symbols.
    Enum(Vec<String>),
    Nullable(Box<Ty>),
    Array(Box<Ty>),
    Map(Box<Ty>, Box<Ty>),
    Record(Vec<Column>),
    /// Not compared: a report view's column, typed differently by each SQL dialect.
    Unchecked,
    /// Anything else, as the place spells it.
    Other(String),
}

impl Ty {
    /// Whether a place that should say `self` says `found`.
    fn agrees(&self, found: &Ty) -> bool {
        *self == Ty::Unchecked || *found == Ty::Unchecked || self == found
    }

    /// The same type with `rule` applied to it and to every type inside it.
    fn map(&self, rule: &impl Fn(&Ty) -> Option<Ty>) -> Ty {
        if let Some(ty) = rule(self) {
            return ty;
        }
        let inner = |t: &Ty| Box::new(t.map(rule));
        match self {
            Ty::Nullable(t) => Ty::Nullable(inner(t)),
            Ty::Array(t) => Ty::Array(inner(t)),
            Ty::Map(k, v) => Ty::Map(inner(k), inner(v)),
            Ty::Record(columns) => Ty::Record(
                columns
                    .iter()
                    .map(|c| Column::new(&c.name, c.ty.map(rule)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Ty::String => write!(f, "string"),
            Ty::Bytes => write!(f, "bytes"),
            Ty::Bool => write!(f, "bool"),
            Ty::Int32 => write!(f, "int32"),
            Ty::Int64 => write!(f, "int64"),
            Ty::Int128 => write!(f, "int128"),
            Ty::Float64 => write!(f, "float64"),
            Ty::TimestampMicros => write!(f, "timestamp-micros"),
            Ty::Decimal(p, s) => write!(f, "decimal({p}, {s})"),
            Ty::Enum(symbols) => write!(f, "enum({})", symbols.join("|")),
            Ty::Nullable(t) => write!(f, "nullable {t}"),
            Ty::Array(t) => write!(f, "array<{t}>"),
            Ty::Map(k, v) => write!(f, "map<{k}, {v}>"),
            Ty::Record(columns) => write!(f, "record of {} fields", columns.len()),
            Ty::Unchecked => write!(f, "(not compared)"),
            Ty::Other(text) => write!(f, "{text} (no word for it)"),
        }
    }
}

/// A field or column.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub ty: Ty,
}

impl Column {
    pub fn new(name: &str, ty: Ty) -> Column {
        Column {
            name: name.to_string(),
            ty,
        }
    }
}

/// Where a field is written, in the order data flows through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Place {
    /// `schemas/<Record>.avsc`.
    Avro,
    /// `tally_contract::records`.
    Record,
    /// `tally_sink::rows`.
    Row,
    /// `system.columns` after `sql/migrations/`.
    ClickHouse,
    /// `tally_embedded::store::schema`: the Parquet files' schema.
    DataFusion,
    /// The table `tally query` shows (`tally_embedded::query`).
    Query,
}

use Place::{Avro, ClickHouse, DataFusion, Query, Record, Row};

impl Place {
    /// Rust types cannot say timestamp: a reference type's timestamps are `int64` there.
    fn is_rust(self) -> bool {
        matches!(self, Record | Row)
    }

    /// From the row on, an enum is its symbol (`as_str()`), a string.
    fn is_table(self) -> bool {
        matches!(self, Row | ClickHouse | DataFusion | Query)
    }

    /// The type this place should have for a field whose reference type is `ty`.
    fn sees(self, ty: &Ty) -> Ty {
        ty.map(&|t| match t {
            Ty::TimestampMicros if self.is_rust() => Some(Ty::Int64),
            Ty::Enum(_) if self.is_table() => Some(Ty::String),
            _ => None,
        })
    }
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Avro => "the Avro schema",
            Record => "the Rust record",
            Row => "the row type",
            ClickHouse => "system.columns",
            DataFusion => "the DataFusion table",
            Query => "tally query's table",
        })
    }
}

// ---- The intended differences -----------------------------------------------------------

/// A difference between the places that is meant to be.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Difference {
    /// The field is in every place but these.
    AbsentFrom(&'static [Place]),
    /// The field is a nested record whose fields are the next places' columns.
    Flattened,
}

/// One intended difference: of which check, which field, what and why.
#[derive(Debug)]
pub struct Allowed {
    pub check: &'static str,
    pub field: &'static str,
    pub difference: Difference,
    pub reason: &'static str,
}

/// Every intended difference. Anything else the check finds is a mismatch, and so is an entry
/// here that no longer happens as written.
pub const ALLOWED: &[Allowed] = &[
    Allowed {
        check: "llm_calls",
        field: "call",
        difference: Difference::Flattened,
        reason: "EnrichedLlmCall nests the LlmCall as ingested; the row (LlmCallRow::new) \
                 has each of its fields as a column",
    },
    Allowed {
        check: "llm_calls",
        field: "kafka_partition",
        difference: Difference::AbsentFrom(&[Avro, Record]),
        reason: "bookkeeping of the sink: the partition of tally.llm_calls_enriched.v1 \
                 the row was read from",
    },
    Allowed {
        check: "llm_calls",
        field: "kafka_offset",
        difference: Difference::AbsentFrom(&[Avro, Record]),
        reason: "bookkeeping of the sink: the offset the row was read from",
    },
    Allowed {
        check: "llm_calls",
        field: "cost_usd",
        difference: Difference::AbsentFrom(&[Avro, Record, Row, DataFusion]),
        reason: "computed, never sent: MATERIALIZED from cost_total_nanos in ClickHouse, \
                 scale9(cost_total_nanos) in tally query's view",
    },
    Allowed {
        check: "relations",
        field: "tally_schema_migrations",
        difference: Difference::AbsentFrom(&[Query]),
        reason: "the migration runner's own bookkeeping",
    },
    Allowed {
        check: "relations",
        field: "llm_calls_daily",
        difference: Difference::AbsentFrom(&[Query]),
        reason: "ClickHouse's dashboard rollups (0004_rollups.sql); tally up has none",
    },
    Allowed {
        check: "relations",
        field: "llm_calls_daily_mv",
        difference: Difference::AbsentFrom(&[Query]),
        reason: "the materialized view that fills llm_calls_daily",
    },
    Allowed {
        check: "relations",
        field: "llm_calls_hourly",
        difference: Difference::AbsentFrom(&[Query]),
        reason: "ClickHouse's dashboard rollups (0004_rollups.sql); tally up has none",
    },
    Allowed {
        check: "relations",
        field: "llm_calls_hourly_mv",
        difference: Difference::AbsentFrom(&[Query]),
        reason: "the materialized view that fills llm_calls_hourly",
    },
];

// ---- Comparing --------------------------------------------------------------------------

/// One record, table or view: its columns in each place it is written.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    pub places: Vec<(Place, Vec<Column>)>,
}

/// A difference that is not in [`ALLOWED`].
#[derive(Debug, Clone, PartialEq)]
pub enum Mismatch {
    /// In some places, not in others.
    Missing {
        check: String,
        field: String,
        present: Vec<(Place, Ty)>,
        absent: Vec<Place>,
    },
    /// Of another type in `place` than the reference place says.
    Type {
        check: String,
        field: String,
        reference: (Place, Ty),
        place: Place,
        expected: Ty,
        found: Ty,
    },
    /// Twice in one place.
    Twice {
        check: String,
        field: String,
        place: Place,
    },
    /// An entry of [`ALLOWED`] that does not happen as written.
    Stale { check: String, field: String },
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Mismatch::Missing {
                check,
                field,
                present,
                absent,
            } => {
                let present: Vec<String> =
                    present.iter().map(|(p, t)| format!("{p} ({t})")).collect();
                let absent: Vec<String> = absent.iter().map(Place::to_string).collect();
                write!(
                    f,
                    "{check}.{field}: in {} but not in {}",
                    present.join(", "),
                    absent.join(", ")
                )
            }
            Mismatch::Type {
                check,
                field,
                reference: (reference, ty),
                place,
                expected,
                found,
            } => {
                write!(f, "{check}.{field}: {ty} in {reference}")?;
                if expected != ty {
                    write!(f, " (so {expected} in {place})")?;
                }
                write!(f, " but {found} in {place}")
            }
            Mismatch::Twice {
                check,
                field,
                place,
            } => write!(f, "{check}.{field}: twice in {place}"),
            Mismatch::Stale { check, field } => write!(
                f,
                "{check}.{field}: ALLOWED lists a difference of it that does not happen as \
                 written; update the entry or remove it"
            ),
        }
    }
}

/// Every difference between the places of `check` that `allowed` does not list, and every
/// entry of `allowed` for it that did not happen.
pub fn compare(check: &Check, allowed: &[Allowed]) -> Vec<Mismatch> {
    let allowed: Vec<&Allowed> = allowed.iter().filter(|a| a.check == check.name).collect();
    let (places, mut used) = flatten(&check.places, &allowed);
    let mut mismatches = twice(&check.name, &places);
    for field in field_names(&places) {
        let (present, absent) = presence(&places, &field);
        if !absent.is_empty() {
            let intended = |a: &&&Allowed| {
                a.field == field
                    && matches!(a.difference, Difference::AbsentFrom(places) if places == absent)
            };
            match allowed.iter().find(intended) {
                Some(a) => {
                    used.insert(a.field);
                }
                None => mismatches.push(Mismatch::Missing {
                    check: check.name.clone(),
                    field: field.clone(),
                    present: present.iter().map(|(p, t)| (*p, (*t).clone())).collect(),
                    absent,
                }),
            }
        }
        mismatches.extend(type_mismatches(&check.name, &field, &present));
    }
    mismatches.extend(allowed.iter().filter(|a| !used.contains(a.field)).map(|a| {
        Mismatch::Stale {
            check: check.name.clone(),
            field: a.field.to_string(),
        }
    }));
    mismatches
}

/// The places with every `Flattened` field replaced by its fields, and those fields.
fn flatten<'a>(
    places: &[(Place, Vec<Column>)],
    allowed: &[&'a Allowed],
) -> (Vec<(Place, Vec<Column>)>, HashSet<&'a str>) {
    let mut applied = HashSet::new();
    let flattened = places
        .iter()
        .map(|(place, columns)| {
            let mut out = Vec::new();
            for column in columns {
                let nested = allowed
                    .iter()
                    .find(|a| a.field == column.name && a.difference == Difference::Flattened);
                match (nested, &column.ty) {
                    (Some(a), Ty::Record(fields)) => {
                        applied.insert(a.field);
                        out.extend(fields.iter().cloned());
                    }
                    _ => out.push(column.clone()),
                }
            }
            (*place, out)
        })
        .collect();
    (flattened, applied)
}

/// The places that have `field`, with its type there, and those that do not.
fn presence<'a>(
    places: &'a [(Place, Vec<Column>)],
    field: &str,
) -> (Vec<(Place, &'a Ty)>, Vec<Place>) {
    let mut present = Vec::new();
    let mut absent = Vec::new();
    for (place, columns) in places {
        match columns.iter().find(|c| c.name == field) {
            Some(column) => present.push((*place, &column.ty)),
            None => absent.push(*place),
        }
    }
    (present, absent)
}

/// Every field name of any place, in the order of first appearance.
fn field_names(places: &[(Place, Vec<Column>)]) -> Vec<String> {
    let mut seen = BTreeSet::new();
    places
        .iter()
        .flat_map(|(_, columns)| columns)
        .filter(|c| seen.insert(c.name.clone()))
        .map(|c| c.name.clone())
        .collect()
}

fn twice(check: &str, places: &[(Place, Vec<Column>)]) -> Vec<Mismatch> {
    let mut mismatches = Vec::new();
    for (place, columns) in places {
        let mut seen = HashSet::new();
        for column in columns.iter().filter(|c| !seen.insert(&c.name)) {
            mismatches.push(Mismatch::Twice {
                check: check.to_string(),
                field: column.name.clone(),
                place: *place,
            });
        }
    }
    mismatches
}

/// The field's type in each place against the reference: the first place that can say every
/// type (not a Rust one), as each place should see it.
fn type_mismatches(check: &str, field: &str, present: &[(Place, &Ty)]) -> Vec<Mismatch> {
    let Some(&(reference, reference_ty)) = present
        .iter()
        .find(|(p, _)| !p.is_rust())
        .or(present.first())
    else {
        return Vec::new();
    };
    present
        .iter()
        .filter(|(place, _)| *place != reference)
        .filter_map(|&(place, found)| {
            let expected = place.sees(reference_ty);
            (!expected.agrees(found)).then(|| Mismatch::Type {
                check: check.to_string(),
                field: field.to_string(),
                reference: (reference, reference_ty.clone()),
                place,
                expected,
                found: found.clone(),
            })
        })
        .collect()
}

// ---- Gathering the places ---------------------------------------------------------------

/// The places that need a server or a session: ClickHouse's and `tally query`'s relations.
#[derive(Debug, Clone)]
struct Sources {
    clickhouse: Relations,
    query: Relations,
}

/// The report views both stores have (`cost_per_ticket` is a parameterised view in
/// ClickHouse, a table function in DataFusion).
const REPORT_VIEWS: [&str; 5] = [
    "emissions_monthly",
    "cost_per_deploy",
    "cost_per_ticket",
    "team_efficiency",
    "spend_window_totals",
];

/// Migrates a fresh database, reads its columns and drops it; plans `tally query`'s session
/// over an empty store and reads its tables' and views' columns.
async fn sources() -> Sources {
    let db = TestDatabase::create("it_schema").await;
    let migrations = Migration::embedded().expect("the embedded migrations");
    migrate(
        &db.client,
        &db.name,
        &migrations,
        &tally_sink::migrate::Topology::SingleNode,
    )
    .await
    .expect("migrate");
    let clickhouse = clickhouse_relations(&db.client, &db.name).await;
    db.drop_database().await;
    Sources {
        clickhouse,
        query: query_relations().await,
    }
}

/// `tally query`'s tables and views. Creating the session plans every view, which fails on
/// a column that does not exist.
async fn query_relations() -> Relations {
    let store = tempfile::tempdir().expect("a store folder");
    let (context, _snapshot) = tally_embedded::query::context(store.path())
        .await
        .expect("tally query's session plans every view");
    let mut names: Vec<String> = context
        .catalog("datafusion")
        .and_then(|c| c.schema("public"))
        .expect("the default schema")
        .table_names()
        .into_iter()
        // `<table>_stored` (and its days read as stored, `_stored_unique`, and a replay's days,
        // `_stored_repeats`) are the Parquet tables: the DataFusion place, read on its own.
        .filter(|n| !n.contains("_stored"))
        .collect();
    if context.table_function("cost_per_ticket").is_ok() {
        names.push("cost_per_ticket".to_string());
    }
    let mut relations = Relations::new();
    for name in names {
        let sql = match name.as_str() {
            "cost_per_ticket" => "SELECT * FROM cost_per_ticket(0.5, 120)".to_string(),
            other => format!("SELECT * FROM {other}"),
        };
        let frame = context.sql(&sql).await.expect("plan");
        relations.insert(name, arrow_columns(frame.schema().as_arrow()));
    }
    relations
}

fn avro_json<R: AvroRecord>() -> Json {
    serde_json::from_str(&R::schemas().current.json).expect("the registry's schema JSON")
}

fn relation(relations: &Relations, name: &str) -> Vec<Column> {
    relations.get(name).cloned().unwrap_or_default()
}

/// A sink table against the record it is made from (`tally_sink::tables`), with `avro` as
/// the record's schema.
fn table_check<S: SinkTable, R: AvroRecord>(sources: &Sources, avro: &Json) -> Check {
    let stored = tally_embedded::store::schema(S::TABLE).expect("the store's schema");
    Check {
        name: S::TABLE.to_string(),
        places: vec![
            (Avro, avro_fields(avro)),
            (Record, record_fields::<R>()),
            (Row, row_fields::<S::Row>()),
            (ClickHouse, relation(&sources.clickhouse, S::TABLE)),
            (DataFusion, arrow_columns(&stored)),
            (Query, relation(&sources.query, S::TABLE)),
        ],
    }
}

fn record_check<R: AvroRecord>() -> Check {
    Check {
        name: R::RECORD_NAME.to_string(),
        places: vec![
            (Avro, avro_fields(&avro_json::<R>())),
            (Record, record_fields::<R>()),
        ],
    }
}

/// Columns by name only.
fn names_only(columns: Vec<Column>) -> Vec<Column> {
    columns
        .into_iter()
        .map(|c| Column::new(&c.name, Ty::Unchecked))
        .collect()
}

fn view_check(sources: &Sources, name: &str) -> Check {
    Check {
        name: name.to_string(),
        places: vec![
            (ClickHouse, names_only(relation(&sources.clickhouse, name))),
            (Query, names_only(relation(&sources.query, name))),
        ],
    }
}

/// Every relation of each store, as a "field" of its own: one that is only in one store is
/// a table or view the other lacks.
fn relations_check(sources: &Sources) -> Check {
    let names = |relations: &Relations| {
        relations
            .keys()
            .map(|name| Column::new(name, Ty::Unchecked))
            .collect()
    };
    Check {
        name: "relations".to_string(),
        places: vec![
            (ClickHouse, names(&sources.clickhouse)),
            (Query, names(&sources.query)),
        ],
    }
}

/// Every check: each sink table along its record's way, the dead letters (a record with no
/// table), the report views and the relations.
fn checks(sources: &Sources) -> Vec<Check> {
    let mut checks = vec![
        table_check::<tables::LlmCalls, EnrichedLlmCall>(sources, &avro_json::<EnrichedLlmCall>()),
        table_check::<tables::Deploys, DeployEvent>(sources, &avro_json::<DeployEvent>()),
        table_check::<tables::Tickets, TicketEvent>(sources, &avro_json::<TicketEvent>()),
        table_check::<tables::SpendWindows, SpendWindow>(sources, &avro_json::<SpendWindow>()),
        table_check::<tables::LoopSignals, LoopSignal>(sources, &avro_json::<LoopSignal>()),
        table_check::<tables::Alerts, Alert>(sources, &avro_json::<Alert>()),
        record_check::<DeadLetter>(),
    ];
    checks.extend(REPORT_VIEWS.iter().map(|v| view_check(sources, v)));
    checks.push(relations_check(sources));
    checks
}

/// What a check covered, for the test's output.
fn summary(check: &Check) -> String {
    let places: Vec<String> = check
        .places
        .iter()
        .map(|(place, columns)| format!("{place} {}", columns.len()))
        .collect();
    format!("{}: {}", check.name, places.join(", "))
}

// ---- The tests --------------------------------------------------------------------------

#[tokio::test]
async fn every_place_has_the_same_fields_of_the_same_types() {
    let sources = sources().await;
    let checks = checks(&sources);

    // Every table of the sink and the store, and every record of the contract, is checked.
    let checked: BTreeSet<&str> = checks.iter().map(|c| c.name.as_str()).collect();
    for table in tables::ALL {
        assert!(checked.contains(table), "no check of table {table}");
    }
    for spec in tally_embedded::store::TABLES {
        assert!(
            checked.contains(spec.name),
            "no check of store table {}",
            spec.name
        );
    }
    let records: BTreeSet<&str> = tally_contract::schema::registry()
        .keys()
        .map(String::as_str)
        .collect();
    let by_table = [
        EnrichedLlmCall::RECORD_NAME,
        LlmCall::RECORD_NAME, // flattened into llm_calls
        DeployEvent::RECORD_NAME,
        TicketEvent::RECORD_NAME,
        SpendWindow::RECORD_NAME,
        LoopSignal::RECORD_NAME,
        Alert::RECORD_NAME,
        DeadLetter::RECORD_NAME,
    ];
    assert_eq!(records, BTreeSet::from(by_table), "records without a check");

    let mut mismatches = Vec::new();
    for check in &checks {
        eprintln!("[schema] {}", summary(check));
        mismatches.extend(compare(check, ALLOWED));
    }
    for allowed in ALLOWED {
        eprintln!(
            "[schema] allowed: {}.{} {:?}: {}",
            allowed.check, allowed.field, allowed.difference, allowed.reason
        );
    }
    let report: Vec<String> = mismatches.iter().map(Mismatch::to_string).collect();
    assert!(
        mismatches.is_empty(),
        "{} schema mismatch(es):\n  {}",
        report.len(),
        report.join("\n  ")
    );
}

/// The mismatches of `changed` that `base` does not have (printing all of them), so the
/// test shows what one change adds whatever the current state.
fn new_mismatches(base: &Check, changed: &Check) -> Vec<Mismatch> {
    let before = compare(base, ALLOWED);
    let after = compare(changed, ALLOWED);
    for m in &after {
        eprintln!("[schema] {m}");
    }
    after.into_iter().filter(|m| !before.contains(m)).collect()
}

fn places_of(check: &mut Check, place: Place) -> &mut Vec<Column> {
    &mut check
        .places
        .iter_mut()
        .find(|(p, _)| *p == place)
        .expect("the place")
        .1
}

#[tokio::test]
async fn a_field_in_one_place_only_is_reported() {
    let sources = sources().await;
    let llm_calls = |avro: &Json| table_check::<tables::LlmCalls, EnrichedLlmCall>(&sources, avro);
    let base = llm_calls(&avro_json::<EnrichedLlmCall>());

    // A field added to LlmCall's schema only; EnrichedLlmCall's schema inlines it, as the
    // registry does with the reference.
    let mut call = avro_json::<LlmCall>();
    let field =
        serde_json::json!({"name": "gpu_kind", "type": ["null", "string"], "default": null});
    call["fields"].as_array_mut().expect("fields").push(field);
    let mut enriched = avro_json::<EnrichedLlmCall>();
    let fields = enriched["fields"].as_array_mut().expect("fields");
    let nested = fields
        .iter_mut()
        .find(|f| f["name"] == "call")
        .expect("call");
    nested["type"] = call;
    let found = new_mismatches(&base, &llm_calls(&enriched));
    assert_eq!(
        found,
        vec![Mismatch::Missing {
            check: "llm_calls".to_string(),
            field: "gpu_kind".to_string(),
            present: vec![(Avro, Ty::Nullable(Box::new(Ty::String)))],
            absent: vec![Record, Row, ClickHouse, DataFusion, Query],
        }]
    );

    // A column added to a copy of the ClickHouse columns only.
    let mut changed = base.clone();
    let column_type = clickhouse_type("LowCardinality(Nullable(String))");
    places_of(&mut changed, ClickHouse).push(Column::new("gpu_kind", column_type));
    assert_eq!(
        new_mismatches(&base, &changed),
        vec![Mismatch::Missing {
            check: "llm_calls".to_string(),
            field: "gpu_kind".to_string(),
            present: vec![(ClickHouse, Ty::Nullable(Box::new(Ty::String)))],
            absent: vec![Avro, Record, Row, DataFusion, Query],
        }]
    );

    // A column of another type there: reported with both types.
    let mut changed = base.clone();
    let step = places_of(&mut changed, ClickHouse)
        .iter_mut()
        .find(|c| c.name == "step")
        .expect("llm_calls.step");
    step.ty = clickhouse_type("Nullable(Int64)");
    let found = new_mismatches(&base, &changed);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        found[0].to_string(),
        "llm_calls.step: nullable int32 in the Avro schema but nullable int64 in system.columns"
    );

    // An allowed difference that stops happening is reported too.
    let mut changed = base.clone();
    places_of(&mut changed, ClickHouse).retain(|c| c.name != "cost_usd");
    places_of(&mut changed, Query).retain(|c| c.name != "cost_usd");
    assert_eq!(
        new_mismatches(&base, &changed),
        vec![Mismatch::Stale {
            check: "llm_calls".to_string(),
            field: "cost_usd".to_string(),
        }]
    );
}

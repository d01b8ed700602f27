//! SQL over the embedded store with DataFusion: the tables under ClickHouse's names and
//! columns. Each is a view that reads as ClickHouse's `FINAL` does — one row per key, the
//! latest version — over the Parquet files (`<table>_stored`); `llm_calls` also has
//! ClickHouse's `cost_usd` (the nano-dollars as an exact `DECIMAL(38, 9)`). Three functions
//! help the reports' SQL: `scale9(n)` reads a whole number (or a wide `DECIMAL(38, 0)` sum) as
//! n × 10⁻⁹, an exact `DECIMAL(38, 9)`; `intdiv(n, d)` is ClickHouse's `intDiv` on wide integers;
//! and `utc('YYYY-MM-DD')` is that midnight as a UTC timestamp. Sums of money, energy, CO2e
//! and tokens are taken over `DECIMAL(38, 0)` (`CAST(x AS DECIMAL(38, 0))`): a BIGINT sum wraps. The report
//! views of ClickHouse are there too (`sql/datafusion/`): `emissions_monthly`,
//! `cost_per_deploy`, `team_efficiency`, and `cost_per_ticket(share, rate)`, a table function.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, Decimal128Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::catalog::{TableFunctionImpl, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::{MemTable, ViewTable};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use datafusion::prelude::{create_udf, SessionContext};

use crate::store::snapshot::Snapshot;
use crate::store::{schema, TableSpec, TABLES};
use crate::EmbeddedError;

/// The columns a table's view adds to the stored ones: `llm_calls`' `cost_usd`.
fn extra_columns(table: &str) -> &'static str {
    match table {
        "llm_calls" => ", scale9(cost_total_nanos) AS cost_usd",
        _ => "",
    }
}

/// The SQL of a table's view, which reads as ClickHouse's `FINAL` does (one row per key, the
/// latest version): the files of days where no key repeats (`<table>_stored_unique`) as they
/// are, the others (`<table>_stored_repeats`, a replay's days) through [`final_view`];
/// `with_unique` and `with_repeats` say which of the two has files. (`<table>_stored` is
/// every file: the rows as stored.)
fn table_view(spec: &TableSpec, with_unique: bool, with_repeats: bool) -> String {
    let extra = extra_columns(spec.name);
    let stored = format!("SELECT s.*{extra} FROM {}_stored_unique AS s", spec.name);
    let repeats = || {
        final_view(
            &format!("{}_stored_repeats", spec.name),
            &spec.key_expressions("{t}"),
            spec.version,
            extra,
        )
    };
    match (with_unique, with_repeats) {
        (_, false) => stored,
        (false, true) => repeats(),
        (true, true) => format!("{stored} UNION ALL {}", repeats()),
    }
}

/// The SQL of a de-duplicating view: rows whose key is stored once are read as they are, and
/// only the keys stored more than once (a replay after a restart) go through `DISTINCT ON`,
/// which keeps the latest version. `DISTINCT ON` over every row was the cost of every query
/// on this store (an ordered `first_value` per column and key: 6 s at 500,000 calls). `keys`
/// are SQL expressions over the table `source` aliased `{t}`.
fn final_view(source: &str, keys: &[String], version: &str, extra: &str) -> String {
    let over =
        |alias: &str| -> Vec<String> { keys.iter().map(|k| k.replace("{t}", alias)).collect() };
    let grouped = over("x");
    let named = grouped
        .iter()
        .enumerate()
        .map(|(i, k)| format!("{k} AS k{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let same_key = over("s")
        .iter()
        .enumerate()
        // Parenthesised: sqlparser binds AND tighter than IS NOT DISTINCT FROM.
        .map(|(i, key)| format!("(r.k{i} IS NOT DISTINCT FROM {key})"))
        .collect::<Vec<_>>()
        .join(" AND ");
    let grouped = grouped.join(", ");
    let repeated = format!(
        "SELECT 1 FROM (SELECT {named} FROM {source} AS x GROUP BY {grouped} HAVING count(*) > 1) AS r \
         WHERE {same_key}"
    );
    let ordered = over("s").join(", ");
    format!(
        "SELECT s.*{extra} FROM {source} AS s WHERE NOT EXISTS ({repeated}) \
         UNION ALL \
         SELECT * FROM (SELECT DISTINCT ON ({ordered}) s.*{extra} FROM {source} AS s \
         WHERE EXISTS ({repeated}) ORDER BY {ordered}, s.{version} DESC)"
    )
}

/// A column of whole numbers as `i128`s: BIGINT, or a wide `DECIMAL(38, 0)` sum.
fn wide_values(array: &ArrayRef) -> datafusion::error::Result<Vec<Option<i128>>> {
    match array.data_type() {
        DataType::Int64 => Ok(array
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("declared Int64")
            .iter()
            .map(|v| v.map(i128::from))
            .collect()),
        DataType::Decimal128(_, 0) => Ok(array
            .as_any()
            .downcast_ref::<Decimal128Array>()
            .expect("declared Decimal128")
            .iter()
            .collect()),
        other => Err(DataFusionError::Plan(format!(
            "expected BIGINT or DECIMAL(38, 0), not {other}"
        ))),
    }
}

fn billionths(values: Vec<Option<i128>>) -> datafusion::error::Result<ColumnarValue> {
    let decimals = Decimal128Array::from(values).with_precision_and_scale(38, 9)?;
    Ok(ColumnarValue::Array(Arc::new(decimals) as ArrayRef))
}

/// `scale9(n)`: a whole number (BIGINT, or a wide `DECIMAL(38, 0)` sum) read as n × 10⁻⁹, an
/// exact `DECIMAL(38, 9)`: nano-dollars as dollars, micro-units as kilo-units.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Scale9 {
    signature: Signature,
}

impl ScalarUDFImpl for Scale9 {
    fn name(&self) -> &str {
        "scale9"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Decimal128(38, 9))
    }
    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        billionths(wide_values(&arrays[0])?)
    }
}

fn scale9() -> ScalarUDF {
    ScalarUDF::from(Scale9 {
        signature: Signature::uniform(
            1,
            vec![DataType::Int64, DataType::Decimal128(38, 0)],
            Volatility::Immutable,
        ),
    })
}

/// `intdiv(n, d)`: `n / d` of whole numbers (BIGINT or wide `DECIMAL(38, 0)`), truncated toward
/// zero, as a wide `DECIMAL(38, 0)` — ClickHouse's `intDiv`, and what its `Decimal` division
/// gives in the ClickHouse views.
#[derive(Debug, PartialEq, Eq, Hash)]
struct IntDiv {
    signature: Signature,
}

impl ScalarUDFImpl for IntDiv {
    fn name(&self) -> &str {
        "intdiv"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Decimal128(38, 0))
    }
    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let (numerators, divisors) = (wide_values(&arrays[0])?, wide_values(&arrays[1])?);
        let quotients: Decimal128Array = numerators
            .into_iter()
            .zip(divisors)
            .map(|(n, d)| match (n, d) {
                (Some(n), Some(d)) if d != 0 => Some(n / d),
                _ => None,
            })
            .collect();
        Ok(ColumnarValue::Array(
            Arc::new(quotients.with_precision_and_scale(38, 0)?) as ArrayRef,
        ))
    }
}

fn intdiv() -> ScalarUDF {
    let whole = [DataType::Int64, DataType::Decimal128(38, 0)];
    let pairs = whole
        .iter()
        .flat_map(|n| {
            whole
                .iter()
                .map(move |d| TypeSignature::Exact(vec![n.clone(), d.clone()]))
        })
        .collect();
    ScalarUDF::from(IntDiv {
        signature: Signature::one_of(pairs, Volatility::Immutable),
    })
}

/// `utc(Utf8) -> Timestamp(µs, UTC)`: a `YYYY-MM-DD` date's midnight, UTC.
fn utc() -> ScalarUDF {
    create_udf(
        "utc",
        vec![DataType::Utf8],
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let texts = arrays[0]
                .as_any()
                .downcast_ref::<StringArray>()
                .expect("declared Utf8");
            let mut out = Vec::with_capacity(texts.len());
            for text in texts.iter() {
                out.push(match text {
                    None => None,
                    Some(text) => Some(midnight_micros(text).ok_or_else(|| {
                        DataFusionError::Plan(format!("utc(): {text:?} is not a date YYYY-MM-DD"))
                    })?),
                });
            }
            let stamps = TimestampMicrosecondArray::from(out).with_timezone("UTC");
            Ok(ColumnarValue::Array(Arc::new(stamps) as ArrayRef))
        }),
    )
}

/// Epoch microseconds of a `YYYY-MM-DD` date's midnight, UTC.
pub fn midnight_micros(text: &str) -> Option<i64> {
    let mut parts = text.split('-');
    let (year, month, day) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || year.len() != 4 || month.len() != 2 || day.len() != 2 {
        return None;
    }
    let month = time::Month::try_from(month.parse::<u8>().ok()?).ok()?;
    let date = time::Date::from_calendar_date(year.parse().ok()?, month, day.parse().ok()?).ok()?;
    Some((date.midnight().assume_utc().unix_timestamp_nanos() / 1_000) as i64)
}

/// The report views (`sql/datafusion/views.sql`), ClickHouse's `0003_views.sql` in DataFusion's
/// dialect.
const REPORT_VIEWS: &str = include_str!("../../../sql/datafusion/views.sql");
/// The body of the `cost_per_ticket(unattributed_share, loaded_hourly_rate_usd)` function.
const COST_PER_TICKET: &str = include_str!("../../../sql/datafusion/cost_per_ticket.sql");

/// `cost_per_ticket(unattributed_share, loaded_hourly_rate_usd)`: ClickHouse's parameterised
/// view, as a table function: the view's SQL with the two numbers put in, planned on call.
#[derive(Debug)]
struct CostPerTicket {
    state: datafusion::execution::SessionState,
}

fn number(expr: &Expr, name: &str) -> datafusion::error::Result<f64> {
    let value = match expr {
        Expr::Literal(ScalarValue::Float64(Some(v)), _) => Some(*v),
        Expr::Literal(ScalarValue::Int64(Some(v)), _) => Some(*v as f64),
        Expr::Literal(ScalarValue::Decimal128(Some(v), _, scale), _) => {
            Some(*v as f64 / 10f64.powi(i32::from(*scale)))
        }
        _ => None,
    };
    value.filter(|v| v.is_finite()).ok_or_else(|| {
        DataFusionError::Plan(format!(
            "cost_per_ticket(): {name} must be a number, not {expr}"
        ))
    })
}

/// The share as ClickHouse's `{unattributed_share:Decimal64(9)}` reads it, in whole
/// billionths: exactly the decimal written, digits past the ninth decimal dropped. A string
/// (`'0.1'`) or a decimal literal is read as written; a float literal (what DataFusion makes of
/// `0.1`) by its shortest decimal text, which is the text written for any literal of up to 15
/// significant digits.
fn share_billionths(expr: &Expr) -> datafusion::error::Result<i128> {
    let refuse = || {
        DataFusionError::Plan(format!(
            "cost_per_ticket(): unattributed_share must be a decimal number, not {expr}"
        ))
    };
    match expr {
        Expr::Negative(inner) => share_billionths(inner).map(|v| -v),
        Expr::Literal(ScalarValue::Int64(Some(v)), _) => Ok(i128::from(*v) * 1_000_000_000),
        Expr::Literal(ScalarValue::Decimal128(Some(v), _, scale), _) => {
            let scale = i32::from(*scale);
            Ok(if scale <= 9 {
                v * 10i128.pow((9 - scale) as u32)
            } else {
                v / 10i128.pow((scale - 9) as u32)
            })
        }
        Expr::Literal(ScalarValue::Float64(Some(v)), _) if v.is_finite() => {
            decimal_billionths(&v.to_string()).ok_or_else(refuse)
        }
        Expr::Literal(ScalarValue::Utf8(Some(text)), _) => {
            decimal_billionths(text.trim()).ok_or_else(refuse)
        }
        _ => Err(refuse()),
    }
}

/// `[-]digits[.digits]` in billionths, truncated toward zero past the ninth decimal.
fn decimal_billionths(text: &str) -> Option<i128> {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !digits(whole) || !digits(fraction) {
        return None;
    }
    let whole: i128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let nine: String = fraction.chars().take(9).collect();
    let fraction: i128 = format!("{nine:0<9}").parse().ok()?;
    let value = whole.checked_mul(1_000_000_000)?.checked_add(fraction)?;
    Some(if negative { -value } else { value })
}

impl TableFunctionImpl for CostPerTicket {
    fn call(&self, args: &[Expr]) -> datafusion::error::Result<Arc<dyn TableProvider>> {
        let [share, rate] = args else {
            return Err(DataFusionError::Plan(
                "cost_per_ticket(unattributed_share, loaded_hourly_rate_usd) takes two numbers"
                    .into(),
            ));
        };
        // The share in billionths, exact, as the ClickHouse view takes it.
        let share_e9 = share_billionths(share)?;
        let sql = COST_PER_TICKET
            .replace("{unattributed_share_e9}", &share_e9.to_string())
            .replace(
                "{loaded_hourly_rate_usd}",
                &format!(
                    "CAST({} AS DOUBLE)",
                    number(rate, "loaded_hourly_rate_usd")?
                ),
            );
        // Planning needs no I/O: the tables' schemas are declared, not read.
        let plan = futures::executor::block_on(self.state.create_logical_plan(&sql))?;
        Ok(Arc::new(ViewTable::new(plan, Some(sql))))
    }
}

/// The statements of a SQL file: split on `;` at line ends, comments dropped.
fn statements(file: &str) -> Vec<String> {
    let without_comments: String = file
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    without_comments
        .split(";\n")
        .map(|s| s.trim().trim_end_matches(';').to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// A DataFusion session over a [`Snapshot`] of the store in `store`: every query of the
/// session reads the files of one manifest per table, whatever flushes and merges meanwhile.
/// Keep the snapshot as long as the session.
pub async fn context(store: &Path) -> Result<(SessionContext, Snapshot), EmbeddedError> {
    let snapshot = Snapshot::take(store)?;
    let context = SessionContext::new();
    context.register_udf(scale9());
    context.register_udf(intdiv());
    context.register_udf(utc());
    for spec in &TABLES {
        let files = snapshot.files(spec.name);
        let schema = schema(spec.name)?;
        let every: Vec<PathBuf> = files
            .as_stored
            .iter()
            .chain(&files.to_deduplicate)
            .cloned()
            .collect();
        for (suffix, paths) in [
            ("stored", &every),
            ("stored_unique", &files.as_stored),
            ("stored_repeats", &files.to_deduplicate),
        ] {
            let table = parquet_files(&schema, paths)?;
            context.register_table(format!("{}_{suffix}", spec.name), table)?;
        }
        let sql = table_view(
            spec,
            !files.as_stored.is_empty(),
            !files.to_deduplicate.is_empty(),
        );
        context
            .sql(&format!("CREATE VIEW {} AS {sql}", spec.name))
            .await?;
    }
    for statement in statements(REPORT_VIEWS) {
        context.sql(&statement).await?;
    }
    context.register_udtf(
        "cost_per_ticket",
        Arc::new(CostPerTicket {
            state: context.state(),
        }),
    );
    Ok((context, snapshot))
}

/// A table of the Parquet files `paths` (none: an empty table of `schema`).
fn parquet_files(
    schema: &SchemaRef,
    paths: &[PathBuf],
) -> Result<Arc<dyn TableProvider>, EmbeddedError> {
    if paths.is_empty() {
        return Ok(Arc::new(MemTable::try_new(schema.clone(), vec![vec![]])?));
    }
    let urls = paths
        .iter()
        .map(|p| ListingTableUrl::parse(p.display().to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let options =
        ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let config = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(options)
        .with_schema(schema.clone());
    Ok(Arc::new(ListingTable::try_new(config)?))
}

/// Runs one SQL statement.
pub async fn run(context: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>, EmbeddedError> {
    Ok(context.sql(sql).await?.collect().await?)
}

/// Output formats of `tally query`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Csv,
    Json,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Format, String> {
        match s {
            "table" => Ok(Format::Table),
            "csv" => Ok(Format::Csv),
            "json" => Ok(Format::Json),
            other => Err(format!(
                "unknown format {other:?}; expected table, csv or json"
            )),
        }
    }
}

/// Rows of cells as text, NULL as `None`.
type Cells = Vec<Vec<Option<String>>>;

/// Column names and every cell as text.
fn cells(batches: &[RecordBatch]) -> Result<(Vec<String>, Cells), EmbeddedError> {
    let Some(first) = batches.first() else {
        return Ok((Vec::new(), Vec::new()));
    };
    let names = first
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let options = FormatOptions::default();
    let mut rows = Vec::new();
    for batch in batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| EmbeddedError::Query(e.to_string()))?;
        for row in 0..batch.num_rows() {
            rows.push(
                batch
                    .columns()
                    .iter()
                    .zip(&formatters)
                    .map(|(column, f)| (!column.is_null(row)).then(|| f.value(row).to_string()))
                    .collect(),
            );
        }
    }
    Ok((names, rows))
}

fn is_number(data_type: &DataType) -> bool {
    data_type.is_numeric()
}

/// The result in a format, ending with a newline.
pub fn render(batches: &[RecordBatch], format: Format) -> Result<String, EmbeddedError> {
    let (names, rows) = cells(batches)?;
    Ok(match format {
        Format::Table => table(&names, &rows),
        Format::Csv => {
            let mut out = csv_line(names.iter().map(|n| Some(n.as_str())));
            for row in &rows {
                out.push_str(&csv_line(row.iter().map(Option::as_deref)));
            }
            out
        }
        Format::Json => {
            let numeric: Vec<bool> = batches.first().map_or(Vec::new(), |b| {
                b.schema()
                    .fields()
                    .iter()
                    .map(|f| is_number(f.data_type()))
                    .collect()
            });
            let mut out = String::from("[");
            for (i, row) in rows.iter().enumerate() {
                let object: serde_json::Map<String, serde_json::Value> = names
                    .iter()
                    .zip(row)
                    .zip(&numeric)
                    .map(|((name, cell), number)| {
                        let value = match cell {
                            None => serde_json::Value::Null,
                            // Numbers as JSON numbers when they survive the trip exactly.
                            Some(text) if *number => {
                                serde_json::from_str::<serde_json::Number>(text)
                                    .ok()
                                    .filter(|n| n.to_string() == *text)
                                    .map_or_else(
                                        || serde_json::Value::String(text.clone()),
                                        serde_json::Value::Number,
                                    )
                            }
                            Some(text) => serde_json::Value::String(text.clone()),
                        };
                        (name.clone(), value)
                    })
                    .collect();
                out.push_str(if i == 0 { "\n  " } else { ",\n  " });
                out.push_str(&serde_json::Value::Object(object).to_string());
            }
            out.push_str(if rows.is_empty() { "]\n" } else { "\n]\n" });
            out
        }
    })
}

fn csv_line<'a>(cells: impl Iterator<Item = Option<&'a str>>) -> String {
    let quoted: Vec<String> = cells
        .map(|cell| match cell {
            None => String::new(),
            Some(text) if text.contains([',', '"', '\n']) => {
                format!("\"{}\"", text.replace('"', "\"\""))
            }
            Some(text) => text.to_string(),
        })
        .collect();
    format!("{}\n", quoted.join(","))
}

fn table(names: &[String], rows: &[Vec<Option<String>>]) -> String {
    let text = |cell: &Option<String>| cell.clone().unwrap_or_else(|| "NULL".into());
    let mut widths: Vec<usize> = names.iter().map(|n| n.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(text(cell).chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(names.to_vec());
    out.push_str(&line(widths.iter().map(|w| "-".repeat(*w)).collect()));
    for row in rows {
        out.push_str(&line(row.iter().map(text).collect()));
    }
    out.push_str(&format!(
        "({} row{})\n",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" }
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_stored_twice_reads_once_at_its_latest_version_and_others_as_stored() {
        use datafusion::arrow::datatypes::{Field, Schema};
        use datafusion::datasource::MemTable;
        let schema = Arc::new(Schema::new(vec![
            Field::new("tenant", DataType::Utf8, true),
            Field::new("id", DataType::Utf8, true),
            Field::new("version", DataType::Int64, false),
            Field::new("figure", DataType::Int64, false),
        ]));
        let rows = [
            (Some("t"), Some("a"), 1, 10),
            (Some("t"), Some("b"), 1, 20),
            (Some("t"), Some("b"), 3, 21), // a replay of b, newer: read
            (Some("t"), Some("b"), 2, 22),
            (Some("u"), Some("a"), 1, 30), // another tenant's a
            (Some("t"), None, 1, 40),
            (Some("t"), None, 2, 41), // a NULL key is a key as in FINAL
        ];
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from_iter(rows.iter().map(|r| r.0))),
                Arc::new(StringArray::from_iter(rows.iter().map(|r| r.1))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.3))),
            ],
        )
        .unwrap();
        let context = SessionContext::new();
        let table = MemTable::try_new(schema, vec![vec![batch]]).unwrap();
        context.register_table("t_stored", Arc::new(table)).unwrap();
        let keys = ["{t}.tenant".to_string(), "{t}.id".to_string()];
        let view = final_view("t_stored", &keys, "version", ", figure * 2 AS double");
        let sql = format!("SELECT * FROM ({view}) ORDER BY tenant, id NULLS LAST");
        let read = render(&run(&context, &sql).await.unwrap(), Format::Csv).unwrap();
        let expected = [
            "tenant,id,version,figure,double",
            "t,a,1,10,20",
            "t,b,3,21,42",
            "t,,2,41,82",
            "u,a,1,30,60",
        ];
        assert_eq!(read.trim_end(), expected.join("\n"));
    }

    #[test]
    fn the_share_of_cost_per_ticket_is_read_exactly_in_billionths() {
        let float = |v: f64| Expr::Literal(ScalarValue::Float64(Some(v)), None);
        let text = |v: &str| Expr::Literal(ScalarValue::Utf8(Some(v.into())), None);
        let decimal =
            |v: i128, scale: i8| Expr::Literal(ScalarValue::Decimal128(Some(v), 38, scale), None);
        for (expr, billionths) in [
            (float(0.1), 100_000_000),
            (float(0.3), 300_000_000),
            (float(0.7), 700_000_000),
            (float(1e-9), 1),
            (float(0.1234567891), 123_456_789),
            (text("0.1"), 100_000_000),
            (text("0.999999999"), 999_999_999),
            (text(".5"), 500_000_000),
            (decimal(1, 1), 100_000_000),
            (decimal(1_234_567_891, 10), 123_456_789),
            (
                Expr::Literal(ScalarValue::Int64(Some(1)), None),
                1_000_000_000,
            ),
            (Expr::Negative(Box::new(float(0.5))), -500_000_000),
        ] {
            assert_eq!(share_billionths(&expr).unwrap(), billionths, "{expr}");
        }
        for expr in [text("half"), text("1e-1"), text(""), float(f64::NAN)] {
            assert!(share_billionths(&expr).is_err(), "{expr}");
        }
    }
}

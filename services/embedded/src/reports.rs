//! The DataFusion backend of [`tally_report::ReportSource`]: `tally report` on the embedded
//! store, the very reports of [`tally_report`], their DataFusion SQL run here, every figure written as ClickHouse
//! writes it — integers as digits, decimals without trailing zeros, timestamps as
//! `YYYY-MM-DD hh:mm:ss.ffffff`, dates as `YYYY-MM-DD`, floats in their shortest form — so
//! both stores give the same report text.
use std::future::Future;

use datafusion::arrow::array::{
    Array, AsArray, Decimal128Array, Float64Array, ListArray, RecordBatch,
};
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, TimeUnit, TimestampMicrosecondType,
};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::prelude::SessionContext;
use tally_report::emissions::{EmissionsRow, EMISSIONS_ROWS_DATAFUSION};
use tally_report::{Dialect, ReportError, ReportSource, Section};

use crate::query::midnight_micros;
use crate::store::date_text;

/// The embedded store as a report source: a session over one snapshot of it.
pub struct EmbeddedSource {
    pub context: SessionContext,
    pub snapshot: crate::store::snapshot::Snapshot,
}

fn query_error(e: impl std::fmt::Display) -> ReportError {
    ReportError::Query {
        store: "the embedded store",
        message: e.to_string(),
    }
}

/// Puts the dates into the SQL's `?`s, as quoted literals (checked to be dates first).
fn bind(sql: &str, binds: &[&str]) -> Result<String, ReportError> {
    let mut out = String::with_capacity(sql.len());
    let mut binds = binds.iter();
    for (i, piece) in sql.split('?').enumerate() {
        if i > 0 {
            let value = binds
                .next()
                .ok_or_else(|| query_error("more ? than values"))?;
            if midnight_micros(value).is_none() {
                return Err(ReportError::InvalidArgument(format!(
                    "{value:?} is not a date YYYY-MM-DD"
                )));
            }
            out.push('\'');
            out.push_str(value);
            out.push('\'');
        }
        out.push_str(piece);
    }
    Ok(out)
}

async fn collect(context: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>, ReportError> {
    context
        .sql(sql)
        .await
        .map_err(query_error)?
        .collect()
        .await
        .map_err(query_error)
}

/// A decimal as ClickHouse's `toString` writes it: no trailing zeros.
fn decimal_text(mantissa: i128, scale: u32) -> String {
    let sign = if mantissa < 0 { "-" } else { "" };
    let digits = mantissa.unsigned_abs();
    let divisor = 10u128.pow(scale);
    let (whole, fraction) = (digits / divisor, digits % divisor);
    let fraction = format!("{fraction:0width$}", width = scale as usize);
    let fraction = fraction.trim_end_matches('0');
    if fraction.is_empty() {
        format!("{sign}{whole}")
    } else {
        format!("{sign}{whole}.{fraction}")
    }
}

fn timestamp_text(micros: i64) -> String {
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000) else {
        return micros.to_string();
    };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

/// One cell as ClickHouse's text; NULL is empty.
fn cell(column: &dyn Array, row: usize) -> Result<String, ReportError> {
    if column.is_null(row) {
        return Ok(String::new());
    }
    Ok(match column.data_type() {
        DataType::Decimal128(_, scale) => {
            let decimals: &Decimal128Array = column.as_primitive();
            decimal_text(decimals.value(row), *scale as u32)
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            timestamp_text(column.as_primitive::<TimestampMicrosecondType>().value(row))
        }
        DataType::Date32 => date_text(column.as_primitive::<Date32Type>().value(row)),
        DataType::Float64 => {
            let floats: &Float64Array = column.as_primitive();
            format!("{}", floats.value(row))
        }
        _ => {
            let formatter =
                ArrayFormatter::try_new(column, &FormatOptions::default()).map_err(query_error)?;
            formatter.value(row).to_string()
        }
    })
}

impl ReportSource for EmbeddedSource {
    fn dialect(&self) -> Dialect {
        Dialect::DataFusion
    }

    fn section(
        &self,
        title: &str,
        sql: &str,
        binds: &[&str],
        plot: Option<(&'static str, &'static str)>,
    ) -> impl Future<Output = Result<Section, ReportError>> + Send {
        let sql = bind(sql, binds);
        let title = title.to_string();
        async move {
            let batches = collect(&self.context, &sql?).await?;
            let columns = batches.first().map_or(Vec::new(), |b| {
                b.schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect()
            });
            let mut rows = Vec::new();
            for batch in &batches {
                for row in 0..batch.num_rows() {
                    rows.push(
                        batch
                            .columns()
                            .iter()
                            .map(|c| cell(c.as_ref(), row))
                            .collect::<Result<Vec<_>, _>>()?,
                    );
                }
            }
            Ok(Section {
                title,
                columns,
                rows,
                plot,
            })
        }
    }

    fn emissions_rows(
        &self,
        from: &str,
        to: &str,
    ) -> impl Future<Output = Result<Vec<EmissionsRow>, ReportError>> + Send {
        emissions_rows(self, from, to)
    }
}

fn strings(list: &ListArray, row: usize) -> Vec<String> {
    let values = list.value(row);
    let values = values.as_string::<i32>();
    (0..values.len())
        .map(|i| values.value(i).to_string())
        .collect()
}

/// The wide integers (`DECIMAL(38, 0)`) of a list cell.
fn integers(list: &ListArray, row: usize) -> Vec<i128> {
    let values = list.value(row);
    let values = values.as_primitive::<Decimal128Type>();
    (0..values.len()).map(|i| values.value(i)).collect()
}

/// The `emissions_monthly` rows of the embedded store, for [`ReportSource::emissions_rows`].
async fn emissions_rows(
    source: &EmbeddedSource,
    from: &str,
    to: &str,
) -> Result<Vec<EmissionsRow>, ReportError> {
    let sql = bind(EMISSIONS_ROWS_DATAFUSION, &[from, to])?;
    let batches = collect(&source.context, &sql).await?;
    let mut rows = Vec::new();
    for batch in &batches {
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| query_error(format!("no column {name}")))
        };
        let text = |name: &str, row: usize| -> Result<String, ReportError> {
            cell(column(name)?.as_ref(), row)
        };
        for row in 0..batch.num_rows() {
            let list = |name: &str| -> Result<&ListArray, ReportError> {
                column(name)?
                    .as_any()
                    .downcast_ref::<ListArray>()
                    .ok_or_else(|| query_error(format!("{name} is not a list")))
            };
            rows.push(EmissionsRow {
                month: text("month", row)?,
                team: text("team", row)?,
                model: text("model", row)?,
                provider: text("provider", row)?,
                region: text("region", row)?,
                calls: text("calls", row)?.parse().unwrap_or(0),
                tokens: text("tokens", row)?.parse().unwrap_or(0),
                energy_uwh: integers(list("energy_uwh")?, row),
                co2e_ug: integers(list("co2e_ug")?, row),
                carbon_method_versions: strings(list("carbon_method_versions")?, row),
                grid_dataset_versions: strings(list("grid_dataset_versions")?, row),
                grid_sources: strings(list("grid_sources")?, row),
            });
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_written_as_clickhouse_writes_them() {
        assert_eq!(decimal_text(38_686_556_900, 9), "38.6865569");
        assert_eq!(decimal_text(5_000_000_000, 9), "5");
        assert_eq!(decimal_text(0, 9), "0");
        assert_eq!(decimal_text(-500_000_000, 9), "-0.5");
        assert_eq!(
            timestamp_text(1_793_613_600_000_000),
            "2026-11-02 10:00:00.000000"
        );
        assert_eq!(date_text(20_393), "2025-11-01");
        assert_eq!(
            bind("a ? b ?", &["2026-11-01", "2026-12-01"]).unwrap(),
            "a '2026-11-01' b '2026-12-01'"
        );
        assert!(bind("a ?", &["1; DROP"]).is_err());
    }
}

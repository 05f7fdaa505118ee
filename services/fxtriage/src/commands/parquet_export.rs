//! Parquet files of the analytics (`fxtriage analytics --format parquet` and
//! `--timelines FILE.parquet`), written with the `parquet` crate's column
//! writers: one row group, the columns in the schema's order, a definition
//! level per value of an optional column.

use std::sync::Arc;

use anyhow::Context as _;
use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

/// The values of one column, in the schema's order of columns.
#[derive(Debug)]
pub enum Column {
    Text(Vec<String>),
    OptionalText(Vec<Option<String>>),
    /// Microseconds since the Unix epoch (TIMESTAMP(MICROS,true)) or a count.
    Int(Vec<i64>),
    OptionalInt(Vec<Option<i64>>),
    OptionalDouble(Vec<Option<f64>>),
}

/// Definition levels and the present values of an optional column.
fn split<T: Clone>(values: &[Option<T>]) -> (Vec<T>, Vec<i16>) {
    let levels = values
        .iter()
        .map(|value| i16::from(value.is_some()))
        .collect();
    (values.iter().flatten().cloned().collect(), levels)
}

fn text(values: &[String]) -> Vec<ByteArray> {
    values
        .iter()
        .map(|value| ByteArray::from(value.as_str()))
        .collect()
}

/// A Parquet file of `columns` under `schema` (a message type in Parquet's
/// schema language).
pub fn write(schema: &str, columns: Vec<Column>) -> anyhow::Result<Vec<u8>> {
    let schema = Arc::new(parse_message_type(schema).context("the Parquet schema")?);
    let properties = Arc::new(WriterProperties::builder().build());
    let mut writer = SerializedFileWriter::new(Vec::new(), schema, properties)?;
    let mut row_group = writer.next_row_group()?;
    let mut columns = columns.into_iter();
    while let Some(mut column) = row_group.next_column()? {
        let values = columns
            .next()
            .context("fewer columns than the schema names")?;
        match values {
            Column::Text(values) => {
                column
                    .typed::<ByteArrayType>()
                    .write_batch(&text(&values), None, None)?;
            }
            Column::OptionalText(values) => {
                let (present, levels) = split(&values);
                column.typed::<ByteArrayType>().write_batch(
                    &text(&present),
                    Some(&levels),
                    None,
                )?;
            }
            Column::Int(values) => {
                column
                    .typed::<Int64Type>()
                    .write_batch(&values, None, None)?;
            }
            Column::OptionalInt(values) => {
                let (present, levels) = split(&values);
                column
                    .typed::<Int64Type>()
                    .write_batch(&present, Some(&levels), None)?;
            }
            Column::OptionalDouble(values) => {
                let (present, levels) = split(&values);
                column
                    .typed::<DoubleType>()
                    .write_batch(&present, Some(&levels), None)?;
            }
        }
        column.close()?;
    }
    anyhow::ensure!(
        columns.next().is_none(),
        "more columns than the schema names"
    );
    row_group.close()?;
    Ok(writer.into_inner()?)
}

/// Microseconds since the Unix epoch.
pub fn micros(at: time::OffsetDateTime) -> i64 {
    (at.unix_timestamp_nanos() / 1_000) as i64
}

#[cfg(test)]
mod tests {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;

    use super::*;

    #[test]
    fn a_file_reads_back_with_its_nulls() {
        let bytes = write(
            "message t { REQUIRED BYTE_ARRAY name (UTF8); OPTIONAL INT64 at (TIMESTAMP(MICROS,true)); OPTIONAL DOUBLE seconds; }",
            vec![
                Column::Text(vec!["a".into(), "b".into()]),
                Column::OptionalInt(vec![None, Some(1_700_000_000_000_000)]),
                Column::OptionalDouble(vec![Some(1.5), None]),
            ],
        )
        .expect("written");
        assert_eq!(&bytes[..4], b"PAR1");
        let reader = SerializedFileReader::new(bytes::Bytes::from(bytes)).expect("readable");
        assert_eq!(reader.metadata().file_metadata().num_rows(), 2);
        let rows: Vec<_> = reader
            .get_row_iter(None)
            .expect("rows")
            .map(|row| row.expect("row"))
            .collect();
        let fields = |index: usize| -> Vec<Field> {
            rows[index]
                .get_column_iter()
                .map(|(_, field)| field.clone())
                .collect()
        };
        assert_eq!(fields(0)[0], Field::Str("a".into()));
        assert_eq!(fields(0)[1], Field::Null);
        assert_eq!(fields(0)[2], Field::Double(1.5));
        assert_eq!(fields(1)[1], Field::TimestampMicros(1_700_000_000_000_000));
        assert_eq!(fields(1)[2], Field::Null);
        assert!(
            write("message t { REQUIRED INT64 n; }", vec![]).is_err(),
            "a column short"
        );
    }
}

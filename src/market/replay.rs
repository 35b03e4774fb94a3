//! Replay data source: historical bars from CSV files.
//!
//! One file holds the bars of one symbol (the file stem, `AAPL.csv` → `AAPL`); a replay
//! directory holds one file per symbol ([`read_dir`]). The reader accepts the formats the
//! common sources publish:
//!
//! | layout | example header | timestamp field |
//! | --- | --- | --- |
//! | Yahoo Finance | `Date,Open,High,Low,Close,Adj Close,Volume` | `2004-08-19` |
//! | pandas `to_csv` (unnamed index) | `,Open,High,Low,Close,Volume` | `2004-08-19` or `2017-04-19 09:00:00` |
//! | date and time in two columns | `Date,Time,Open,High,Low,Close,Volume,OpenInterest` | `2006-01-02` + `09:05:00` |
//! | one timestamp column | `Datetime,Open,...` or `Timestamp,Open,...` | `2017-04-19 09:00:00`, `2017-04-19T09:00:00Z` |
//!
//! # Columns
//!
//! Column names are matched case-insensitively, ignoring spaces, `_` and `-` (`Adj Close`,
//! `adj_close`, `AdjClose` are one name). Required: a timestamp column (`Date`, `Datetime`,
//! `Timestamp`, or an unnamed first column), `Open`, `High`, `Low`, `Close`, `Volume`.
//! Optional: `Time` (the time of day when the date column holds only dates). Read but ignored:
//! `Adj Close` and `OpenInterest` (also `OI`). Any other column is an error
//! ([`DataError::UnknownColumn`]), so no data is dropped unnoticed.
//!
//! **Header one field short** (a malformed layout seen in real files,
//! e.g. `Date,Open,High,Low,Close,Volume,OpenInterest` over rows
//! `2006-01-02,09:01:00,3602.00,...`): when the header has no `Time` column, its date
//! column is the first, and the first data row has exactly one field more than the header,
//! with field 0 a date and field 1 a time of day, the file is read as if `Time` were the
//! second header name. Every row must then have that many fields. The inference is reported
//! as [`DataWarning::TimeColumnInferred`]. In any other case a row whose field count differs
//! from the header's is [`DataError::FieldCount`].
//!
//! # Timestamps
//!
//! Accepted values: a date (`YYYY-MM-DD`, `YYYY/MM/DD`, `YYYYMMDD`); a date and a time of
//! day (`HH:MM` or `HH:MM:SS`) separated by a space or `T`, or split over the date and `Time`
//! columns; an RFC 3339 instant with an offset (`2017-04-19T09:00:00Z`,
//! `2017-04-19 09:00:00+02:00`). Every row of a file must use the same kind (date, local
//! date-time or instant with offset).
//!
//! * Timestamps without an offset are wall-clock times in [`ReplayOptions::timezone`]. A
//!   local time that does not exist (skipped by a daylight-saving change) is an error; a
//!   local time that occurs twice is the earlier instant, or the later one when the earlier
//!   would not come after the previous bar (so an hour repeated at the autumn change reads in
//!   order).
//! * The timeframe is detected from the most common spacing between consecutive bars (ties:
//!   the shorter spacing): for date-only files 1 day → `1d`, 7 days → `1w`; for files with
//!   times the spacing in seconds must equal one of `1m 5m 15m 30m 1h 4h 1d 1w`. A date-only
//!   file with one bar is `1d`; a file with times and one bar is an error.
//! * Daily bars are stamped at local midnight of their date ([`local_midnight`]); weekly bars
//!   at Monday 00:00 local of the week their date falls in (Yahoo dates weeks on Monday, other
//!   vendors on Friday; both give the same bar). A file with times whose detected timeframe is
//!   `1d` or `1w` is stamped the same way.
//! * Intraday bars are stamped with their local time converted to UTC; with
//!   [`BarStamp::End`] the detected period is subtracted, so [`Bar::ts`] is always the start
//!   of the period. [`ReplayOptions::stamp`] does not apply to daily and weekly bars: their
//!   date is the trading day.
//!
//! # Validation
//!
//! Nothing is skipped: the first bad row fails the whole file with its path and 1-based line
//! number ([`DataError`]). Rules, per row: every price and the volume is a finite number;
//! prices are > 0; volume is ≥ 0 (0 is common for indices); `high ≥ low`; open and close lie
//! in `[low, high]`, or outside it by at most [`OPEN_CLOSE_TOLERANCE`] of the bound they pass
//! — such a row is kept as published and reported as [`DataWarning::PriceOutsideRange`]
//! (Yahoo's SPY daily file has two: 2015-03-05 and 2015-03-30, open below low by 0.2 % and
//! 0.6 %). Across rows: timestamps strictly increase (equal → [`DataError::Duplicate`],
//! earlier → [`DataError::OutOfOrder`]). The file must be UTF-8 (a UTF-8 byte-order mark is
//! allowed), must not be empty, must have at least one bar, and must not contain blank lines
//! except at its end. Line endings may be LF or CRLF; fields may be quoted and are trimmed.

use crate::config::common::is_valid_symbol;
use crate::config::settings::BarStamp;
use crate::market::timeframe::local_midnight;
use crate::market::{Bar, Timeframe};
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// How far (as a fraction of the bound, 0.01 = 1 %) open or close may lie outside
/// `[low, high]` before a row is rejected; within it the row is kept and reported as
/// [`DataWarning::PriceOutsideRange`]. Chosen to admit the published inconsistencies of
/// Yahoo daily data (up to 0.6 % in SPY 2007–2017) while rejecting typos such as a dropped
/// decimal point.
pub const OPEN_CLOSE_TOLERANCE: f64 = 0.01;

/// How to interpret the timestamps of a data file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplayOptions {
    /// Time zone of timestamps without an offset, and of daily and weekly bars (which start
    /// at local midnight).
    pub timezone: Tz,
    /// Whether an intraday timestamp marks the start or the end of its bar.
    pub stamp: BarStamp,
}

impl Default for ReplayOptions {
    /// `America/New_York`, timestamps mark the start of a bar (the settings' defaults).
    fn default() -> Self {
        ReplayOptions {
            timezone: chrono_tz::America::New_York,
            stamp: BarStamp::Start,
        }
    }
}

/// The bars of one symbol, as read from one file.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// The file stem (`AAPL.csv` → `AAPL`).
    pub symbol: String,
    /// The detected bar period (see the module documentation).
    pub timeframe: Timeframe,
    /// The bars, oldest first, with strictly increasing [`Bar::ts`] (period start, Unix
    /// seconds UTC).
    pub bars: Vec<Bar>,
}

/// A data file that cannot be read. Every variant names the file; those about one row name
/// its 1-based line number (the header is line 1).
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file or directory could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// File or directory.
        path: PathBuf,
        /// The operating-system error.
        source: std::io::Error,
    },
    /// The bytes are not UTF-8.
    #[error("{}:{line}: invalid UTF-8 at byte offset {offset}", path.display())]
    InvalidUtf8 {
        /// File.
        path: PathBuf,
        /// Line of the first invalid byte.
        line: u64,
        /// Offset of the first invalid byte from the start of the file, in bytes.
        offset: usize,
    },
    /// The file is empty or holds only whitespace.
    #[error("{}: empty file (expected a header and at least one bar)", path.display())]
    Empty {
        /// File.
        path: PathBuf,
    },
    /// The file has a header but no bars.
    #[error("{}:{line}: header only, no bars", path.display())]
    NoBars {
        /// File.
        path: PathBuf,
        /// Line of the header.
        line: u64,
    },
    /// A blank line before the end of the file.
    #[error("{}:{line}: blank line (only allowed at the end of the file)", path.display())]
    BlankLine {
        /// File.
        path: PathBuf,
        /// Line of the (first) blank line.
        line: u64,
    },
    /// The CSV syntax could not be parsed.
    #[error("{}:{line}: malformed CSV: {message}", path.display())]
    Csv {
        /// File.
        path: PathBuf,
        /// Line where parsing failed.
        line: u64,
        /// The parser's message.
        message: String,
    },
    /// A header names a column the reader does not know.
    #[error(
        "{}:{line}: unknown column '{name}' (column {column}); expected Date, Time, Datetime, \
         Timestamp, Open, High, Low, Close, Volume, Adj Close, OpenInterest",
        path.display()
    )]
    UnknownColumn {
        /// File.
        path: PathBuf,
        /// Line of the header.
        line: u64,
        /// 1-based column number.
        column: usize,
        /// The name as written.
        name: String,
    },
    /// A header names a column twice (or two timestamp columns).
    #[error("{}:{line}: column '{name}' appears twice", path.display())]
    DuplicateColumn {
        /// File.
        path: PathBuf,
        /// Line of the header.
        line: u64,
        /// The second name as written.
        name: String,
    },
    /// A required column is missing from the header.
    #[error("{}:{line}: missing column '{name}'", path.display())]
    MissingColumn {
        /// File.
        path: PathBuf,
        /// Line of the header.
        line: u64,
        /// The missing column (`timestamp`, `open`, `high`, `low`, `close`, `volume`, `date`).
        name: &'static str,
    },
    /// A row does not have as many fields as the header.
    #[error("{}:{line}: {found} fields, the header has {expected}", path.display())]
    FieldCount {
        /// File.
        path: PathBuf,
        /// Line of the row.
        line: u64,
        /// Fields per row the header implies.
        expected: usize,
        /// Fields in this row.
        found: usize,
    },
    /// A timestamp that cannot be parsed, or of another kind than the first row's.
    #[error("{}:{line}: bad timestamp '{value}': expected {expected}", path.display())]
    BadTimestamp {
        /// File.
        path: PathBuf,
        /// Line of the row.
        line: u64,
        /// The field(s) as written.
        value: String,
        /// What was expected.
        expected: &'static str,
    },
    /// A local time skipped by a daylight-saving change.
    #[error("{}:{line}: local time '{value}' does not exist in {timezone}", path.display())]
    NonexistentTime {
        /// File.
        path: PathBuf,
        /// Line of the row.
        line: u64,
        /// The timestamp as written.
        value: String,
        /// The time zone name.
        timezone: String,
    },
    /// A price or volume field that is not a finite number.
    #[error("{}:{line}: {column} '{value}' is not a finite number", path.display())]
    BadNumber {
        /// File.
        path: PathBuf,
        /// Line of the row.
        line: u64,
        /// `open`, `high`, `low`, `close` or `volume`.
        column: &'static str,
        /// The field as written.
        value: String,
    },
    /// A price ≤ 0.
    #[error("{}:{line}: {column} {value} is not positive", path.display())]
    NonPositivePrice {
        /// File.
        path: PathBuf,
        /// Line of the row.
        line: u64,
        /// `open`, `high`, `low` or `close`.
        column: &'static str,
        /// The price.
        value: f64,
    },
    /// `high < low`.
    #[error("{}:{line}: high {high} is below low {low}", path.display())]
    HighBelowLow {
        /// File.
        path: PathBuf,
        /// Line of the row.
        line: u64,
        /// High.
        high: f64,
        /// Low.
        low: f64,
    },
    /// Open or close outside `[low, high]` by more than [`OPEN_CLOSE_TOLERANCE`].
    #[error(
        "{}:{line}: {column} {value} is outside [low {low}, high {high}] by more than {}%",
        path.display(),
        OPEN_CLOSE_TOLERANCE * 100.0
    )]
    OutsideRange {
        /// File.
        path: PathBuf,
        /// Line of the row.
        line: u64,
        /// `open` or `close`.
        column: &'static str,
        /// The price.
        value: f64,
        /// Low.
        low: f64,
        /// High.
        high: f64,
    },
    /// Volume < 0.
    #[error("{}:{line}: volume {value} is negative", path.display())]
    NegativeVolume {
        /// File.
        path: PathBuf,
        /// Line of the row.
        line: u64,
        /// The volume.
        value: f64,
    },
    /// A timestamp earlier than the previous row's.
    #[error(
        "{}:{line}: timestamp is earlier than the one on line {previous_line} (rows must be oldest first)",
        path.display()
    )]
    OutOfOrder {
        /// File.
        path: PathBuf,
        /// Line of the row.
        line: u64,
        /// Line of the previous row.
        previous_line: u64,
    },
    /// A timestamp equal to the previous row's (after stamping: two daily rows on one date,
    /// two weekly rows in one week).
    #[error("{}:{line}: same bar period as line {previous_line}", path.display())]
    Duplicate {
        /// File.
        path: PathBuf,
        /// Line of the row.
        line: u64,
        /// Line of the previous row.
        previous_line: u64,
    },
    /// The spacing of the bars matches no timeframe.
    #[error("{}: cannot detect the timeframe: {detail}", path.display())]
    UnknownTimeframe {
        /// File.
        path: PathBuf,
        /// What was found.
        detail: String,
    },
    /// [`read_dir`]: a file stem that is not a valid ticker symbol.
    #[error(
        "{}: file stem '{symbol}' is not a valid symbol (^[A-Z0-9][A-Z0-9./-]{{0,19}}$)",
        path.display()
    )]
    InvalidSymbol {
        /// File.
        path: PathBuf,
        /// The file stem.
        symbol: String,
    },
    /// [`read_dir`]: two files with the same stem (`AAPL.csv`, `AAPL.CSV`).
    #[error("{}: symbol '{symbol}' also comes from {}", path.display(), other.display())]
    DuplicateSymbol {
        /// File.
        path: PathBuf,
        /// The symbol.
        symbol: String,
        /// The other file.
        other: PathBuf,
    },
    /// [`read_dir`]: no `*.csv` file in the directory.
    #[error("{}: no .csv files", path.display())]
    NoFiles {
        /// Directory.
        path: PathBuf,
    },
}

impl DataError {
    /// The file (or directory) the error is about.
    pub fn path(&self) -> &Path {
        match self {
            DataError::Io { path, .. }
            | DataError::InvalidUtf8 { path, .. }
            | DataError::Empty { path }
            | DataError::NoBars { path, .. }
            | DataError::BlankLine { path, .. }
            | DataError::Csv { path, .. }
            | DataError::UnknownColumn { path, .. }
            | DataError::DuplicateColumn { path, .. }
            | DataError::MissingColumn { path, .. }
            | DataError::FieldCount { path, .. }
            | DataError::BadTimestamp { path, .. }
            | DataError::NonexistentTime { path, .. }
            | DataError::BadNumber { path, .. }
            | DataError::NonPositivePrice { path, .. }
            | DataError::HighBelowLow { path, .. }
            | DataError::OutsideRange { path, .. }
            | DataError::NegativeVolume { path, .. }
            | DataError::OutOfOrder { path, .. }
            | DataError::Duplicate { path, .. }
            | DataError::UnknownTimeframe { path, .. }
            | DataError::InvalidSymbol { path, .. }
            | DataError::DuplicateSymbol { path, .. }
            | DataError::NoFiles { path } => path,
        }
    }

    /// The 1-based line the error is about, when it is about one.
    pub fn line(&self) -> Option<u64> {
        match self {
            DataError::InvalidUtf8 { line, .. }
            | DataError::NoBars { line, .. }
            | DataError::BlankLine { line, .. }
            | DataError::Csv { line, .. }
            | DataError::UnknownColumn { line, .. }
            | DataError::DuplicateColumn { line, .. }
            | DataError::MissingColumn { line, .. }
            | DataError::FieldCount { line, .. }
            | DataError::BadTimestamp { line, .. }
            | DataError::NonexistentTime { line, .. }
            | DataError::BadNumber { line, .. }
            | DataError::NonPositivePrice { line, .. }
            | DataError::HighBelowLow { line, .. }
            | DataError::OutsideRange { line, .. }
            | DataError::NegativeVolume { line, .. }
            | DataError::OutOfOrder { line, .. }
            | DataError::Duplicate { line, .. } => Some(*line),
            DataError::Io { .. }
            | DataError::Empty { .. }
            | DataError::UnknownTimeframe { .. }
            | DataError::InvalidSymbol { .. }
            | DataError::DuplicateSymbol { .. }
            | DataError::NoFiles { .. } => None,
        }
    }
}

/// Something in a data file that was read as published but deserves attention.
/// [`read_file`] and [`read_dir`] log each one (`tracing` level WARN);
/// [`read_file_with_warnings`] returns them.
#[derive(Clone, Debug, PartialEq)]
pub enum DataWarning {
    /// Open or close lies outside `[low, high]`, by at most [`OPEN_CLOSE_TOLERANCE`]; the bar
    /// is kept unchanged.
    PriceOutsideRange {
        /// File.
        path: PathBuf,
        /// Line of the row.
        line: u64,
        /// `open` or `close`.
        column: &'static str,
        /// The price.
        value: f64,
        /// Low.
        low: f64,
        /// High.
        high: f64,
    },
    /// The header has one field fewer than the rows and field 2 of the rows is a time of day:
    /// read as if the header had `Time` as its second name (see the module documentation).
    TimeColumnInferred {
        /// File.
        path: PathBuf,
        /// Line of the header.
        line: u64,
    },
}

impl fmt::Display for DataWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataWarning::PriceOutsideRange {
                path,
                line,
                column,
                value,
                low,
                high,
            } => write!(
                f,
                "{}:{line}: {column} {value} is outside [low {low}, high {high}]; kept as published",
                path.display()
            ),
            DataWarning::TimeColumnInferred { path, line } => write!(
                f,
                "{}:{line}: the header has one column fewer than the rows and the rows' second \
                 field is a time of day; read as Date,Time,...",
                path.display()
            ),
        }
    }
}

/// Reads the bars of one file; the symbol is the file stem. Warnings
/// ([`DataWarning`]) are logged at WARN level.
///
/// Errors: any [`DataError`] about the file, with its 1-based line where there is one.
pub fn read_file(path: &Path, opts: &ReplayOptions) -> Result<Series, DataError> {
    let (series, warnings) = read_file_with_warnings(path, opts)?;
    log_warnings(&warnings);
    Ok(series)
}

/// [`read_file`], returning the warnings instead of logging them.
pub fn read_file_with_warnings(
    path: &Path,
    opts: &ReplayOptions,
) -> Result<(Series, Vec<DataWarning>), DataError> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_bytes(&bytes, path, opts)
}

/// Reads every `*.csv` file (extension matched case-insensitively) directly in `dir` — not
/// in sub-directories — keyed by symbol (the file stem), in file-name order. Other files are
/// ignored. Warnings are logged at WARN level.
///
/// Errors: the first failing file in file-name order wins ([`DataError`] with its path and
/// line); a stem that is not a valid ticker symbol is [`DataError::InvalidSymbol`], two files
/// with one stem [`DataError::DuplicateSymbol`], a directory without `.csv` files
/// [`DataError::NoFiles`].
pub fn read_dir(dir: &Path, opts: &ReplayOptions) -> Result<BTreeMap<String, Series>, DataError> {
    let io = |source| DataError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let is_csv = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
        // `metadata` follows symbolic links.
        if is_csv && std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(DataError::NoFiles {
            path: dir.to_path_buf(),
        });
    }
    files.sort();
    let mut out: BTreeMap<String, Series> = BTreeMap::new();
    let mut origin: BTreeMap<String, PathBuf> = BTreeMap::new();
    for path in files {
        let symbol = symbol_of(&path);
        if !is_valid_symbol(&symbol) {
            return Err(DataError::InvalidSymbol { path, symbol });
        }
        if let Some(other) = origin.get(&symbol) {
            return Err(DataError::DuplicateSymbol {
                path,
                symbol,
                other: other.clone(),
            });
        }
        let series = read_file(&path, opts)?;
        origin.insert(symbol.clone(), path);
        out.insert(symbol, series);
    }
    Ok(out)
}

fn log_warnings(warnings: &[DataWarning]) {
    for w in warnings {
        tracing::warn!("{w}");
    }
}

fn symbol_of(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// What a column holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Column {
    Timestamp,
    Time,
    Open,
    High,
    Low,
    Close,
    Volume,
    Ignored,
}

fn classify(name: &str, index: usize) -> Option<Column> {
    let key: String = name
        .chars()
        .filter(|c| !matches!(c, ' ' | '_' | '-'))
        .map(|c| c.to_ascii_lowercase())
        .collect();
    Some(match key.as_str() {
        "" if index == 0 => Column::Timestamp,
        "date" | "datetime" | "timestamp" => Column::Timestamp,
        "time" => Column::Time,
        "open" => Column::Open,
        "high" => Column::High,
        "low" => Column::Low,
        "close" => Column::Close,
        "volume" => Column::Volume,
        "adjclose" | "openinterest" | "oi" => Column::Ignored,
        _ => return None,
    })
}

/// Field indices of the columns the reader uses.
#[derive(Clone, Copy, Debug)]
struct Layout {
    date: usize,
    time: Option<usize>,
    open: usize,
    high: usize,
    low: usize,
    close: usize,
    volume: usize,
    width: usize,
}

impl Layout {
    fn from_header(header: &[&str], path: &Path) -> Result<Layout, DataError> {
        let mut slots: [Option<usize>; 7] = [None; 7];
        for (index, name) in header.iter().copied().enumerate() {
            let Some(col) = classify(name, index) else {
                return Err(DataError::UnknownColumn {
                    path: path.to_path_buf(),
                    line: 1,
                    column: index + 1,
                    name: name.to_string(),
                });
            };
            let slot = match col {
                Column::Timestamp => 0,
                Column::Time => 1,
                Column::Open => 2,
                Column::High => 3,
                Column::Low => 4,
                Column::Close => 5,
                Column::Volume => 6,
                Column::Ignored => continue,
            };
            if slots[slot].replace(index).is_some() {
                return Err(DataError::DuplicateColumn {
                    path: path.to_path_buf(),
                    line: 1,
                    name: name.to_string(),
                });
            }
        }
        let need = |slot: usize, name: &'static str| {
            slots[slot].ok_or_else(|| DataError::MissingColumn {
                path: path.to_path_buf(),
                line: 1,
                name,
            })
        };
        let date = need(
            0,
            if slots[1].is_some() {
                "date"
            } else {
                "timestamp"
            },
        )?;
        Ok(Layout {
            date,
            time: slots[1],
            open: need(2, "open")?,
            high: need(3, "high")?,
            low: need(4, "low")?,
            close: need(5, "close")?,
            volume: need(6, "volume")?,
            width: header.len(),
        })
    }

    /// The layout with a `Time` column inserted after the date column at index 0.
    fn with_inferred_time(self) -> Layout {
        let shift = |i: usize| if i >= 1 { i + 1 } else { i };
        Layout {
            date: self.date,
            time: Some(1),
            open: shift(self.open),
            high: shift(self.high),
            low: shift(self.low),
            close: shift(self.close),
            volume: shift(self.volume),
            width: self.width + 1,
        }
    }
}

/// A parsed timestamp, before it is placed in a time zone.
#[derive(Clone, Copy, Debug, PartialEq)]
enum When {
    Date(NaiveDate),
    Local(NaiveDateTime),
    Instant(i64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Date,
    Local,
    Instant,
}

impl When {
    fn kind(self) -> Kind {
        match self {
            When::Date(_) => Kind::Date,
            When::Local(_) => Kind::Local,
            When::Instant(_) => Kind::Instant,
        }
    }
}

impl Kind {
    fn expected(self) -> &'static str {
        match self {
            Kind::Date => "a date like the first row's (YYYY-MM-DD)",
            Kind::Local => "a date and time like the first row's (YYYY-MM-DD HH:MM:SS)",
            Kind::Instant => "a date and time with offset like the first row's (RFC 3339)",
        }
    }
}

const TIMESTAMP_FORMS: &str = "YYYY-MM-DD, YYYY-MM-DD HH:MM[:SS] or RFC 3339";

fn digits(s: &[u8]) -> Option<u32> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0')))
}

/// `YYYY-MM-DD`, `YYYY/MM/DD` or `YYYYMMDD`.
fn parse_date(s: &str) -> Option<NaiveDate> {
    let b = s.as_bytes();
    let (y, m, d) = match b.len() {
        10 if (b[4] == b'-' && b[7] == b'-') || (b[4] == b'/' && b[7] == b'/') => {
            (&b[0..4], &b[5..7], &b[8..10])
        }
        8 => (&b[0..4], &b[4..6], &b[6..8]),
        _ => return None,
    };
    NaiveDate::from_ymd_opt(digits(y)? as i32, digits(m)?, digits(d)?)
}

/// `HH:MM` or `HH:MM:SS`.
fn parse_time(s: &str) -> Option<NaiveTime> {
    let b = s.as_bytes();
    let (h, m, sec) = match b.len() {
        5 if b[2] == b':' => (&b[0..2], &b[3..5], 0),
        8 if b[2] == b':' && b[5] == b':' => (&b[0..2], &b[3..5], digits(&b[6..8])?),
        _ => return None,
    };
    NaiveTime::from_hms_opt(digits(h)?, digits(m)?, sec)
}

/// A date, a local date-time (space or `T` between), or an RFC 3339 instant.
fn parse_timestamp(s: &str) -> Option<When> {
    if let Some(d) = parse_date(s) {
        return Some(When::Date(d));
    }
    if let Some(sep) = s.find([' ', 'T'])
        && let (Some(d), Some(t)) = (parse_date(&s[..sep]), parse_time(s[sep + 1..].trim()))
    {
        return Some(When::Local(d.and_time(t)));
    }
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| When::Instant(t.timestamp()))
}

#[inline]
fn parse_price(s: &str, column: &'static str, path: &Path, line: u64) -> Result<f64, DataError> {
    match parse_plain_decimal(s) {
        Some(v) => Ok(v),
        None => parse_price_general(s, column, path, line),
    }
}

/// [`parse_price`] of the forms [`parse_plain_decimal`] leaves to `str::parse`.
#[cold]
fn parse_price_general(
    s: &str,
    column: &'static str,
    path: &Path,
    line: u64,
) -> Result<f64, DataError> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(DataError::BadNumber {
            path: path.to_path_buf(),
            line,
            column,
            value: s.to_string(),
        }),
    }
}

/// Exact powers of ten as `f64` (every one up to 1e22 is representable).
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// `ddd` or `ddd.ddd` (optionally with a leading `-`) with at most 15 significant digits, the
/// form of almost every price in a data file, parsed without the general algorithm: the
/// digits as an integer (exact below 2^53) divided by an exact power of ten is correctly
/// rounded, so the result equals `str::parse::<f64>`'s. `None` for any other form (the
/// caller falls back to `str::parse`).
#[inline]
fn parse_plain_decimal(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    let (negative, digits) = match b.first()? {
        b'-' => (true, &b[1..]),
        _ => (false, b),
    };
    let len = digits.len();
    if len == 0 || len > 16 {
        return None;
    }
    // At most 16 digits: the mantissa stays below 10^16 < 2^64.
    let mut mantissa: u64 = 0;
    let mut dot: Option<usize> = None;
    for (i, &c) in digits.iter().enumerate() {
        let d = c.wrapping_sub(b'0');
        if d < 10 {
            mantissa = mantissa * 10 + u64::from(d);
        } else if c == b'.' && dot.is_none() && i > 0 && i + 1 < len {
            dot = Some(i);
        } else {
            return None;
        }
    }
    let (count, scale) = match dot {
        Some(i) => (len - 1, len - i - 1),
        None => (len, 0),
    };
    if count > 15 {
        return None;
    }
    let v = mantissa as f64 / POW10[scale];
    Some(if negative { -v } else { v })
}

struct Row {
    line: u64,
    when: When,
    bar: Bar,
}

/// Rows of a data file, one record at a time (the header first).
struct RowParser<'p> {
    path: &'p Path,
    layout: Option<Layout>,
    kind: Option<Kind>,
    warnings: Vec<DataWarning>,
    rows: Vec<Row>,
}

impl RowParser<'_> {
    /// Takes record `fields` of file line `line` (1-based).
    fn record(&mut self, line: u64, fields: &[&str]) -> Result<(), DataError> {
        let path = self.path;
        let file = || path.to_path_buf();
        let Some(layout) = self.layout.as_mut() else {
            self.layout = Some(Layout::from_header(fields, path)?);
            return Ok(());
        };
        if self.rows.is_empty()
            && fields.len() == layout.width + 1
            && layout.time.is_none()
            && layout.date == 0
            && fields.first().copied().and_then(parse_date).is_some()
            && fields.get(1).copied().and_then(parse_time).is_some()
        {
            *layout = layout.with_inferred_time();
            self.warnings.push(DataWarning::TimeColumnInferred {
                path: file(),
                line: 1,
            });
        }
        let layout = *layout;
        if fields.len() != layout.width {
            return Err(DataError::FieldCount {
                path: file(),
                line,
                expected: layout.width,
                found: fields.len(),
            });
        }
        let field = |i: usize| fields.get(i).copied().unwrap_or("");
        // The timestamp as written, for messages.
        let written = || match layout.time {
            Some(t) => format!("{} {}", field(layout.date), field(t)),
            None => field(layout.date).to_string(),
        };
        let parsed = match layout.time {
            Some(t) => match (parse_date(field(layout.date)), parse_time(field(t))) {
                (Some(d), Some(tm)) => Ok(When::Local(d.and_time(tm))),
                _ => Err("a date (YYYY-MM-DD) and a time (HH:MM[:SS])"),
            },
            None => parse_timestamp(field(layout.date)).ok_or(TIMESTAMP_FORMS),
        };
        let when = parsed.map_err(|expected| DataError::BadTimestamp {
            path: file(),
            line,
            value: written(),
            expected,
        })?;
        let first_kind = *self.kind.get_or_insert(when.kind());
        if when.kind() != first_kind {
            return Err(DataError::BadTimestamp {
                path: file(),
                line,
                value: written(),
                expected: first_kind.expected(),
            });
        }
        let bar = Bar {
            ts: 0,
            open: parse_price(field(layout.open), "open", path, line)?,
            high: parse_price(field(layout.high), "high", path, line)?,
            low: parse_price(field(layout.low), "low", path, line)?,
            close: parse_price(field(layout.close), "close", path, line)?,
            volume: parse_price(field(layout.volume), "volume", path, line)?,
        };
        check_bar(&bar, path, line, &mut self.warnings)?;
        self.rows.push(Row { line, when, bar });
        Ok(())
    }
}

/// The number of the first blank (empty or whitespace) line that has a non-blank line
/// after it; blank lines at the end are allowed.
fn first_inner_blank_line(text: &str) -> Option<u64> {
    let mut blank = None;
    for (i, l) in text.split('\n').enumerate() {
        if l.trim().is_empty() {
            blank.get_or_insert(i as u64 + 1);
        } else if blank.is_some() {
            return blank;
        }
    }
    None
}

/// `field.trim()`, without its cost for a field that starts and ends with a printable
/// ASCII character (almost every field of a data file).
fn trimmed(field: &str) -> &str {
    match (field.as_bytes().first(), field.as_bytes().last()) {
        (Some(&a), Some(&b)) if a > b' ' && a < 0x7f && b > b' ' && b < 0x7f => field,
        _ => field.trim(),
    }
}

/// Lines in `text` (a vectorized count of its newlines, a few milliseconds for a 30 MB
/// file): the row vector is allocated once, never copied as it grows.
fn line_count(text: &str) -> usize {
    memchr::memchr_iter(b'\n', text.as_bytes()).count() + 1
}

/// Parses a whole file's bytes; `path` names the file in messages and gives the symbol.
fn parse_bytes(
    bytes: &[u8],
    path: &Path,
    opts: &ReplayOptions,
) -> Result<(Series, Vec<DataWarning>), DataError> {
    let file = || path.to_path_buf();
    const BOM: &[u8] = b"\xEF\xBB\xBF";
    let (body, skipped) = match bytes.strip_prefix(BOM) {
        Some(rest) => (rest, BOM.len()),
        None => (bytes, 0),
    };
    let text = match std::str::from_utf8(body) {
        Ok(t) => t,
        Err(e) => {
            let at = e.valid_up_to();
            let line = body[..at].iter().filter(|&&b| b == b'\n').count() as u64 + 1;
            return Err(DataError::InvalidUtf8 {
                path: file(),
                line,
                offset: at + skipped,
            });
        }
    };
    if text.trim().is_empty() {
        return Err(DataError::Empty { path: file() });
    }
    // A blank line with data after it is an error, whatever else the file holds; the fast
    // reader below checks it as it goes, and again over the whole text before it reports
    // another error.
    let blank_line =
        || first_inner_blank_line(text).map(|line| DataError::BlankLine { path: file(), line });

    let mut parser = RowParser {
        path,
        layout: None,
        kind: None,
        warnings: Vec::new(),
        // At most one row per line.
        rows: Vec::with_capacity(line_count(text)),
    };
    let lone_cr = memchr::memchr_iter(b'\r', text.as_bytes())
        .any(|i| text.as_bytes().get(i + 1) != Some(&b'\n'));
    if memchr::memchr(b'"', text.as_bytes()).is_some() || lone_cr {
        if let Some(e) = blank_line() {
            return Err(e);
        }
        // Quoted fields or old Mac line ends: the csv crate's reader.
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(text.as_bytes());
        let csv_error = |e: csv::Error| DataError::Csv {
            path: file(),
            line: e.position().map_or(0, |p| p.line()),
            message: e.to_string(),
        };
        let mut record = csv::StringRecord::new();
        while reader.read_record(&mut record).map_err(csv_error)? {
            let line = record.position().map_or(0, |p| p.line());
            let fields: Vec<&str> = record.iter().collect();
            parser.record(line, &fields)?;
        }
    } else {
        // No quotes anywhere: a record is a line and a field is what lies between commas,
        // trimmed, exactly as the csv reader reads such a file (empty lines are skipped).
        let mut fields: Vec<&str> = Vec::with_capacity(8);
        let bytes = text.as_bytes();
        let mut line = 1u64;
        let mut line_start = 0usize;
        let mut field_start = 0usize;
        let mut blank: Option<u64> = None;
        // A newline at `$i` ends a line; so does the end of the text (one code path for
        // every line).
        macro_rules! end_line {
            ($i:expr) => {{
                let i: usize = $i;
                let end = if i > line_start && bytes[i - 1] == b'\r' {
                    i - 1
                } else {
                    i
                };
                if text.get(line_start..end).unwrap_or("").trim().is_empty() {
                    blank.get_or_insert(line);
                } else if let Some(line) = blank {
                    return Err(DataError::BlankLine { path: file(), line });
                } else {
                    fields.push(trimmed(
                        text.get(field_start..end.max(field_start)).unwrap_or(""),
                    ));
                    if let Err(e) = parser.record(line, &fields) {
                        return Err(blank_line().unwrap_or(e));
                    }
                }
                fields.clear();
                line += 1;
                line_start = i + 1;
                field_start = i + 1;
            }};
        }
        // Every delimiter and blank is at most b',' in ASCII; digits, signs, dots and colons
        // are above it, so most bytes cost one comparison.
        for (i, &c) in bytes.iter().enumerate() {
            if c > b',' {
                continue;
            }
            if c == b',' {
                fields.push(trimmed(text.get(field_start..i).unwrap_or("")));
                field_start = i + 1;
            } else if c == b'\n' {
                end_line!(i);
            }
        }
        end_line!(bytes.len());
        // (The last line's bookkeeping is not read again.)
        let _ = (line, line_start, field_start, blank);
    }
    if parser.layout.is_none() {
        return Err(DataError::Empty { path: file() });
    }
    let RowParser { rows, warnings, .. } = parser;
    if rows.is_empty() {
        return Err(DataError::NoBars {
            path: file(),
            line: 1,
        });
    }
    let (timeframe, bars) = place_in_time(&rows, path, opts)?;
    Ok((
        Series {
            symbol: symbol_of(path),
            timeframe,
            bars,
        },
        warnings,
    ))
}

/// The per-row rules (see the module documentation).
fn check_bar(
    bar: &Bar,
    path: &Path,
    line: u64,
    warnings: &mut Vec<DataWarning>,
) -> Result<(), DataError> {
    for (column, value) in [
        ("open", bar.open),
        ("high", bar.high),
        ("low", bar.low),
        ("close", bar.close),
    ] {
        if value <= 0.0 {
            return Err(DataError::NonPositivePrice {
                path: path.to_path_buf(),
                line,
                column,
                value,
            });
        }
    }
    if bar.high < bar.low {
        return Err(DataError::HighBelowLow {
            path: path.to_path_buf(),
            line,
            high: bar.high,
            low: bar.low,
        });
    }
    for (column, value) in [("open", bar.open), ("close", bar.close)] {
        if value >= bar.low && value <= bar.high {
            continue;
        }
        let within = value >= bar.low * (1.0 - OPEN_CLOSE_TOLERANCE)
            && value <= bar.high * (1.0 + OPEN_CLOSE_TOLERANCE);
        if !within {
            return Err(DataError::OutsideRange {
                path: path.to_path_buf(),
                line,
                column,
                value,
                low: bar.low,
                high: bar.high,
            });
        }
        warnings.push(DataWarning::PriceOutsideRange {
            path: path.to_path_buf(),
            line,
            column,
            value,
            low: bar.low,
            high: bar.high,
        });
    }
    if bar.volume < 0.0 {
        return Err(DataError::NegativeVolume {
            path: path.to_path_buf(),
            line,
            value: bar.volume,
        });
    }
    Ok(())
}

/// Converts the rows' timestamps to UTC, checks their order, detects the timeframe and
/// stamps every bar with the start of its period.
fn place_in_time(
    rows: &[Row],
    path: &Path,
    opts: &ReplayOptions,
) -> Result<(Timeframe, Vec<Bar>), DataError> {
    let tz = opts.timezone;
    let mut bars: Vec<Bar> = Vec::with_capacity(rows.len());
    let mut days = LocalDayOffsets::new(tz);
    for (i, row) in rows.iter().enumerate() {
        let previous = bars.last().map(|b| b.ts);
        let ts = match row.when {
            When::Date(d) => local_midnight(tz, d).timestamp(),
            When::Instant(t) => t,
            When::Local(local) => match days.utc_of(&local) {
                Some(ts) => ts,
                None => local_to_utc(tz, &local, previous, path, row.line)?,
            },
        };
        if let Some(p) = previous {
            check_order(p, ts, &rows[i - 1], row, path)?;
        }
        bars.push(Bar { ts, ..row.bar });
    }

    let timeframe = detect_timeframe(rows, &bars, path)?;
    let restamp = match (rows[0].when.kind(), timeframe) {
        (_, Timeframe::W1) => true,
        (Kind::Date, _) => false,
        (_, Timeframe::D1) => true,
        _ => false,
    };
    if restamp {
        for (i, bar) in bars.iter_mut().enumerate() {
            bar.ts = period_start(timeframe, bar.ts, tz, path, rows[i].line)?;
        }
        for i in 1..bars.len() {
            check_order(bars[i - 1].ts, bars[i].ts, &rows[i - 1], &rows[i], path)?;
        }
    } else if timeframe.is_intraday() && opts.stamp == BarStamp::End {
        let period = timeframe.nominal_seconds();
        for bar in &mut bars {
            bar.ts -= period;
        }
    }
    Ok((timeframe, bars))
}

/// The instant of local time `local` in `tz`: the earlier of two on a repeated hour, unless
/// the previous bar (`previous`) is at or after it; a time the clock skips is an error.
fn local_to_utc(
    tz: Tz,
    local: &NaiveDateTime,
    previous: Option<i64>,
    path: &Path,
    line: u64,
) -> Result<i64, DataError> {
    match tz.from_local_datetime(local) {
        chrono::LocalResult::Single(t) => Ok(t.timestamp()),
        chrono::LocalResult::Ambiguous(early, late) => {
            Ok(if previous.is_some_and(|p| early.timestamp() <= p) {
                late.timestamp()
            } else {
                early.timestamp()
            })
        }
        chrono::LocalResult::None => Err(DataError::NonexistentTime {
            path: path.to_path_buf(),
            line,
            value: local.to_string(),
            timezone: tz.name().to_string(),
        }),
    }
}

/// The UTC offset of local days without a clock change, cached: the rows of a day of
/// intraday bars cost a subtraction each instead of a time-zone conversion.
struct LocalDayOffsets {
    tz: Tz,
    /// The day cached, and its offset (local minus UTC, seconds) when the whole day has
    /// that one offset (`None`: the clock changes that day; convert each time).
    day: Option<(NaiveDate, Option<i64>)>,
}

impl LocalDayOffsets {
    fn new(tz: Tz) -> LocalDayOffsets {
        LocalDayOffsets { tz, day: None }
    }

    /// The Unix time of `local` when its day has one offset all day (then it is the only
    /// instant with that local time); `None` otherwise.
    fn utc_of(&mut self, local: &NaiveDateTime) -> Option<i64> {
        let date = local.date();
        let offset = match self.day {
            Some((d, offset)) if d == date => offset,
            _ => {
                let offset = self.uniform_offset(date);
                self.day = Some((date, offset));
                offset
            }
        };
        offset.map(|o| local.and_utc().timestamp() - o)
    }

    /// The offset of local day `date` when its first and last second have the same one.
    fn uniform_offset(&self, date: NaiveDate) -> Option<i64> {
        let first = date.and_time(NaiveTime::MIN);
        let last = date.succ_opt()?.and_time(NaiveTime::MIN) - chrono::TimeDelta::seconds(1);
        let offset_at = |local: &NaiveDateTime| match self.tz.from_local_datetime(local) {
            chrono::LocalResult::Single(t) => Some(local.and_utc().timestamp() - t.timestamp()),
            _ => None,
        };
        let a = offset_at(&first)?;
        (offset_at(&last)? == a).then_some(a)
    }
}

fn check_order(
    previous: i64,
    ts: i64,
    prev: &Row,
    row: &Row,
    path: &Path,
) -> Result<(), DataError> {
    if ts > previous {
        return Ok(());
    }
    let (path, line, previous_line) = (path.to_path_buf(), row.line, prev.line);
    Err(if ts == previous {
        DataError::Duplicate {
            path,
            line,
            previous_line,
        }
    } else {
        DataError::OutOfOrder {
            path,
            line,
            previous_line,
        }
    })
}

fn period_start(
    timeframe: Timeframe,
    ts: i64,
    tz: Tz,
    path: &Path,
    line: u64,
) -> Result<i64, DataError> {
    let t = DateTime::<Utc>::from_timestamp(ts, 0).ok_or_else(|| DataError::BadTimestamp {
        path: path.to_path_buf(),
        line,
        value: ts.to_string(),
        expected: "a time within ±262,000 years",
    })?;
    Ok(timeframe.period_start(t, tz).timestamp())
}

/// The most common spacing between consecutive bars (ties: the shorter), as a timeframe.
fn detect_timeframe(rows: &[Row], bars: &[Bar], path: &Path) -> Result<Timeframe, DataError> {
    let date_only = rows[0].when.kind() == Kind::Date;
    let mut counts: BTreeMap<i64, usize> = BTreeMap::new();
    for i in 1..rows.len() {
        let spacing = match (rows[i - 1].when, rows[i].when) {
            (When::Date(a), When::Date(b)) => (b - a).num_days(),
            _ => bars[i].ts - bars[i - 1].ts,
        };
        *counts.entry(spacing).or_default() += 1;
    }
    let mut best: Option<(i64, usize)> = None;
    for (&spacing, &n) in &counts {
        if best.is_none_or(|(_, m)| n > m) {
            best = Some((spacing, n));
        }
    }
    let unknown = |detail: String| DataError::UnknownTimeframe {
        path: path.to_path_buf(),
        detail,
    };
    let Some((spacing, n)) = best else {
        return if date_only {
            Ok(Timeframe::D1)
        } else {
            Err(unknown(
                "one bar with a time of day; the spacing of at least two bars is needed".into(),
            ))
        };
    };
    let total = rows.len() - 1;
    if date_only {
        return match spacing {
            1 => Ok(Timeframe::D1),
            7 => Ok(Timeframe::W1),
            _ => Err(unknown(format!(
                "the most common spacing between dates is {spacing} days ({n} of {total}); \
                 expected 1 (daily) or 7 (weekly)"
            ))),
        };
    }
    Timeframe::ALL
        .into_iter()
        .find(|t| t.nominal_seconds() == spacing)
        .ok_or_else(|| {
            unknown(format!(
                "the most common spacing between bars is {spacing} s ({n} of {total}); \
                 expected one of 1m 5m 15m 30m 1h 4h 1d 1w"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, opts: &ReplayOptions) -> Result<(Series, Vec<DataWarning>), DataError> {
        parse_bytes(text.as_bytes(), Path::new("TEST.csv"), opts)
    }

    fn ny() -> ReplayOptions {
        ReplayOptions::default()
    }

    #[test]
    fn plain_decimals_parse_exactly_as_the_standard_parser() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..200_000 {
            // xorshift: digits of every length and scale.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let digits = (x % 1_000_000_000_000_000) as u128;
            let scale = (x >> 60) as usize % 9;
            let mut text = digits.to_string();
            if scale > 0 && scale < text.len() {
                text.insert(text.len() - scale, '.');
            }
            let want: f64 = text.parse().unwrap();
            // Fewer than 16 digits: always the fast path, bit for bit the standard result.
            let got = parse_plain_decimal(&text).unwrap_or_else(|| panic!("{text}"));
            assert_eq!(got.to_bits(), want.to_bits(), "{text}");
        }
        for (text, want) in [
            ("0.5", Some(0.5)),
            ("-12.25", Some(-12.25)),
            ("7", Some(7.0)),
        ] {
            assert_eq!(parse_plain_decimal(text), want, "{text}");
        }
        for other in [
            "",
            "-",
            ".5",
            "5.",
            "1e5",
            "+1",
            "1.2.3",
            "nan",
            "1,5",
            "1234567890123456",
        ] {
            assert_eq!(parse_plain_decimal(other), None, "{other}");
        }
    }

    /// The cached offsets of local days give chrono's instant for every local minute of a
    /// year of New York time and leave the days with a clock change to chrono.
    #[test]
    fn local_day_offsets_agree_with_the_time_zone() {
        let tz = chrono_tz::America::New_York;
        let mut days = LocalDayOffsets::new(tz);
        let mut changes = 0;
        let start = NaiveDate::from_ymd_opt(2023, 12, 30).unwrap();
        for day in 0..370 {
            let date = start + chrono::TimeDelta::days(day);
            let mut cached = 0;
            for minute in 0..24 * 60 {
                let local = date.and_time(NaiveTime::MIN) + chrono::TimeDelta::minutes(minute);
                let Some(ts) = days.utc_of(&local) else {
                    continue;
                };
                cached += 1;
                match tz.from_local_datetime(&local) {
                    chrono::LocalResult::Single(t) => assert_eq!(ts, t.timestamp(), "{local}"),
                    other => panic!("{local}: cached as {ts}, chrono says {other:?}"),
                }
            }
            assert!(
                cached == 0 || cached == 24 * 60,
                "{date}: {cached} minutes cached"
            );
            changes += usize::from(cached == 0);
        }
        // 2024-03-10 and 2024-11-03.
        assert_eq!(changes, 2);
        let mut utc = LocalDayOffsets::new(chrono_tz::UTC);
        let local = start.and_hms_opt(13, 5, 0).unwrap();
        assert_eq!(utc.utc_of(&local), Some(local.and_utc().timestamp()));
    }

    #[test]
    fn quoted_and_plain_files_read_the_same() {
        let plain = "Date,Open,High,Low,Close,Volume\r\n2024-01-02, 10.5,11,10,10.75,100\r\n2024-01-03,10.75,12.125,10.5,12,2500\r\n\r\n";
        let quoted = "\"Date\",Open,High,Low,Close,Volume\n\"2024-01-02\", 10.5,11,10,10.75,100\n2024-01-03,10.75,12.125,10.5,12,\"2500\"\n";
        let (a, wa) = parse(plain, &ny()).unwrap();
        let (b, wb) = parse(quoted, &ny()).unwrap();
        assert_eq!(a.bars, b.bars);
        assert_eq!(a.bars.len(), 2);
        assert_eq!(a.bars[1].high, 12.125);
        assert_eq!(wa.len(), wb.len());
        // A bad field is reported on its line by both readers.
        for text in [
            "Date,Open,High,Low,Close,Volume\n2024-01-02,10,11,10,10.5,100\n2024-01-03,x,11,10,10.5,100\n",
            "Date,Open,High,Low,Close,Volume\n2024-01-02,10,11,10,10.5,100\n\"2024-01-03\",x,11,10,10.5,100\n",
        ] {
            match parse(text, &ny()) {
                Err(DataError::BadNumber { line, column, .. }) => {
                    assert_eq!((line, column), (3, "open"), "{text}")
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    fn utc_opts(stamp: BarStamp) -> ReplayOptions {
        ReplayOptions {
            timezone: chrono_tz::UTC,
            stamp,
        }
    }

    fn ts(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp()
    }

    #[test]
    fn yahoo_daily_bars_start_at_local_midnight() {
        let csv = "Date,Open,High,Low,Close,Adj Close,Volume\n\
                   2012-01-03,10,11,9,10.5,10.1,1000\n\
                   2012-01-04,10.5,12,10,11,10.6,0\n";
        let (s, w) = parse(csv, &ny()).unwrap();
        assert!(w.is_empty());
        assert_eq!(s.symbol, "TEST");
        assert_eq!(s.timeframe, Timeframe::D1);
        assert_eq!(s.bars[0].ts, ts("2012-01-03T05:00:00Z"));
        assert_eq!(
            s.bars[1],
            Bar {
                ts: ts("2012-01-04T05:00:00Z"),
                open: 10.5,
                high: 12.0,
                low: 10.0,
                close: 11.0,
                volume: 0.0
            }
        );
    }

    #[test]
    fn column_names_are_matched_ignoring_case_spaces_and_order() {
        let csv = "\u{feff}volume,CLOSE,adj_close,low,High,open,DATE\r\n\
                   5,2,2,1,3,2.5,2012/01/03\r\n\
                   6,2,2,1,3,2.5,20120104\r\n";
        let (s, _) = parse(csv, &ny()).unwrap();
        assert_eq!(s.bars.len(), 2);
        assert_eq!(
            (
                s.bars[1].open,
                s.bars[1].high,
                s.bars[1].low,
                s.bars[1].close
            ),
            (2.5, 3.0, 1.0, 2.0)
        );
        assert_eq!(s.bars[1].volume, 6.0);
    }

    #[test]
    fn quoted_and_padded_fields_are_read() {
        let csv = "\"Datetime\", Open ,High,Low,Close,Volume\n\
                   \"2017-04-19 09:00\", 1.5 ,2,1,1.5,\"10\"\n\
                   2017-04-19T10:00:00,1.5,2,1,1.5,10\n";
        let (s, _) = parse(csv, &utc_opts(BarStamp::Start)).unwrap();
        assert_eq!(s.timeframe, Timeframe::H1);
        assert_eq!(s.bars[0].ts, ts("2017-04-19T09:00:00Z"));
        assert_eq!(s.bars[1].ts, ts("2017-04-19T10:00:00Z"));
    }

    #[test]
    fn rfc3339_instants_ignore_the_configured_zone() {
        let csv = "timestamp,open,high,low,close,volume\n\
                   2017-04-19T09:00:00+02:00,1,1,1,1,1\n\
                   2017-04-19T09:05:00+02:00,1,1,1,1,1\n";
        let (s, _) = parse(csv, &ny()).unwrap();
        assert_eq!(s.timeframe, Timeframe::M5);
        assert_eq!(s.bars[0].ts, ts("2017-04-19T07:00:00Z"));
    }

    #[test]
    fn end_stamps_are_moved_to_the_period_start() {
        let csv = "Date,Time,Open,High,Low,Close,Volume\n\
                   2006-01-02,09:05:00,1,1,1,1,0\n\
                   2006-01-02,09:10:00,1,1,1,1,0\n";
        let (s, _) = parse(csv, &utc_opts(BarStamp::End)).unwrap();
        assert_eq!(s.timeframe, Timeframe::M5);
        assert_eq!(s.bars[0].ts, ts("2006-01-02T09:00:00Z"));
        let (s, _) = parse(csv, &utc_opts(BarStamp::Start)).unwrap();
        assert_eq!(s.bars[0].ts, ts("2006-01-02T09:05:00Z"));
    }

    #[test]
    fn a_header_one_field_short_with_a_time_in_field_2_is_read_as_date_and_time() {
        let csv = "Date,Open,High,Low,Close,Volume,OpenInterest\n\
                   2006-01-02,09:01:00,3602.00,3603.00,3597.00,3599.00,5699,0\n\
                   2006-01-02,09:02:00,3600.00,3601.00,3598.00,3599.00,894,0\n";
        let (s, w) = parse(csv, &utc_opts(BarStamp::End)).unwrap();
        assert_eq!(s.timeframe, Timeframe::M1);
        assert_eq!(s.bars[0].ts, ts("2006-01-02T09:00:00Z"));
        assert_eq!(s.bars[0].open, 3602.0);
        assert_eq!(s.bars[0].volume, 5699.0);
        assert_eq!(
            w,
            vec![DataWarning::TimeColumnInferred {
                path: "TEST.csv".into(),
                line: 1
            }]
        );
        // A later row that has the header's width is a field-count error.
        let bad = format!("{csv}2006-01-02,3600.00,3601.00,3598.00,3599.00,894,0\n");
        let e = parse(&bad, &utc_opts(BarStamp::End)).unwrap_err();
        assert!(
            matches!(
                e,
                DataError::FieldCount {
                    line: 4,
                    expected: 8,
                    found: 7,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn weekly_bars_start_on_monday_whatever_day_they_are_dated() {
        // Fridays 6 and 13 January 2012.
        let csv = "Date,Open,High,Low,Close,Volume\n\
                   2012-01-06,1,1,1,1,1\n2012-01-13,1,1,1,1,1\n2012-01-20,1,1,1,1,1\n";
        let (s, _) = parse(csv, &ny()).unwrap();
        assert_eq!(s.timeframe, Timeframe::W1);
        assert_eq!(s.bars[0].ts, ts("2012-01-02T05:00:00Z"));
        assert_eq!(s.bars[1].ts, ts("2012-01-09T05:00:00Z"));
    }

    #[test]
    fn daily_bars_with_a_time_of_day_start_at_local_midnight() {
        let csv = ",Open,High,Low,Close,Volume\n\
                   2012-03-09 16:00:00,1,1,1,1,1\n2012-03-12 16:00:00,1,1,1,1,1\n\
                   2012-03-13 16:00:00,1,1,1,1,1\n";
        let (s, _) = parse(csv, &ny()).unwrap();
        assert_eq!(s.timeframe, Timeframe::D1);
        assert_eq!(s.bars[0].ts, ts("2012-03-09T05:00:00Z"));
        // After the spring change New York is UTC-4.
        assert_eq!(s.bars[1].ts, ts("2012-03-12T04:00:00Z"));
    }

    #[test]
    fn an_hour_repeated_at_the_autumn_change_reads_in_order() {
        // New York, 4 November 2012: 01:00-01:59 happens twice (EDT, then EST).
        let csv = "Datetime,Open,High,Low,Close,Volume\n\
                   2012-11-04 00:00,1,1,1,1,1\n2012-11-04 01:00,1,1,1,1,1\n\
                   2012-11-04 01:00,1,1,1,1,1\n2012-11-04 02:00,1,1,1,1,1\n";
        let (s, _) = parse(csv, &ny()).unwrap();
        let got: Vec<i64> = s.bars.iter().map(|b| b.ts).collect();
        assert_eq!(
            got,
            vec![
                ts("2012-11-04T04:00:00Z"),
                ts("2012-11-04T05:00:00Z"),
                ts("2012-11-04T06:00:00Z"),
                ts("2012-11-04T07:00:00Z")
            ]
        );
        assert_eq!(s.timeframe, Timeframe::H1);
    }

    #[test]
    fn open_slightly_below_low_is_kept_with_a_warning() {
        // SPY 2015-03-30 as published by Yahoo.
        let csv = "Date,Open,High,Low,Close,Adj Close,Volume\n\
                   2015-03-30,205.740005,208.610001,206.960007,208.250000,196.814926,96180400\n";
        let (s, w) = parse(csv, &ny()).unwrap();
        assert_eq!(s.bars[0].open, 205.740005);
        assert_eq!(s.bars[0].low, 206.960007);
        assert!(matches!(
            w.as_slice(),
            [DataWarning::PriceOutsideRange {
                line: 2,
                column: "open",
                ..
            }]
        ));
    }

    #[test]
    fn close_far_above_high_is_rejected() {
        let csv = "Date,Open,High,Low,Close,Volume\n2012-01-03,10,11,9,20.1,5\n";
        let e = parse(csv, &ny()).unwrap_err();
        assert!(
            matches!(
                e,
                DataError::OutsideRange {
                    line: 2,
                    column: "close",
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(e.line(), Some(2));
        assert_eq!(e.path(), Path::new("TEST.csv"));
    }

    #[test]
    fn infinite_and_nan_prices_are_not_numbers() {
        for v in ["NaN", "inf", "-inf", "", "1,5"] {
            let csv = format!("Date,Open,High,Low,Close,Volume\n2012-01-03,10,11,9,10,\"{v}\"\n");
            let e = parse(&csv, &ny()).unwrap_err();
            assert!(
                matches!(
                    e,
                    DataError::BadNumber {
                        line: 2,
                        column: "volume",
                        ..
                    }
                ),
                "{v}: {e}"
            );
        }
    }

    #[test]
    fn mixed_timestamp_kinds_are_rejected() {
        let csv = "Date,Open,High,Low,Close,Volume\n\
                   2012-01-03,1,1,1,1,1\n2012-01-04 10:00,1,1,1,1,1\n";
        let e = parse(csv, &ny()).unwrap_err();
        assert!(matches!(e, DataError::BadTimestamp { line: 3, .. }), "{e}");
    }

    #[test]
    fn one_intraday_bar_has_no_timeframe_but_one_daily_bar_is_daily() {
        let csv = "Date,Open,High,Low,Close,Volume\n2012-01-03 10:00,1,1,1,1,1\n";
        let e = parse(csv, &ny()).unwrap_err();
        assert!(matches!(e, DataError::UnknownTimeframe { .. }), "{e}");
        let csv = "Date,Open,High,Low,Close,Volume\n2012-01-03,1,1,1,1,1\n";
        assert_eq!(parse(csv, &ny()).unwrap().0.timeframe, Timeframe::D1);
    }

    #[test]
    fn two_daily_rows_in_one_week_of_a_weekly_file_are_duplicates() {
        let csv = "Date,Open,High,Low,Close,Volume\n\
                   2012-01-02,1,1,1,1,1\n2012-01-09,1,1,1,1,1\n2012-01-10,1,1,1,1,1\n\
                   2012-01-16,1,1,1,1,1\n2012-01-23,1,1,1,1,1\n";
        let e = parse(csv, &ny()).unwrap_err();
        assert!(
            matches!(
                e,
                DataError::Duplicate {
                    line: 4,
                    previous_line: 3,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn trailing_blank_lines_are_allowed() {
        let csv = "Date,Open,High,Low,Close,Volume\n2012-01-03,1,1,1,1,1\n\n\r\n";
        assert_eq!(parse(csv, &ny()).unwrap().0.bars.len(), 1);
    }

    /// A blank line with data after it is reported at its line, before any other error of
    /// the file (one before it or after it), with and without quoted fields.
    #[test]
    fn an_inner_blank_line_is_the_error_reported() {
        let head = "Date,Open,High,Low,Close,Volume\n";
        for (body, line) in [
            ("2012-01-03,1,1,1,1,1\n\n2012-01-04,1,1,1,1,1\n", 3),
            ("2012-01-03,1,1,1,1,1\n  \r\n2012-01-04,1,1,1,1,1\n", 3),
            (
                "2012-01-03,x,1,1,1,1\n2012-01-04,1,1,1,1,1\n\n2012-01-05,1,1,1,1,1",
                4,
            ),
            ("2012-01-03,1,1,1,1,1\n\n2012-01-04,x,1,1,1,1\n", 3),
            ("2012-01-03,\"1\",1,1,1,1\n\n2012-01-04,1,1,1,1,1\n", 3),
        ] {
            let e = parse(&format!("{head}{body}"), &ny()).unwrap_err();
            assert!(
                matches!(e, DataError::BlankLine { line: l, .. } if l == line),
                "{body:?}: {e}"
            );
        }
    }

    #[test]
    fn error_messages_name_file_and_line() {
        let csv = "Date,Open,High,Low,Close,Volume\n2012-01-03,1,1,2,1,1\n";
        let e = parse(csv, &ny()).unwrap_err();
        assert_eq!(e.to_string(), "TEST.csv:2: high 1 is below low 2");
    }

    #[test]
    fn timestamp_parsers_are_strict() {
        assert!(parse_date("2012-1-3").is_none());
        assert!(parse_date("2012-02-30").is_none());
        assert!(parse_date("2012-01-03x").is_none());
        assert!(parse_time("24:00").is_none());
        assert!(parse_time("9:30").is_none());
        assert_eq!(parse_time("09:30"), NaiveTime::from_hms_opt(9, 30, 0));
        assert!(parse_timestamp("2012-01-03 09:30:00+01:00").is_some());
        assert!(parse_timestamp("yesterday").is_none());
    }
}

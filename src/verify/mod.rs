//! Drift detection and repair: compare a destination with its source row by row, and fix
//! the rows that differ.
//!
//! A destination drifts from its source when something writes to it behind ormsync's
//! back, when the source is written outside the captured paths (bulk operations, raw SQL,
//! another program), or after an operator's mistake. [`verify`] finds such rows;
//! [`repair`] fixes them, by default through the source's outbox so the fix travels the
//! normal path, ordered with the live changes.
//!
//! # How verify compares
//!
//! Both sides are read by the table's [`TableSpec`] (its shipped columns, each decoded by
//! its type tag, so no Rust entity type is needed: [`verify_table`], [`Verifier::table`]),
//! in primary-key order (byte order for text, see below), a chunk at a time by keyset
//! pagination (`WHERE (key) > (last key) ORDER BY key LIMIT n`, composite keys included),
//! the two sides concurrently, each on its own task. Each row's
//! shipped columns (those not marked `#[replicated(skip)]`) are turned into a canonical
//! encoding that makes equal values from different engines equal: decimals normalized,
//! zoned timestamps as UTC instants, JSON with sorted keys, NULL distinct from the empty
//! string (in full below). The two key-ordered streams of (key, encoding) are then
//! merge-joined: a key only at the source is *missing* at the destination, a key only at
//! the destination is *extra*, a key on both sides with different encodings is
//! *different*, and for those the columns that differ are named. Rows are compared by
//! their encodings byte for byte, not by a hash of them: exact, and cheaper than hashing
//! both sides.
//!
//! Memory stays at a few chunks per side however large the table, and where the key sorts
//! by bytes no long statement is held: each chunk is its own. A chunk is streamed and decoded row by row as it
//! arrives, so the server sends while the client decodes, and stops at about 8 MiB of rows
//! (see `bounded_read`) as well as at its row count. On a table that is being written, a row
//! changed between the reads of the two sides (or not yet shipped) shows as drift; verify
//! when the replicator has caught up (`sync_now()`), or verify again the rows reported.
//!
//! Canonical encoding: integers of any width compare by value; floats by the bits of
//! the `f64` (one NaN, `-0.0` as `0.0`); decimals normalized (`1.50` = `1.5`); text,
//! enum variants and binary by their bytes; JSON as canonical text (sorted keys, `1.0` =
//! `1`); zoned timestamps as the UTC instant to the nanosecond; naive timestamps, dates
//! and times as stored; UUIDs by their bytes.
//!
//! Keys are compared in byte order for text and enum labels, by value otherwise, and both
//! sides are read in that order whatever the database's own. Each side's catalog says how
//! it sorts the key: a column that sorts by bytes there (numbers, UUIDs, binary, text
//! under `"C"`/`POSIX`/`C.UTF-8` in PostgreSQL, a `*_bin` collation in MariaDB/MySQL,
//! `BINARY` in SQLite) is read by keyset pagination as above. A side whose key sorts
//! otherwise (a `_ci` collation, a linguistic one, a native enum in declaration order,
//! `COLLATE NOCASE`) is read in one statement sorted by a byte-order expression
//! (`CAST(k AS BINARY)`, `k COLLATE "C"`, `k COLLATE BINARY`), streamed and cut into chunks
//! the same way: pagination there would compare by the native order, and sorting each
//! chunk by bytes instead would make every chunk a full scan. The trade-off on that side:
//! one statement open for the whole read, sorted by the server (which spills to disk
//! for a large table) before the first row arrives, instead of short indexed ones; on
//! MariaDB its rows must be taken within `net_write_timeout` of each other, which the
//! merge does as both sides advance. Either way, a side that returns a key not above the
//! one before is refused with [`Error::Config`] rather than mis-merged.
//!
//! # Examples
//!
//! ```no_run
//! # mod customers {
//! #     use sea_orm::entity::prelude::*;
//! #     #[derive(Clone, Debug, PartialEq, DeriveEntityModel, ormsync::Replicated)]
//! #     #[sea_orm(table_name = "customers")]
//! #     pub struct Model { #[sea_orm(primary_key)] pub id: i64, pub name: String }
//! #     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
//! #     pub enum Relation {}
//! # }
//! # async fn run() -> ormsync::Result<()> {
//! # let source: sea_orm::DatabaseConnection = unimplemented!();
//! # let backup: sea_orm::DatabaseConnection = unimplemented!();
//! use ormsync::verify::{RepairOptions, VerifyOptions, Verifier};
//!
//! let verifier = Verifier::new(source, backup).entity::<customers::Entity>();
//! let reports = verifier.verify(&VerifyOptions::default().chunk_size(5000)).await?;
//! for report in &reports {
//!     println!("{report}"); // counts, then the rows missing, extra or different
//! }
//! // Queue the fixes in the source's outbox; the replicator ships them.
//! let outcomes = verifier.repair(&reports, &RepairOptions::default()).await?;
//! # Ok(()) }
//! ```

mod key_order;
mod merge;
mod repair;
mod report;
mod scan;

use std::time::Instant;

use sea_orm::DatabaseConnection;
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument;

pub use repair::{
    Drift, Fix, RepairAction, RepairMode, RepairOptions, RepairOutcome, repair, repair_table,
};
pub use report::{Report, RowDiff, ValueDiff};

use crate::entity::{Replicated, TableSpec};
use crate::error::{Error, Result};
use scan::Side;

/// How [`verify`] reads and reports.
///
/// ```
/// use ormsync::verify::VerifyOptions;
///
/// let opts = VerifyOptions::default().chunk_size(10_000).max_reported(20);
/// assert_eq!(opts.chunk_size, 10_000);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyOptions {
    /// Rows read per query on each side at most (per chunk, on a side read in one
    /// statement because its key does not sort by bytes). Default: 10000. Memory grows with it (a
    /// few chunks per side are held at once), round trips shrink: verifying a million
    /// rows PostgreSQL vs MariaDB in the verify bench gave 520,000–540,000 rows/s per side
    /// at 27 MiB peak RSS (5000: 480,000–520,000 at 21 MiB; 1000: 380,000–410,000 at
    /// 13 MiB). A chunk also stops at about 8 MiB of rows, so wide rows come fewer a chunk.
    pub chunk_size: u64,
    /// Rows listed per kind (missing, extra, different) in the report; the counts cover
    /// all. Default: 1000.
    pub max_reported: usize,
    /// Whether a row that differs lists each differing column's values on both sides
    /// ([`RowDiff::values`]). Default: off, as values may be sensitive.
    pub show_values: bool,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            chunk_size: 10_000,
            max_reported: 1000,
            show_values: false,
        }
    }
}

impl VerifyOptions {
    /// Sets [`chunk_size`](VerifyOptions::chunk_size) (at least 1).
    #[must_use]
    pub fn chunk_size(mut self, rows: u64) -> Self {
        self.chunk_size = rows.max(1);
        self
    }

    /// Sets [`max_reported`](VerifyOptions::max_reported).
    #[must_use]
    pub fn max_reported(mut self, rows: usize) -> Self {
        self.max_reported = rows;
        self
    }

    /// Sets [`show_values`](VerifyOptions::show_values).
    #[must_use]
    pub fn show_values(mut self, show: bool) -> Self {
        self.show_values = show;
        self
    }
}

/// Compares entity `E`'s table at `dest` with the one at `source`: [`verify_table`] with
/// `E::table_spec()`.
///
/// Reads both sides in key order, concurrently, a chunk at a time, and merge-joins them
/// (see the [module docs](crate::verify)); returns the rows missing at the destination, extra
/// there, and different (with the columns that differ). Columns marked
/// `#[replicated(skip)]` are not compared. Writes nothing.
///
/// # Errors
///
/// As for [`verify_table`].
///
/// # Examples
///
/// ```no_run
/// # mod customers {
/// #     use sea_orm::entity::prelude::*;
/// #     #[derive(Clone, Debug, PartialEq, DeriveEntityModel, ormsync::Replicated)]
/// #     #[sea_orm(table_name = "customers")]
/// #     pub struct Model { #[sea_orm(primary_key)] pub id: i64, pub name: String }
/// #     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
/// #     pub enum Relation {}
/// # }
/// # async fn run(source: sea_orm::DatabaseConnection, backup: sea_orm::DatabaseConnection)
/// # -> ormsync::Result<()> {
/// use ormsync::verify::{VerifyOptions, verify};
///
/// let report = verify::<customers::Entity>(&source, &backup, &VerifyOptions::default()).await?;
/// assert!(report.is_clean(), "{report}");
/// # Ok(()) }
/// ```
pub async fn verify<E: Replicated>(
    source: &DatabaseConnection,
    dest: &DatabaseConnection,
    opts: &VerifyOptions,
) -> Result<Report> {
    verify_table(source, dest, &E::table_spec(), opts).await
}

/// Compares the table `spec` describes at `dest` with the one at `source`, without the
/// entity's Rust type: what the command line uses.
///
/// Both sides are read by the spec's shipped columns, each decoded by its type tag
/// ([`TableSpec::types`]), in key order, concurrently, a chunk at a time, and merge-joined
/// (see the [module docs](crate::verify)). Writes nothing.
///
/// # Errors
///
/// [`Error::Db`] when a side cannot be read (for example the table does not exist there);
/// [`Error::Read`] when a column does not decode as its type; [`Error::Config`] when a side
/// returns its keys out of the byte order asked of it (a collation its catalog calls
/// binary that pads with spaces), or when the spec's types do not match its columns or its
/// key is not among them.
///
/// # Examples
///
/// ```no_run
/// # mod customers {
/// #     use sea_orm::entity::prelude::*;
/// #     #[derive(Clone, Debug, PartialEq, DeriveEntityModel, ormsync::Replicated)]
/// #     #[sea_orm(table_name = "customers")]
/// #     pub struct Model { #[sea_orm(primary_key)] pub id: i64, pub name: String }
/// #     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
/// #     pub enum Relation {}
/// # }
/// # async fn run(source: sea_orm::DatabaseConnection, backup: sea_orm::DatabaseConnection)
/// # -> ormsync::Result<()> {
/// use ormsync::Replicated;
/// use ormsync::verify::{VerifyOptions, verify_table};
///
/// // A spec may come from anywhere: an entity, a file, the command line.
/// let spec = customers::Entity::table_spec();
/// let report = verify_table(&source, &backup, &spec, &VerifyOptions::default()).await?;
/// println!("{report}");
/// # Ok(()) }
/// ```
pub async fn verify_table(
    source: &DatabaseConnection,
    dest: &DatabaseConnection,
    spec: &TableSpec,
    opts: &VerifyOptions,
) -> Result<Report> {
    crate::keyset::typed_key(spec)?;
    let span = tracing::info_span!("ormsync.verify", table = %spec.table);
    async move {
        let started = Instant::now();
        let chunk = opts.chunk_size.max(1);
        // One chunk in each channel, one being read, one being merged: the memory bound.
        let (stx, srx) = mpsc::channel(1);
        let (dtx, drx) = mpsc::channel(1);
        let mut report = Report::new(spec.table.clone(), spec.key.clone());
        // Each side on its own task, so that on a multi-threaded runtime the two sides
        // decode and hash on two cores, apart from the merge: on one task, that work was
        // done for both sides one after the other. Dropping the handles (verify cancelled,
        // or the merge failed) stops the readers.
        let feed = |db: &DatabaseConnection, side, tx| {
            AbortOnDropHandle::new(tokio::spawn(
                scan::feed(db.clone(), spec.clone(), side, chunk, tx).in_current_span(),
            ))
        };
        let readers = [
            (Side::Source, feed(source, Side::Source, stx)),
            (Side::Destination, feed(dest, Side::Destination, dtx)),
        ];
        merge::merge(
            srx,
            drx,
            &spec.columns,
            &mut report,
            opts.max_reported,
            opts.show_values,
        )
        .await?;
        // A reader that panicked dropped its channel as if its side had ended: the report
        // would call the rest of the other side's rows missing or extra, and a repair
        // would act on it.
        for (side, reader) in readers {
            if let Err(e) = reader.await {
                return Err(Error::db(
                    format!("verify `{}`: reading the {side}", spec.table),
                    sea_orm::DbErr::Custom(e.to_string()),
                ));
            }
        }
        report.elapsed = started.elapsed();
        tracing::info!(
            table = %report.table,
            source_rows = report.source_rows,
            dest_rows = report.dest_rows,
            missing = report.missing_count,
            extra = report.extra_count,
            different = report.different_count,
            elapsed_ms = report.elapsed.as_millis() as u64,
            rows_per_second = report.rows_per_second() as u64,
            "verify done"
        );
        Ok(report)
    }
    .instrument(span)
    .await
}

/// [`verify`] and [`repair`] over several entities of one source and destination.
///
/// Tables are verified one after the other, in the order registered.
///
/// ```no_run
/// # mod a { use sea_orm::entity::prelude::*;
/// #   #[derive(Clone, Debug, PartialEq, DeriveEntityModel, ormsync::Replicated)]
/// #   #[sea_orm(table_name = "a")] pub struct Model { #[sea_orm(primary_key)] pub id: i64 }
/// #   #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)] pub enum Relation {} }
/// # mod b { use sea_orm::entity::prelude::*;
/// #   #[derive(Clone, Debug, PartialEq, DeriveEntityModel, ormsync::Replicated)]
/// #   #[sea_orm(table_name = "b")] pub struct Model { #[sea_orm(primary_key)] pub id: i64 }
/// #   #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)] pub enum Relation {} }
/// # async fn run(source: sea_orm::DatabaseConnection, backup: sea_orm::DatabaseConnection)
/// # -> ormsync::Result<()> {
/// use ormsync::verify::{Verifier, VerifyOptions};
///
/// let reports = Verifier::new(source, backup)
///     .entity::<a::Entity>()
///     .entity::<b::Entity>()
///     .verify(&VerifyOptions::default())
///     .await?;
/// assert!(reports.iter().all(|r| r.is_clean()));
/// # Ok(()) }
/// ```
pub struct Verifier {
    source: DatabaseConnection,
    dest: DatabaseConnection,
    tables: Vec<TableSpec>,
}

impl Verifier {
    /// A verifier of `dest` against `source`, with no tables yet.
    pub fn new(source: DatabaseConnection, dest: DatabaseConnection) -> Self {
        Verifier {
            source,
            dest,
            tables: Vec::new(),
        }
    }

    /// Adds entity `E`'s table (registering a table twice keeps the last).
    #[must_use]
    pub fn entity<E: Replicated>(self) -> Self {
        self.table(E::table_spec())
    }

    /// Adds the table `spec` describes, without its Rust type (registering a table twice
    /// keeps the last). What the command line uses.
    #[must_use]
    pub fn table(mut self, spec: TableSpec) -> Self {
        self.tables.retain(|t| t.table != spec.table);
        self.tables.push(spec);
        self
    }

    /// The tables registered, in order.
    pub fn tables(&self) -> impl Iterator<Item = &str> {
        self.tables.iter().map(|t| t.table.as_str())
    }

    /// Verifies every registered table; one report per table, in order.
    ///
    /// # Errors
    ///
    /// The first table's error, as for [`verify`].
    pub async fn verify(&self, opts: &VerifyOptions) -> Result<Vec<Report>> {
        let mut reports = Vec::with_capacity(self.tables.len());
        for t in &self.tables {
            reports.push(verify_table(&self.source, &self.dest, t, opts).await?);
        }
        Ok(reports)
    }

    /// Repairs what `reports` found; clean reports are skipped.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a report of a table not registered; otherwise as for
    /// [`repair_table`], stopping at the first table that fails.
    pub async fn repair(
        &self,
        reports: &[Report],
        opts: &RepairOptions,
    ) -> Result<Vec<RepairOutcome>> {
        let mut outcomes = Vec::new();
        for report in reports.iter().filter(|r| !r.is_clean()) {
            let t = self
                .tables
                .iter()
                .find(|t| t.table == report.table)
                .ok_or_else(|| {
                    Error::Config(format!(
                        "repair: the report of `{}` names a table this verifier does not know; \
                         register its entity with `.entity::<…>()`",
                        report.table
                    ))
                })?;
            outcomes.push(repair_table(&self.source, &self.dest, t, report, opts).await?);
        }
        Ok(outcomes)
    }
}

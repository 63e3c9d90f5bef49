//! The hot-backup story: a primary replicated to a backup while the application writes,
//! a planned switchover to the backup, and the old primary brought back as the new
//! primary's destination, verified both ways.
//!
//! ```text
//! cargo run --example failover
//! ```
//!
//! runs on SQLite files in a temporary directory. Give server URLs to run it on PostgreSQL
//! or MariaDB/MySQL, in any mix (the example creates its `failover_*` tables where missing
//! and empties them first):
//!
//! ```text
//! cargo run --example failover -- \
//!     --primary postgres://postgres@127.0.0.1:5432/demo \
//!     --backup mysql://root@127.0.0.1:3306/demo
//! ```
//!
//! (or set `ORMSYNC_PRIMARY_URL` and `ORMSYNC_BACKUP_URL`). The steps:
//!
//! 1. The primary holds rows from before replication existed; a replicator to the backup
//!    (whose tables it creates from the entities) copies them in its initial snapshot,
//!    then streams while four writers keep working.
//! 2. Planned switchover: the writers stop, `drain` waits until the backup has every
//!    committed change, the replicator shuts down, and the application points at the
//!    backup, which becomes the source.
//! 3. The old primary becomes the new primary's destination: `resync` copies every table
//!    back over it (deleting what it holds that the backup does not), then it streams.
//! 4. Writes go on at the new primary; both directions are verified row by row.
//!
//! Exits non-zero if any verify finds drift.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use ormsync::redact::redact;
use ormsync::verify::{Verifier, VerifyOptions};
use ormsync::{Destination, Replicator};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sea_orm::prelude::Decimal;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, Database, DatabaseConnection, EntityTrait,
    ModelTrait, QueryFilter, Schema, Set, TransactionTrait,
};

mod customers {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, ormsync::Replicated)]
    #[sea_orm(table_name = "failover_customers")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        pub name: String,
        #[sea_orm(column_type = "Decimal(Some((12, 2)))")]
        pub balance: Decimal,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {
        #[sea_orm(has_many = "super::orders::Entity")]
        Orders,
    }

    impl Related<super::orders::Entity> for Entity {
        fn to() -> RelationDef {
            Relation::Orders.def()
        }
    }
}

mod orders {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, ormsync::Replicated)]
    #[sea_orm(table_name = "failover_orders")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        pub customer_id: i64,
        pub item: String,
        pub qty: i32,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {
        #[sea_orm(
            belongs_to = "super::customers::Entity",
            from = "Column::CustomerId",
            to = "super::customers::Column::Id"
        )]
        Customer,
    }

    impl Related<super::customers::Entity> for Entity {
        fn to() -> RelationDef {
            Relation::Customer.def()
        }
    }
}

#[derive(Parser)]
#[command(about = "Primary, hot backup, planned switchover, verify both ways")]
struct Args {
    /// The primary's URL. Default: a SQLite file in a temporary directory.
    #[arg(long, env = "ORMSYNC_PRIMARY_URL", hide_env_values = true)]
    primary: Option<String>,

    /// The backup's URL. Default: a SQLite file in a temporary directory.
    #[arg(long, env = "ORMSYNC_BACKUP_URL", hide_env_values = true)]
    backup: Option<String>,

    /// Customers on the primary before replication starts (each with 3 orders).
    #[arg(long, default_value_t = 2000)]
    customers: i64,
}

type Error = Box<dyn std::error::Error>;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    match run(Args::parse()).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {}", redact(&e.to_string()));
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<bool, Error> {
    let tmp = tempfile::tempdir()?;
    let sqlite = |file: &str| format!("sqlite://{}?mode=rwc", tmp.path().join(file).display());
    let primary_url = args.primary.unwrap_or_else(|| sqlite("primary.sqlite"));
    let backup_url = args.backup.unwrap_or_else(|| sqlite("backup.sqlite"));
    println!(
        "primary {}\nbackup  {}",
        redact(&primary_url),
        redact(&backup_url)
    );
    let primary = Database::connect(&primary_url).await?;
    let backup = Database::connect(&backup_url).await?;
    for db in [&primary, &backup] {
        if db.get_database_backend() == sea_orm::DbBackend::Sqlite {
            db.execute_unprepared("PRAGMA journal_mode=WAL").await?;
        }
    }
    // The primary's tables come from its migrations; here, from the entities.
    create_tables(&primary).await?;
    clean(&primary).await?;
    clean(&backup).await?;
    ormsync::install(&primary).await?;
    existing_rows(&primary, args.customers).await?;
    println!(
        "\n1. the primary holds {} rows from before replication",
        args.customers * 4
    );

    // The backup's tables are created from the entities; its initial snapshot copies the
    // existing rows while four writers keep working.
    let replicator = builder(&primary)
        .destination(Destination::new("backup", backup.clone()).create_tables())
        .start()
        .await?;
    let started = Instant::now();
    let written = write_for(&primary, Duration::from_secs(2), args.customers).await?;
    replicator.sync_now().await?;
    let status = replicator.status();
    if let Some(s) = &status.destinations[0].snapshot {
        println!(
            "   snapshot: {} rows copied at {:.0} rows/s, {} left to the stream; {written} transactions meanwhile",
            s.rows_copied, s.rows_per_second, s.rows_deferred
        );
    }
    println!("   backup caught up {:?} after start", started.elapsed());
    let mut clean_both_ways = verify("backup against primary", &primary, &backup).await?;

    // 2. Planned switchover: stop writing, drain, stop the replicator.
    println!("\n2. switchover: writers stopped, draining");
    let drained = Instant::now();
    replicator.drain("backup").await?;
    replicator.shutdown().await;
    println!(
        "   drained in {:?}; the backup is the primary now",
        drained.elapsed()
    );

    // 3. The old primary becomes the new primary's destination, after a resync.
    let (new_primary, old_primary) = (backup, primary);
    let replicator = builder(&new_primary)
        .destination(Destination::new("old-primary", old_primary.clone()).initial_snapshot(false))
        .start()
        .await?;
    let resynced = Instant::now();
    replicator
        .resync("old-primary", &["failover_customers", "failover_orders"])
        .await?;
    println!("\n3. old primary resynced in {:?}", resynced.elapsed());

    // 4. The application writes to the new primary; the old one follows.
    let written = write_for(&new_primary, Duration::from_secs(1), args.customers).await?;
    replicator.sync_now().await?;
    println!("\n4. {written} transactions on the new primary, shipped to the old one");
    println!("{}", replicator.status());
    clean_both_ways &= verify(
        "old primary against new primary",
        &new_primary,
        &old_primary,
    )
    .await?;
    replicator.shutdown().await;
    println!(
        "\n{}",
        if clean_both_ways {
            "both directions verified: no drift"
        } else {
            "DRIFT found"
        }
    );
    Ok(clean_both_ways)
}

fn builder(source: &DatabaseConnection) -> ormsync::ReplicatorBuilder {
    Replicator::builder(source.clone())
        .entity::<customers::Entity>()
        .entity::<orders::Entity>()
        .poll_interval(Duration::from_millis(100))
}

async fn verify(
    what: &str,
    source: &DatabaseConnection,
    dest: &DatabaseConnection,
) -> Result<bool, Error> {
    let reports = Verifier::new(source.clone(), dest.clone())
        .entity::<customers::Entity>()
        .entity::<orders::Entity>()
        .verify(&VerifyOptions::default())
        .await?;
    let clean = reports.iter().all(|r| r.is_clean());
    let rows: u64 = reports.iter().map(|r| r.source_rows).sum();
    println!(
        "   verify {what}: {rows} rows, {}",
        if clean { "equal" } else { "DRIFT" }
    );
    for r in reports.iter().filter(|r| !r.is_clean()) {
        println!("{r}");
    }
    Ok(clean)
}

async fn create_tables(db: &DatabaseConnection) -> Result<(), Error> {
    let schema = Schema::new(db.get_database_backend());
    let backend = db.get_database_backend();
    db.execute_raw(
        backend.build(
            schema
                .create_table_from_entity(customers::Entity)
                .if_not_exists(),
        ),
    )
    .await?;
    db.execute_raw(
        backend.build(
            schema
                .create_table_from_entity(orders::Entity)
                .if_not_exists(),
        ),
    )
    .await?;
    Ok(())
}

/// Empties the example's tables and ormsync's state where they exist, for a rerun.
async fn clean(db: &DatabaseConnection) -> Result<(), Error> {
    for sql in [
        "DELETE FROM failover_orders",
        "DELETE FROM failover_customers",
    ] {
        let _ = db.execute_unprepared(sql).await;
    }
    ormsync::uninstall(db).await?;
    Ok(())
}

/// Rows written before replication (not captured: `insert_many` bypasses the hooks).
async fn existing_rows(db: &DatabaseConnection, n: i64) -> Result<(), Error> {
    for lo in (1..=n).step_by(500) {
        let hi = (lo + 499).min(n);
        customers::Entity::insert_many((lo..=hi).map(|id| customers::ActiveModel {
            id: Set(id),
            name: Set(format!("customer {id}")),
            balance: Set(Decimal::new(id * 7, 2)),
        }))
        .exec(db)
        .await?;
        orders::Entity::insert_many((lo..=hi).flat_map(|c| {
            (0..3).map(move |k| orders::ActiveModel {
                id: Set(c * 4 + k),
                customer_id: Set(c),
                item: Set(format!("item {k}")),
                qty: Set(1),
            })
        }))
        .exec(db)
        .await?;
    }
    Ok(())
}

/// Four writers updating, inserting and deleting for `time`; returns the transactions made.
async fn write_for(db: &DatabaseConnection, time: Duration, existing: i64) -> Result<u64, Error> {
    let until = Instant::now() + time;
    let mut tasks = Vec::new();
    for w in 0..4i64 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(w as u64 + until.elapsed().as_nanos() as u64);
            let mut n = 0u64;
            while Instant::now() < until {
                // Each writer owns the customers equal to it modulo 4: no deadlocks.
                let c = rng.random_range(0..existing / 4) * 4 + w + 1;
                if once(&db, c, &mut rng).await.is_ok() {
                    n += 1;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await?;
    }
    Ok(total)
}

async fn once(db: &DatabaseConnection, c: i64, rng: &mut StdRng) -> Result<(), sea_orm::DbErr> {
    let txn = db.begin().await?;
    match rng.random_range(0..4) {
        0 | 1 => {
            if let Some(o) = orders::Entity::find_by_id(c * 4 + rng.random_range(0..3))
                .one(&txn)
                .await?
            {
                let qty = o.qty + 1;
                let mut am: orders::ActiveModel = o.into();
                am.qty = Set(qty);
                am.update(&txn).await?;
            }
        }
        2 => {
            if let Some(m) = customers::Entity::find_by_id(c).one(&txn).await? {
                let mut am: customers::ActiveModel = m.into();
                am.balance = Set(Decimal::new(rng.random_range(0..100_000), 2));
                am.update(&txn).await?;
            } else {
                customers::ActiveModel {
                    id: Set(c),
                    name: Set(format!("customer {c} again")),
                    balance: Set(Decimal::new(1, 2)),
                }
                .insert(&txn)
                .await?;
            }
        }
        _ => {
            for o in orders::Entity::find()
                .filter(orders::Column::CustomerId.eq(c))
                .all(&txn)
                .await?
            {
                o.delete(&txn).await?;
            }
            if let Some(m) = customers::Entity::find_by_id(c).one(&txn).await? {
                m.delete(&txn).await?;
            }
        }
    }
    txn.commit().await
}

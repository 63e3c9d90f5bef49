//! ormsync in one file: a source database, two backups, a burst of writes, then a
//! row-by-row comparison of every backup with the source.
//!
//! ```text
//! cargo run --example quickstart
//! ```
//!
//! runs on SQLite files in a temporary directory. Give server URLs to run the same story on
//! PostgreSQL or MariaDB/MySQL, in any mix:
//!
//! ```text
//! cargo run --example quickstart -- \
//!     --source postgres://postgres@127.0.0.1:5432/demo \
//!     --dest mysql://root@127.0.0.1:3306/demo \
//!     --dest 'sqlite://backup.sqlite?mode=rwc'
//! ```
//!
//! (or set `ORMSYNC_SOURCE_URL` and `ORMSYNC_DEST_URLS`, comma separated). The databases
//! are used as they are: the example creates its two `quickstart_*` tables where they are
//! missing and empties them first, so it can be run again and again.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use clap::Parser;
use ormsync::redact::redact;
use ormsync::{Destination, Replicator};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sea_orm::prelude::{DateTimeUtc, Decimal};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, Database, DatabaseConnection, DbErr,
    EntityTrait, Iterable, ModelTrait, PrimaryKeyToColumn, QueryFilter, QueryOrder, Schema, Set,
    TransactionTrait,
};

/// A replicated entity is an ordinary sea-orm entity with `ormsync::Replicated` derived on
/// its `Model`. The derive also writes `impl ActiveModelBehavior for ActiveModel`: those
/// hooks are what capture each insert, update and delete.
mod customers {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, ormsync::Replicated)]
    #[sea_orm(table_name = "quickstart_customers")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub name: String,
        pub email: String,
        #[sea_orm(column_type = "Decimal(Some((12, 2)))")]
        pub balance: Decimal,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
}

mod orders {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, ormsync::Replicated)]
    #[sea_orm(table_name = "quickstart_orders")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub customer_id: i64,
        #[sea_orm(column_type = "Decimal(Some((12, 2)))")]
        pub amount: Decimal,
        pub status: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
}

#[derive(Parser)]
#[command(about = "Replicate a burst of writes to backups and compare them with the source")]
struct Args {
    /// Source database URL. Default: a SQLite file in a temporary directory.
    #[arg(long, env = "ORMSYNC_SOURCE_URL", hide_env_values = true)]
    source: Option<String>,

    /// A destination database URL; repeat for several. Default: two SQLite files.
    #[arg(
        long = "dest",
        env = "ORMSYNC_DEST_URLS",
        hide_env_values = true,
        value_delimiter = ','
    )]
    dest: Vec<String>,

    /// How many inserts, updates and deletes to make.
    #[arg(long, default_value_t = 400)]
    operations: usize,
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
            // Driver errors may quote a connection URL; never print its password.
            eprintln!("error: {}", redact(&e.to_string()));
            ExitCode::FAILURE
        }
    }
}

/// Returns whether every destination matches the source.
async fn run(args: Args) -> Result<bool, Error> {
    // Without URLs, everything lives in a temporary directory removed at the end.
    let tmp = tempfile::tempdir()?;
    let sqlite = |file: &str| format!("sqlite://{}?mode=rwc", tmp.path().join(file).display());
    let source_url = args.source.unwrap_or_else(|| sqlite("source.sqlite"));
    let dest_urls = if args.dest.is_empty() {
        vec![sqlite("backup-1.sqlite"), sqlite("backup-2.sqlite")]
    } else {
        args.dest
    };

    // 1. Connect, and give every database the application's tables.
    println!("source    {}", redact(&source_url));
    let source = Database::connect(&source_url).await?;
    create_tables(&source).await?;
    let mut backups = Vec::new();
    for (i, url) in dest_urls.iter().enumerate() {
        let name = format!("backup-{}", i + 1);
        println!("{name:<9} {}", redact(url));
        let db = Database::connect(url).await?;
        create_tables(&db).await?;
        backups.push((name, db));
    }

    // 2. The `ormsync_*` tables: the outbox that captured changes go to, and the rest.
    //    `start()` below creates them too; they must exist before the first captured write.
    ormsync::install(&source).await?;

    // Rows left by an earlier run: deleted on the source through the captured path, so
    // the backups forget them too; rows a backup holds on its own are deleted there directly.
    let removed = delete_all_rows(&source).await?;
    if removed > 0 {
        println!("deleted {removed} rows left on the source by an earlier run");
    }
    for (_, db) in &backups {
        customers::Entity::delete_many().exec(db).await?;
        orders::Entity::delete_many().exec(db).await?;
    }

    // 3. Start replicating: one worker per destination, polling the outbox.
    let mut builder = Replicator::builder(source.clone())
        .entity::<customers::Entity>()
        .entity::<orders::Entity>()
        .poll_interval(Duration::from_millis(200));
    for (name, db) in &backups {
        builder = builder.destination(Destination::new(name.clone(), db.clone()));
    }
    let replicator = builder.start().await?;

    // 4. The application writes, in transactions, while the replicator runs.
    let burst = write_burst(&source, args.operations).await?;
    println!(
        "\nwrote {} changes in {} transactions ({} more rolled back, which ship nothing)",
        burst.changes, burst.committed, burst.rolled_back
    );

    // 5. Wait until every destination has applied everything committed.
    let started = Instant::now();
    replicator.sync_now().await?;
    println!("all destinations caught up {:?} later\n", started.elapsed());
    println!("{}", replicator.status());

    // 6. Read both sides and compare them row by row.
    let mut all_match = true;
    for (name, db) in &backups {
        let mut rows = 0;
        let mut differences = Vec::new();
        for (n, diffs) in [
            compare::<customers::Entity>(&source, db).await?,
            compare::<orders::Entity>(&source, db).await?,
        ] {
            rows += n;
            differences.extend(diffs);
        }
        if differences.is_empty() {
            println!("{name}: {rows} rows compared, all match");
        } else {
            all_match = false;
            println!(
                "{name}: {rows} rows compared, {} differ:",
                differences.len()
            );
            for d in differences.iter().take(20) {
                println!("  {d}");
            }
        }
    }

    replicator.shutdown().await;
    Ok(all_match)
}

/// Creates the example's tables where they do not exist yet, from the entities.
async fn create_tables(db: &DatabaseConnection) -> Result<(), DbErr> {
    let schema = Schema::new(db.get_database_backend());
    db.execute(
        schema
            .create_table_from_entity(customers::Entity)
            .if_not_exists(),
    )
    .await?;
    db.execute(
        schema
            .create_table_from_entity(orders::Entity)
            .if_not_exists(),
    )
    .await?;
    Ok(())
}

/// Deletes every row of the example's tables, one captured `Model::delete` at a time.
async fn delete_all_rows(db: &DatabaseConnection) -> Result<usize, DbErr> {
    let txn = db.begin().await?;
    let customers = customers::Entity::find().all(&txn).await?;
    let orders = orders::Entity::find().all(&txn).await?;
    let removed = customers.len() + orders.len();
    for c in customers {
        c.delete(&txn).await?;
    }
    for o in orders {
        o.delete(&txn).await?;
    }
    txn.commit().await?;
    Ok(removed)
}

/// What the burst did.
struct Burst {
    changes: usize,
    committed: usize,
    rolled_back: usize,
}

/// Ids of the rows the source holds, so updates and deletes pick existing ones.
#[derive(Clone, Default)]
struct Live {
    customers: Vec<i64>,
    /// (order id, customer id)
    orders: Vec<(i64, i64)>,
}

/// Inserts, updates and deletes customers and orders, a few per transaction, chosen by a
/// seeded generator so every run makes the same story. One transaction in fifteen rolls back.
async fn write_burst(db: &DatabaseConnection, operations: usize) -> Result<Burst, DbErr> {
    let mut rng = StdRng::seed_from_u64(2024);
    // Whole seconds: MariaDB's TIMESTAMP keeps no fractions, and the comparison is exact.
    let mut clock = Utc.with_ymd_and_hms(2025, 1, 1, 9, 0, 0).unwrap();
    let mut live = Live::default();
    let mut burst = Burst {
        changes: 0,
        committed: 0,
        rolled_back: 0,
    };

    while burst.changes < operations {
        let before = live.clone();
        let txn = db.begin().await?;
        let mut changes = 0;
        for _ in 0..rng.random_range(1..=5) {
            clock += chrono::Duration::seconds(rng.random_range(1..600));
            changes += one_change(&txn, &mut rng, &mut live, clock).await?;
        }
        if rng.random_ratio(1, 15) {
            txn.rollback().await?; // the rows and their outbox entries go together
            live = before;
            burst.rolled_back += 1;
        } else {
            txn.commit().await?; // the rows and their outbox entries commit together
            burst.changes += changes;
            burst.committed += 1;
        }
    }
    Ok(burst)
}

const FIRST: [&str; 8] = [
    "Ada", "Grace", "Alan", "Edsger", "Barbara", "Ken", "Frances", "Niklaus",
];
const LAST: [&str; 8] = [
    "Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Thompson", "Allen", "Wirth",
];

/// One random insert, update or delete through sea-orm; returns how many rows it changed.
async fn one_change<C: ConnectionTrait>(
    txn: &C,
    rng: &mut StdRng,
    live: &mut Live,
    now: DateTimeUtc,
) -> Result<usize, DbErr> {
    let cents = |rng: &mut StdRng, max: i64| Decimal::new(rng.random_range(100..max), 2);
    let roll = rng.random_range(0..100);

    if live.customers.is_empty() || roll < 30 {
        // A new customer; the database picks the id.
        let (first, last) = (FIRST[rng.random_range(0..8)], LAST[rng.random_range(0..8)]);
        let customer = customers::ActiveModel {
            name: Set(format!("{first} {last}")),
            email: Set(format!("{}.{}@example.com", first, last).to_lowercase()),
            balance: Set(cents(rng, 50_000)),
            updated_at: Set(now),
            ..Default::default()
        }
        .insert(txn)
        .await?;
        live.customers.push(customer.id);
        return Ok(1);
    }

    let customer_id = live.customers[rng.random_range(0..live.customers.len())];
    if roll < 50 {
        // A customer's balance changes.
        let Some(customer) = customers::Entity::find_by_id(customer_id).one(txn).await? else {
            return Ok(0);
        };
        let balance = customer.balance + cents(rng, 10_000);
        let mut customer: customers::ActiveModel = customer.into();
        customer.balance = Set(balance);
        customer.updated_at = Set(now);
        customer.update(txn).await?;
        Ok(1)
    } else if roll < 58 {
        // A customer leaves, with their orders.
        let orders = orders::Entity::find()
            .filter(orders::Column::CustomerId.eq(customer_id))
            .all(txn)
            .await?;
        let changed = orders.len() + 1;
        for order in orders {
            order.delete(txn).await?;
        }
        customers::Entity::find_by_id(customer_id)
            .one(txn)
            .await?
            .ok_or_else(|| DbErr::RecordNotFound(format!("customer {customer_id}")))?
            .delete(txn)
            .await?;
        live.customers.retain(|&id| id != customer_id);
        live.orders.retain(|&(_, c)| c != customer_id);
        Ok(changed)
    } else if live.orders.is_empty() || roll < 85 {
        // A new order.
        let order = orders::ActiveModel {
            customer_id: Set(customer_id),
            amount: Set(cents(rng, 20_000)),
            status: Set("open".to_string()),
            ..Default::default()
        }
        .insert(txn)
        .await?;
        live.orders.push((order.id, customer_id));
        Ok(1)
    } else {
        // An order moves on.
        let (order_id, _) = live.orders[rng.random_range(0..live.orders.len())];
        let status = ["paid", "shipped", "cancelled"][rng.random_range(0..3)];
        orders::ActiveModel {
            id: sea_orm::ActiveValue::Unchanged(order_id),
            status: Set(status.to_string()),
            ..Default::default()
        }
        .update(txn)
        .await?;
        Ok(1)
    }
}

/// Reads every row of `E` on both sides, ordered by primary key, and describes each
/// difference. Returns the number of source rows compared, and the differences.
async fn compare<E>(
    source: &DatabaseConnection,
    dest: &DatabaseConnection,
) -> Result<(usize, Vec<String>), DbErr>
where
    E: EntityTrait,
    E::Model: PartialEq + Debug,
{
    let table = E::default().table_name().to_string();
    let ours = all_rows::<E>(source).await?;
    let mut theirs: BTreeMap<String, E::Model> = all_rows::<E>(dest)
        .await?
        .into_iter()
        .map(|row| (format!("{:?}", row.get_primary_key_value()), row))
        .collect();

    let mut differences = Vec::new();
    for row in &ours {
        match theirs.remove(&format!("{:?}", row.get_primary_key_value())) {
            None => differences.push(format!("{table}: missing at the destination: {row:?}")),
            Some(other) if other != *row => differences.push(format!(
                "{table}: differs\n    source:      {row:?}\n    destination: {other:?}"
            )),
            Some(_) => {}
        }
    }
    for row in theirs.values() {
        differences.push(format!("{table}: only at the destination: {row:?}"));
    }
    Ok((ours.len(), differences))
}

async fn all_rows<E: EntityTrait>(db: &DatabaseConnection) -> Result<Vec<E::Model>, DbErr> {
    let mut query = E::find();
    for key in E::PrimaryKey::iter() {
        query = query.order_by_asc(key.into_column());
    }
    query.all(db).await
}

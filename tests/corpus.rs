//! Entities written the way applications write them, not shaped for ormsync, replicated
//! from each backend to each other one under random writes, before, during and after the
//! initial copy; every destination ends with the source's rows, and `verify` agrees.
//!
//! The corpus:
//!
//! - `categories`: a tree (each category belongs to its parent, which may have a higher
//!   key), in sea-orm 2.0's dense format (`#[sea_orm::model]`, relations as fields);
//! - `order`: a table named with a reserved word, a column named `type`, an
//!   auto-increment key, zoned timestamps at non-UTC offsets, a foreign key to the tree;
//! - `order_lines`: a composite key and a foreign key to `order`, in the compact format
//!   (`#[sea_orm::compact_model]`);
//! - `badges`: a database enum (declared out of alphabetical order) in a composite key;
//! - `attachments`: a key of bytes;
//! - `tags`: a text key whose values sort differently by bytes and by most collations;
//! - `moments`: every timestamp flavour of chrono and of the `time` crate, at non-UTC
//!   offsets, and `BigDecimal`;
//! - `people`: an application's own hooks (`ReplicatedHooks`) that rewrite what it saves;
//! - `profiles`: PostgreSQL arrays (PostgreSQL sources only: the others have no arrays).
//!
//! The source's tables are the application's own: sea-orm's on PostgreSQL and SQLite, a
//! hand-written migration on MariaDB (sea-orm's keeps whole seconds there). The
//! destination's are the ones `create_tables()` makes.
//!
//! `ORMSYNC_SEED=<u64>` replays a seed; each test prints the one it drew as
//! `corpus seed = …`.

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::{Backend, TestDb, diff_rows, rows_by_spec};
use ormsync::verify::{Verifier, VerifyOptions};
use ormsync::{Destination, Replicated, Replicator, State, TableSpec};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sea_orm::prelude::Decimal;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction,
    DbBackend, DbErr, EntityTrait, IntoActiveModel, ModelTrait, PaginatorTrait, QueryFilter,
    Schema, Set, TransactionTrait,
};

mod every_pair {
    use super::*;

    macro_rules! pairs {
        ($($name:ident: $src:ident => $dst:ident),* $(,)?) => {$(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::corpus_replicates(Backend::$src, Backend::$dst).await
            }
        )*};
    }

    pairs! {
        postgres_to_mariadb: Postgres => MySql,
        postgres_to_sqlite: Postgres => Sqlite,
        mariadb_to_postgres: MySql => Postgres,
        mariadb_to_sqlite: MySql => Sqlite,
        sqlite_to_postgres: Sqlite => Postgres,
        sqlite_to_mariadb: Sqlite => MySql,
    }
}

/// The initial copy of a table keyed by a database enum takes every row, whatever the
/// chunk boundaries: a chunk's order and the condition that starts the next one agree on
/// one order (PostgreSQL's select list casts the enum to text, and MariaDB sorts an `ENUM`
/// by declaration but compares it with a string as a string).
mod enum_keys {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_enum_keyed_table_is_copied_whole_from_postgres() {
        super::enum_keyed_table_is_copied_whole(Backend::Postgres).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_enum_keyed_table_is_copied_whole_from_mariadb() {
        super::enum_keyed_table_is_copied_whole(Backend::MySql).await
    }
}

async fn enum_keyed_table_is_copied_whole(src: Backend) {
    use badges::Tier;
    let (Some(source), Some(dest)) = (
        TestDb::create(src).await,
        TestDb::create(Backend::Sqlite).await,
    ) else {
        return;
    };
    application_tables(&source).await;
    let txn = source.db.begin().await.expect("begin");
    for tier in [Tier::Silver, Tier::Gold, Tier::Bronze, Tier::Platinum] {
        for (i, holder) in HOLDERS.iter().enumerate() {
            badges::ActiveModel {
                tier: Set(tier),
                holder: Set(holder.to_string()),
                awarded_on: Set(
                    chrono::NaiveDate::from_ymd_opt(2024, 1, 1 + i as u32).expect("a day")
                ),
                points: Set(i as i32),
            }
            .insert(&txn)
            .await
            .expect("insert");
        }
    }
    txn.commit().await.expect("commit");
    let r = Replicator::builder(source.db.clone())
        .entity::<badges::Entity>()
        .poll_interval(Duration::from_millis(50))
        .destination(
            Destination::new("child", dest.db.clone())
                .create_tables()
                .snapshot_chunk_rows(3),
        )
        .start()
        .await
        .expect("start");
    copied(&r, src.name()).await;
    r.shutdown().await;
    let spec = badges::Entity::table_spec();
    let (s, d) = (
        rows_by_spec(&source.db, &spec).await,
        rows_by_spec(&dest.db, &spec).await,
    );
    assert_eq!(s.len(), 20);
    if let Some(diff) = diff_rows(&spec.table, &spec.key, s, d, &|_| String::new()) {
        panic!("{}: {diff}", src.name());
    }
}

/// A resync keeps every row whatever the two sides' collations: a text key the source
/// orders by bytes (`"C" < "a" < "b" < "d"`) and a MariaDB destination orders without
/// case (`"a" < "b" < "C" < "d"`) bound each chunk's key range differently, so the
/// destination's range of one chunk holds a row of another; the source holds it, so it
/// stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resync_keeps_rows_another_collation_puts_in_another_chunk() {
    let (Some(source), Some(dest)) = (
        TestDb::create(Backend::Postgres).await,
        TestDb::create(Backend::MySql).await,
    ) else {
        return;
    };
    application_tables(&source).await;
    source
        .db
        .execute_unprepared(r#"ALTER TABLE tags ALTER COLUMN name TYPE varchar COLLATE "C""#)
        .await
        .expect("a byte-ordered key at the source");
    dest.db
        .execute_unprepared(
            "CREATE TABLE tags (name VARCHAR(40) COLLATE utf8mb4_general_ci PRIMARY KEY, \
             uses INT NOT NULL)",
        )
        .await
        .expect("a case-insensitive key at the destination");
    let txn = source.db.begin().await.expect("begin");
    for name in ["C", "a", "b", "d", "E", "f"] {
        tags::ActiveModel {
            name: Set(name.into()),
            uses: Set(1),
        }
        .insert(&txn)
        .await
        .expect("insert");
    }
    txn.commit().await.expect("commit");
    let r = Replicator::builder(source.db.clone())
        .entity::<tags::Entity>()
        .poll_interval(Duration::from_millis(50))
        .destination(Destination::new("child", dest.db.clone()).snapshot_chunk_rows(2))
        .start()
        .await
        .expect("start");
    copied(&r, "copy").await;
    // A row only the destination has: the resync deletes it.
    dest.db
        .execute_unprepared("INSERT INTO tags (name, uses) VALUES ('B2', 9)")
        .await
        .expect("a stray row");
    r.resync("child", &["tags"]).await.expect("resync");
    r.shutdown().await;
    let spec = tags::Entity::table_spec();
    let (s, d) = (
        rows_by_spec(&source.db, &spec).await,
        rows_by_spec(&dest.db, &spec).await,
    );
    assert_eq!(s.len(), 6);
    if let Some(diff) = diff_rows(&spec.table, &spec.key, s, d, &|_| String::new()) {
        panic!("{diff}");
    }
}

/// Keys that differ only in case or accents are different rows at the source, and stay
/// different at a MariaDB database whose default collation ignores case and accents (the
/// server's usual default): the key columns `create_tables()` makes compare bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_equal_under_the_destinations_default_collation_stay_apart() {
    let (Some(source), Some(dest)) = (
        TestDb::create(Backend::Postgres).await,
        TestDb::create(Backend::MySql).await,
    ) else {
        return;
    };
    application_tables(&source).await;
    dest.db
        .execute_unprepared("ALTER DATABASE CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci")
        .await
        .expect("a case-insensitive default");
    let write = |names: &'static [&'static str]| {
        let db = source.db.clone();
        async move {
            let txn = db.begin().await.expect("begin");
            for (i, name) in names.iter().enumerate() {
                tags::ActiveModel {
                    name: Set(name.to_string()),
                    uses: Set(i as i32),
                }
                .insert(&txn)
                .await
                .expect("insert");
            }
            txn.commit().await.expect("commit");
        }
    };
    write(&["Rust", "rust", "RUST", "Rust "]).await;
    let r = Replicator::builder(source.db.clone())
        .entity::<tags::Entity>()
        .poll_interval(Duration::from_millis(50))
        .destination(Destination::new("child", dest.db.clone()).create_tables())
        .start()
        .await
        .expect("start");
    write(&["Émile", "emile", "Emile"]).await;
    r.sync_now().await.expect("sync");
    r.shutdown().await;
    let spec = tags::Entity::table_spec();
    let (s, d) = (
        rows_by_spec(&source.db, &spec).await,
        rows_by_spec(&dest.db, &spec).await,
    );
    assert_eq!(s.len(), 7);
    if let Some(diff) = diff_rows(&spec.table, &spec.key, s, d, &|_| String::new()) {
        panic!("{diff}");
    }
}

/// A table placed row by row (here under a conflict policy that reads the destination's
/// row first) refuses a value its destination column would round, as multi-row batches
/// do: MariaDB stores 10.25 in a `DECIMAL(12,1)` as 10.3 with no more than a note.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_placed_row_by_row_is_refused_where_its_column_would_round() {
    let (Some(source), Some(dest)) = (
        TestDb::create(Backend::Postgres).await,
        TestDb::create(Backend::MySql).await,
    ) else {
        return;
    };
    application_tables(&source).await;
    dest.db
        .execute_unprepared(
            "CREATE TABLE `order` (id BIGINT PRIMARY KEY, `type` VARCHAR(20) NOT NULL, \
             category_id INT NULL, placed_at DATETIME(6) NOT NULL, total DECIMAL(12,1) NOT NULL, \
             note TEXT NULL)",
        )
        .await
        .expect("a narrower column at the destination");
    let txn = source.db.begin().await.expect("begin");
    order::ActiveModel {
        r#type: Set("retail".into()),
        category_id: Set(None),
        placed_at: Set(
            chrono::DateTime::parse_from_rfc3339("2026-01-02T03:04:05+05:30").expect("a timestamp"),
        ),
        total: Set(Decimal::new(1025, 2)),
        note: Set(None),
        ..Default::default()
    }
    .insert(&txn)
    .await
    .expect("insert");
    txn.commit().await.expect("commit");
    let r = Replicator::builder(source.db.clone())
        .entity::<categories::Entity>()
        .entity::<order::Entity>()
        .poll_interval(Duration::from_millis(50))
        .destination(
            Destination::new("child", dest.db.clone())
                .initial_snapshot(false)
                .conflicts(ormsync::ConflictPolicy::DestinationWins),
        )
        .start()
        .await
        .expect("start");
    let err = r.sync_now().await.expect_err("refused").to_string();
    r.shutdown().await;
    assert!(
        err.contains("`order.total`") && err.contains("decimal places"),
        "{err}"
    );
    assert_eq!(common::count(&dest.db, "`order`").await, 0);
}

// ---- the corpus ----------------------------------------------------------------------------

pub mod categories {
    use sea_orm::entity::prelude::*;

    #[sea_orm::model]
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, ormsync::Replicated)]
    #[sea_orm(table_name = "categories")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i32,
        pub name: String,
        pub parent_id: Option<i32>,
        #[sea_orm(
            self_ref,
            relation_enum = "Parent",
            relation_reverse = "Children",
            from = "parent_id",
            to = "id"
        )]
        pub parent: BelongsTo<Option<Entity>>,
        #[sea_orm(self_ref, relation_enum = "Children", relation_reverse = "Parent")]
        pub children: HasMany<Entity>,
    }
}

pub mod order {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, ormsync::Replicated)]
    #[sea_orm(table_name = "order")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub r#type: String,
        pub category_id: Option<i32>,
        pub placed_at: DateTimeWithTimeZone,
        #[sea_orm(column_type = "Decimal(Some((12, 2)))")]
        pub total: Decimal,
        pub note: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {
        #[sea_orm(
            belongs_to = "super::categories::Entity",
            from = "Column::CategoryId",
            to = "super::categories::Column::Id"
        )]
        Category,
        #[sea_orm(has_many = "super::order_lines::Entity")]
        Lines,
    }

    impl Related<super::order_lines::Entity> for Entity {
        fn to() -> RelationDef {
            Relation::Lines.def()
        }
    }
}

pub mod order_lines {
    use sea_orm::entity::prelude::*;

    #[sea_orm::compact_model]
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, ormsync::Replicated)]
    #[sea_orm(table_name = "order_lines")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub order_id: i64,
        #[sea_orm(primary_key, auto_increment = false)]
        pub line_no: i32,
        pub sku: String,
        pub qty: i32,
        #[sea_orm(column_type = "Decimal(Some((10, 2)))")]
        pub price: Decimal,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {
        #[sea_orm(
            belongs_to = "super::order::Entity",
            from = "Column::OrderId",
            to = "super::order::Column::Id"
        )]
        Order,
    }

    impl Related<super::order::Entity> for Entity {
        fn to() -> RelationDef {
            Relation::Order.def()
        }
    }
}

pub mod badges {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Copy, Debug, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
    #[sea_orm(rs_type = "String", db_type = "Enum", enum_name = "tier")]
    pub enum Tier {
        #[sea_orm(string_value = "silver")]
        Silver,
        #[sea_orm(string_value = "gold")]
        Gold,
        #[sea_orm(string_value = "bronze")]
        Bronze,
        #[sea_orm(string_value = "platinum")]
        Platinum,
    }

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, ormsync::Replicated)]
    #[sea_orm(table_name = "badges")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tier: Tier,
        #[sea_orm(primary_key, auto_increment = false)]
        pub holder: String,
        pub awarded_on: Date,
        pub points: i32,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
}

pub mod attachments {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, ormsync::Replicated)]
    #[sea_orm(table_name = "attachments")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub digest: Vec<u8>,
        pub file_name: String,
        pub size: i64,
        pub meta: Option<Json>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
}

pub mod tags {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, ormsync::Replicated)]
    #[sea_orm(table_name = "tags")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub name: String,
        pub uses: i32,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
}

pub mod moments {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, ormsync::Replicated)]
    #[sea_orm(table_name = "moments")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        pub t_zoned: TimeDateTimeWithTimeZone,
        pub t_naive: TimeDateTime,
        pub t_day: TimeDate,
        pub t_time: TimeTime,
        pub c_zoned: DateTimeWithTimeZone,
        pub c_utc: DateTimeUtc,
        pub c_local: DateTimeLocal,
        pub c_naive: DateTime,
        pub c_day: Date,
        pub c_time: Time,
        #[sea_orm(column_type = "Decimal(Some((40, 20)))")]
        pub amount: BigDecimal,
        #[sea_orm(column_type = "Decimal(Some((40, 20)))", nullable)]
        pub maybe_amount: Option<BigDecimal>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
}

pub mod people {
    use sea_orm::Set;
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, ormsync::Replicated)]
    #[sea_orm(table_name = "people")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        #[sea_orm(unique)]
        pub email: String,
        pub display_name: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    /// What the application always did before saving a person: addresses in lower case,
    /// names without surrounding blanks.
    #[async_trait::async_trait]
    impl ormsync::ReplicatedHooks for ActiveModel {
        async fn before_save<C>(mut self, _db: &C, _insert: bool) -> Result<Self, DbErr>
        where
            C: ConnectionTrait,
        {
            if let sea_orm::ActiveValue::Set(email) = &self.email {
                let email = email.trim().to_lowercase();
                self.email = Set(email);
            }
            if let sea_orm::ActiveValue::Set(name) = &self.display_name {
                let name = name.trim().to_string();
                self.display_name = Set(name);
            }
            Ok(self)
        }
    }
}

pub mod profiles {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, ormsync::Replicated)]
    #[sea_orm(table_name = "profiles")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i32,
        pub nicknames: Vec<String>,
        pub scores: Vec<i32>,
        pub seen: Option<Vec<DateTimeUtc>>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
}

// ---- the application's tables --------------------------------------------------------------

/// The application's migration on MariaDB: fractional seconds and decimal places declared,
/// as they must be there.
const MARIADB_TABLES: [&str; 8] = [
    "CREATE TABLE categories (id INT PRIMARY KEY, name VARCHAR(100) NOT NULL, \
     parent_id INT NULL, CONSTRAINT fk_category_parent FOREIGN KEY (parent_id) \
     REFERENCES categories (id))",
    "CREATE TABLE `order` (id BIGINT AUTO_INCREMENT PRIMARY KEY, `type` VARCHAR(20) NOT NULL, \
     category_id INT NULL, placed_at DATETIME(6) NOT NULL, total DECIMAL(12,2) NOT NULL, \
     note TEXT NULL, CONSTRAINT fk_order_category FOREIGN KEY (category_id) \
     REFERENCES categories (id))",
    "CREATE TABLE order_lines (order_id BIGINT NOT NULL, line_no INT NOT NULL, \
     sku VARCHAR(40) NOT NULL, qty INT NOT NULL, price DECIMAL(10,2) NOT NULL, \
     PRIMARY KEY (order_id, line_no), CONSTRAINT fk_line_order FOREIGN KEY (order_id) \
     REFERENCES `order` (id))",
    "CREATE TABLE badges (tier ENUM('silver', 'gold', 'bronze', 'platinum') NOT NULL, \
     holder VARCHAR(40) NOT NULL, awarded_on DATE NOT NULL, points INT NOT NULL, \
     PRIMARY KEY (tier, holder))",
    "CREATE TABLE attachments (digest VARBINARY(32) PRIMARY KEY, file_name VARCHAR(200) NOT NULL, \
     size BIGINT NOT NULL, meta JSON NULL)",
    "CREATE TABLE tags (name VARCHAR(40) PRIMARY KEY, uses INT NOT NULL)",
    "CREATE TABLE moments (id BIGINT PRIMARY KEY, t_zoned DATETIME(6) NOT NULL, \
     t_naive DATETIME(6) NOT NULL, t_day DATE NOT NULL, t_time TIME(6) NOT NULL, \
     c_zoned DATETIME(6) NOT NULL, c_utc DATETIME(6) NOT NULL, c_local DATETIME(6) NOT NULL, \
     c_naive DATETIME(6) NOT NULL, c_day DATE NOT NULL, c_time TIME(6) NOT NULL, \
     amount DECIMAL(40,20) NOT NULL, maybe_amount DECIMAL(40,20) NULL)",
    "CREATE TABLE people (id INT AUTO_INCREMENT PRIMARY KEY, email VARCHAR(200) NOT NULL UNIQUE, \
     display_name VARCHAR(200) NOT NULL)",
];

/// Creates the application's tables at `source`, parents first, and installs ormsync.
async fn application_tables(source: &TestDb) {
    let db = &source.db;
    let backend = db.get_database_backend();
    if backend == DbBackend::MySql {
        for ddl in MARIADB_TABLES {
            db.execute_unprepared(ddl)
                .await
                .unwrap_or_else(|e| panic!("{ddl}: {e}"));
        }
    } else {
        let schema = Schema::new(backend);
        for e in schema.create_enum_from_entity(badges::Entity) {
            db.execute(&e).await.expect("create enum");
        }
        let mut tables = vec![
            schema.create_table_from_entity(categories::Entity),
            schema.create_table_from_entity(order::Entity),
            schema.create_table_from_entity(order_lines::Entity),
            schema.create_table_from_entity(badges::Entity),
            schema.create_table_from_entity(attachments::Entity),
            schema.create_table_from_entity(tags::Entity),
            schema.create_table_from_entity(moments::Entity),
            schema.create_table_from_entity(people::Entity),
        ];
        if backend == DbBackend::Postgres {
            tables.push(schema.create_table_from_entity(profiles::Entity));
        }
        for t in tables {
            db.execute(&t).await.expect("create table");
        }
    }
    ormsync::install(db).await.expect("install");
}

fn replicator(source: &TestDb, dest: &TestDb) -> ormsync::ReplicatorBuilder {
    let mut b = Replicator::builder(source.db.clone())
        .entity::<categories::Entity>()
        .entity::<order::Entity>()
        .entity::<order_lines::Entity>()
        .entity::<badges::Entity>()
        .entity::<attachments::Entity>()
        .entity::<tags::Entity>()
        .entity::<moments::Entity>()
        .entity::<people::Entity>()
        .poll_interval(Duration::from_millis(50))
        .batch_size(40)
        .retry_delays(Duration::from_millis(20), Duration::from_millis(200))
        .destination(
            Destination::new("child", dest.db.clone())
                .create_tables()
                // Small chunks: the copy spans many of them while the writer goes on.
                .snapshot_chunk_rows(3),
        );
    if source.backend == Backend::Postgres {
        b = b.entity::<profiles::Entity>();
    }
    b
}

// ---- random writes -------------------------------------------------------------------------

/// The offsets timestamps are written at: none of them UTC but the last.
const OFFSETS: [i32; 5] = [
    5 * 3600 + 1800,
    -8 * 3600,
    13 * 3600 + 45 * 60,
    -(3 * 3600 + 1800),
    0,
];

/// Tag names whose byte order differs from their order under case- and accent-insensitive
/// collations; no two are equal under one.
const TAGS: [&str; 14] = [
    "Rust",
    "zebra",
    "Émile",
    "Zeta",
    "ångström",
    "apple",
    "Banana",
    "_under",
    "42",
    "über",
    "Ö-ring",
    "cherry",
    "Delta",
    "a b",
];

const HOLDERS: [&str; 5] = ["ada", "Grace", "linus", "Édith", "ken"];

const ORDER_TYPES: [&str; 3] = ["retail", "wholesale", "return"];

/// A random instant between 1990 and 2033, to the microsecond, as Unix microseconds.
fn micros(rng: &mut StdRng) -> i64 {
    rng.random_range(631_152_000_000_000i64..2_000_000_000_000_000)
}

fn chrono_zoned(rng: &mut StdRng) -> chrono::DateTime<chrono::FixedOffset> {
    let offset = chrono::FixedOffset::east_opt(OFFSETS[rng.random_range(0..OFFSETS.len())])
        .expect("an offset");
    chrono::DateTime::from_timestamp_micros(micros(rng))
        .expect("an instant")
        .with_timezone(&offset)
}

fn time_zoned(rng: &mut StdRng) -> time::OffsetDateTime {
    let offset = time::UtcOffset::from_whole_seconds(OFFSETS[rng.random_range(0..OFFSETS.len())])
        .expect("an offset");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros(rng)) * 1000)
        .expect("an instant")
        .to_offset(offset)
}

/// A decimal of at most 15 significant digits (what a SQLite source keeps), at most 9
/// before the point and 6 after.
fn big_decimal(rng: &mut StdRng) -> bigdecimal::BigDecimal {
    let sign = if rng.random_bool(0.3) { "-" } else { "" };
    let digits = rng.random_range(0..=6);
    let int = rng.random_range(0..1_000_000_000u64);
    let text = if digits == 0 {
        format!("{sign}{int}")
    } else {
        let frac = rng.random_range(0..10u64.pow(digits));
        format!("{sign}{int}.{frac:0width$}", width = digits as usize)
    };
    text.parse().expect("a decimal")
}

fn moment(rng: &mut StdRng, id: i64) -> moments::Model {
    let t_zoned = time_zoned(rng);
    let t_other = time_zoned(rng);
    let c_zoned = chrono_zoned(rng);
    let c_other = chrono_zoned(rng);
    moments::Model {
        id,
        t_zoned,
        t_naive: time::PrimitiveDateTime::new(t_other.date(), t_other.time()),
        t_day: t_other.date(),
        t_time: t_zoned.time(),
        c_zoned,
        c_utc: c_other.with_timezone(&chrono::Utc),
        c_local: c_zoned.with_timezone(&chrono::Local),
        c_naive: c_other.naive_local(),
        c_day: c_zoned.date_naive(),
        c_time: c_other.time(),
        amount: big_decimal(rng),
        maybe_amount: rng.random_bool(0.6).then(|| big_decimal(rng)),
    }
}

/// Text with what arrays and JSON must escape.
fn awkward_text(rng: &mut StdRng) -> String {
    const PIECES: [&str; 10] = [
        "plain",
        "a,b",
        "{braces}",
        "\"quoted\"",
        "back\\slash",
        "NULL",
        "",
        "ünï",
        " ",
        "日本",
    ];
    PIECES[rng.random_range(0..PIECES.len())].to_string()
}

/// One writer's random transactions against the source.
struct Writer {
    db: DatabaseConnection,
    rng: StdRng,
    arrays: bool,
    committed: u64,
}

impl Writer {
    /// Runs `n` random transactions of one to three operations each. A transaction SQLite
    /// refuses as busy (the replicator writes its own tables there) is run again.
    async fn run(&mut self, n: u64) {
        for _ in 0..n {
            let ops: Vec<u32> = (0..self.rng.random_range(1..=3))
                .map(|_| self.rng.random_range(0..100))
                .collect();
            let seed: u64 = self.rng.random();
            let mut tries = 0;
            loop {
                // Each try draws the same values.
                let mut rng = StdRng::seed_from_u64(seed);
                match self.transaction(&ops, &mut rng).await {
                    Ok(()) => break,
                    Err(e) if tries < 50 && busy(&e) => {
                        tries += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(e) => panic!("the application's transaction failed: {e}"),
                }
            }
            self.committed += 1;
        }
    }

    async fn transaction(&self, ops: &[u32], rng: &mut StdRng) -> Result<(), DbErr> {
        let txn = self.db.begin().await?;
        for &op in ops {
            match op {
                0..=11 => category(&txn, rng).await?,
                12..=31 => an_order(&txn, rng).await?,
                32..=46 => order_line(&txn, rng).await?,
                47..=54 => badge(&txn, rng).await?,
                55..=62 => attachment(&txn, rng).await?,
                63..=70 => tag(&txn, rng).await?,
                71..=82 => a_moment(&txn, rng).await?,
                83..=91 => person(&txn, rng).await?,
                _ if self.arrays => profile(&txn, rng).await?,
                _ => a_moment(&txn, rng).await?,
            }
        }
        txn.commit().await
    }
}

fn busy(e: &DbErr) -> bool {
    let text = e.to_string();
    text.contains("database is locked") || text.contains("busy") || text.contains("Deadlock")
}

/// Inserts a category under a random parent (any key, higher ones too), moves one (never
/// under itself or its descendants), renames one, or deletes a leaf no order uses.
async fn category(txn: &DatabaseTransaction, rng: &mut StdRng) -> Result<(), DbErr> {
    let all = categories::Entity::find().all(txn).await?;
    let pick =
        |rng: &mut StdRng| (!all.is_empty()).then(|| all[rng.random_range(0..all.len())].clone());
    match rng.random_range(0..10) {
        0..=4 => {
            let id = rng.random_range(1..=40);
            if all.iter().any(|c| c.id == id) {
                return Ok(());
            }
            let parent = if rng.random_bool(0.25) {
                None
            } else {
                pick(rng).map(|p| p.id)
            };
            categories::ActiveModel {
                id: Set(id),
                name: Set(format!("category {id}")),
                parent_id: Set(parent),
            }
            .insert(txn)
            .await?;
        }
        5..=6 => {
            let (Some(c), Some(p)) = (pick(rng), pick(rng)) else {
                return Ok(());
            };
            // Walks up from the new parent: moving `c` under its own subtree would loop.
            let mut up = Some(p.id);
            while let Some(id) = up {
                if id == c.id {
                    return Ok(());
                }
                up = all.iter().find(|x| x.id == id).and_then(|x| x.parent_id);
            }
            let mut a = c.into_active_model();
            a.parent_id = Set(Some(p.id));
            a.update(txn).await?;
        }
        7 => {
            let Some(c) = pick(rng) else { return Ok(()) };
            let mut a = c.into_active_model();
            a.name = Set(awkward_text(rng));
            a.update(txn).await?;
        }
        _ => {
            let Some(c) = pick(rng) else { return Ok(()) };
            let children = categories::Entity::find()
                .filter(categories::Column::ParentId.eq(c.id))
                .count(txn)
                .await?;
            let orders = order::Entity::find()
                .filter(order::Column::CategoryId.eq(c.id))
                .count(txn)
                .await?;
            if children == 0 && orders == 0 {
                c.delete(txn).await?;
            }
        }
    }
    Ok(())
}

/// Places an order (with lines), changes one, or deletes one with its lines.
async fn an_order(txn: &DatabaseTransaction, rng: &mut StdRng) -> Result<(), DbErr> {
    let categories: Vec<i32> = categories::Entity::find()
        .all(txn)
        .await?
        .iter()
        .map(|c| c.id)
        .collect();
    let category = |rng: &mut StdRng| {
        (!categories.is_empty() && rng.random_bool(0.7))
            .then(|| categories[rng.random_range(0..categories.len())])
    };
    let orders = order::Entity::find().all(txn).await?;
    match rng.random_range(0..10) {
        0..=4 => {
            let placed = order::ActiveModel {
                r#type: Set(ORDER_TYPES[rng.random_range(0..3)].to_string()),
                category_id: Set(category(rng)),
                placed_at: Set(chrono_zoned(rng)),
                total: Set(Decimal::new(rng.random_range(-10_000..10_000_000), 2)),
                note: Set(rng.random_bool(0.5).then(|| awkward_text(rng))),
                ..Default::default()
            }
            .insert(txn)
            .await?;
            for line_no in 1..=rng.random_range(0..=3) {
                line(placed.id, line_no, rng).insert(txn).await?;
            }
        }
        5..=7 if !orders.is_empty() => {
            let mut a = orders[rng.random_range(0..orders.len())]
                .clone()
                .into_active_model();
            match rng.random_range(0..4) {
                0 => a.r#type = Set(ORDER_TYPES[rng.random_range(0..3)].to_string()),
                1 => a.placed_at = Set(chrono_zoned(rng)),
                2 => a.category_id = Set(category(rng)),
                _ => a.total = Set(Decimal::new(rng.random_range(0..1_000_000), 2)),
            }
            a.update(txn).await?;
        }
        8..=9 if !orders.is_empty() => {
            let o = orders[rng.random_range(0..orders.len())].clone();
            // sea-orm's own `delete_many` would run no hook: the bulk helper captures.
            ormsync::bulk::delete_many::<order_lines::Entity, _>(
                txn,
                order_lines::Column::OrderId.eq(o.id),
            )
            .await?;
            o.delete(txn).await?;
        }
        _ => {}
    }
    Ok(())
}

fn line(order_id: i64, line_no: i32, rng: &mut StdRng) -> order_lines::ActiveModel {
    order_lines::ActiveModel {
        order_id: Set(order_id),
        line_no: Set(line_no),
        sku: Set(format!("SKU-{}", rng.random_range(100..1000))),
        qty: Set(rng.random_range(1..50)),
        price: Set(Decimal::new(rng.random_range(1..100_000), 2)),
    }
}

/// Adds, changes or removes a line of a random order (a composite key).
async fn order_line(txn: &DatabaseTransaction, rng: &mut StdRng) -> Result<(), DbErr> {
    let orders = order::Entity::find().all(txn).await?;
    if orders.is_empty() {
        return Ok(());
    }
    let order_id = orders[rng.random_range(0..orders.len())].id;
    let line_no = rng.random_range(1..=5);
    let found = order_lines::Entity::find_by_id((order_id, line_no))
        .one(txn)
        .await?;
    match (found, rng.random_range(0..3)) {
        (None, _) => {
            line(order_id, line_no, rng).insert(txn).await?;
        }
        (Some(l), 0) => {
            l.delete(txn).await?;
        }
        (Some(l), _) => {
            let mut a = l.into_active_model();
            a.qty = Set(rng.random_range(1..50));
            a.update(txn).await?;
        }
    }
    Ok(())
}

/// Awards, changes or takes back a badge (a database enum in the key).
async fn badge(txn: &DatabaseTransaction, rng: &mut StdRng) -> Result<(), DbErr> {
    use badges::Tier;
    let tier = [Tier::Silver, Tier::Gold, Tier::Bronze, Tier::Platinum][rng.random_range(0..4)];
    let holder = HOLDERS[rng.random_range(0..HOLDERS.len())].to_string();
    let found = badges::Entity::find_by_id((tier, holder.clone()))
        .one(txn)
        .await?;
    let day = chrono::NaiveDate::from_ymd_opt(2020, 1, 1).expect("a date")
        + chrono::Days::new(rng.random_range(0..2000));
    match (found, rng.random_bool(0.3)) {
        (None, _) => {
            badges::ActiveModel {
                tier: Set(tier),
                holder: Set(holder),
                awarded_on: Set(day),
                points: Set(rng.random_range(0..1000)),
            }
            .insert(txn)
            .await?;
        }
        (Some(b), true) => {
            b.delete(txn).await?;
        }
        (Some(b), false) => {
            let mut a = b.into_active_model();
            a.points = Set(rng.random_range(0..1000));
            a.update(txn).await?;
        }
    }
    Ok(())
}

/// Stores, renames or removes an attachment (a key of bytes, zero bytes and high ones
/// included).
async fn attachment(txn: &DatabaseTransaction, rng: &mut StdRng) -> Result<(), DbErr> {
    let n = rng.random_range(0..24u8);
    let digest: Vec<u8> = (0..=n % 7 + 1)
        .map(|i| n.wrapping_mul(37).wrapping_add(i.wrapping_mul(91)))
        .chain([0, 0xff, n])
        .collect();
    let found = attachments::Entity::find_by_id(digest.clone())
        .one(txn)
        .await?;
    let meta = rng.random_bool(0.5).then(|| {
        serde_json::json!({"pages": rng.random_range(1..100), "title": awkward_text(rng), "ratio": 1.5})
    });
    match (found, rng.random_range(0..3)) {
        (None, _) => {
            attachments::ActiveModel {
                digest: Set(digest),
                file_name: Set(format!("{}.pdf", awkward_text(rng))),
                size: Set(rng.random_range(0..i64::MAX)),
                meta: Set(meta),
            }
            .insert(txn)
            .await?;
        }
        (Some(a), 0) => {
            a.delete(txn).await?;
        }
        (Some(a), _) => {
            let mut a = a.into_active_model();
            a.meta = Set(meta);
            a.file_name = Set(awkward_text(rng));
            a.update(txn).await?;
        }
    }
    Ok(())
}

/// Counts a tag's use, or drops the tag (a text key).
async fn tag(txn: &DatabaseTransaction, rng: &mut StdRng) -> Result<(), DbErr> {
    let name = TAGS[rng.random_range(0..TAGS.len())].to_string();
    match (
        tags::Entity::find_by_id(name.clone()).one(txn).await?,
        rng.random_bool(0.25),
    ) {
        (None, _) => {
            tags::ActiveModel {
                name: Set(name),
                uses: Set(1),
            }
            .insert(txn)
            .await?;
        }
        (Some(t), true) => {
            t.delete(txn).await?;
        }
        (Some(t), false) => {
            let uses = t.uses + 1;
            let mut a = t.into_active_model();
            a.uses = Set(uses);
            a.update(txn).await?;
        }
    }
    Ok(())
}

/// Records, rewrites or forgets a moment (every timestamp flavour, `BigDecimal`).
async fn a_moment(txn: &DatabaseTransaction, rng: &mut StdRng) -> Result<(), DbErr> {
    let id = rng.random_range(1..=40);
    let fresh = moment(rng, id);
    match (
        moments::Entity::find_by_id(id).one(txn).await?,
        rng.random_bool(0.25),
    ) {
        (None, _) => {
            moments::ActiveModel::from(fresh).insert(txn).await?;
        }
        (Some(m), true) => {
            m.delete(txn).await?;
        }
        (Some(m), false) => {
            // Some columns, not all: an update carries what it sets.
            let mut a = m.into_active_model();
            a.t_zoned = Set(fresh.t_zoned);
            a.c_local = Set(fresh.c_local);
            a.amount = Set(fresh.amount);
            if rng.random_bool(0.5) {
                a.c_time = Set(fresh.c_time);
                a.maybe_amount = Set(fresh.maybe_amount);
            }
            a.update(txn).await?;
        }
    }
    Ok(())
}

/// Signs up, renames or removes a person, through the application's hooks.
async fn person(txn: &DatabaseTransaction, rng: &mut StdRng) -> Result<(), DbErr> {
    let people = people::Entity::find().all(txn).await?;
    let n = rng.random_range(0..30);
    let email = format!("  User{n}@Example.COM ");
    match rng.random_range(0..4) {
        0..=1 => {
            let taken = people
                .iter()
                .any(|p| p.email == email.trim().to_lowercase());
            if !taken {
                people::ActiveModel {
                    email: Set(email),
                    display_name: Set(format!(" {} ", awkward_text(rng))),
                    ..Default::default()
                }
                .insert(txn)
                .await?;
            }
        }
        2 if !people.is_empty() => {
            let mut a = people[rng.random_range(0..people.len())]
                .clone()
                .into_active_model();
            a.display_name = Set(format!("\t{}\n", awkward_text(rng)));
            a.update(txn).await?;
        }
        3 if !people.is_empty() => {
            people[rng.random_range(0..people.len())]
                .clone()
                .delete(txn)
                .await?;
        }
        _ => {}
    }
    Ok(())
}

/// Creates, changes or deletes a profile (arrays).
async fn profile(txn: &DatabaseTransaction, rng: &mut StdRng) -> Result<(), DbErr> {
    let id = rng.random_range(1..=20);
    let nicknames: Vec<String> = (0..rng.random_range(0..4))
        .map(|_| awkward_text(rng))
        .collect();
    let scores: Vec<i32> = (0..rng.random_range(0..5))
        .map(|_| rng.random_range(i32::MIN..i32::MAX))
        .collect();
    let seen = rng.random_bool(0.5).then(|| {
        (0..rng.random_range(0..3))
            .map(|_| chrono_zoned(rng).with_timezone(&chrono::Utc))
            .collect()
    });
    match (
        profiles::Entity::find_by_id(id).one(txn).await?,
        rng.random_bool(0.25),
    ) {
        (None, _) => {
            profiles::ActiveModel {
                id: Set(id),
                nicknames: Set(nicknames),
                scores: Set(scores),
                seen: Set(seen),
            }
            .insert(txn)
            .await?;
        }
        (Some(p), true) => {
            p.delete(txn).await?;
        }
        (Some(p), false) => {
            let mut a = p.into_active_model();
            a.nicknames = Set(nicknames);
            a.seen = Set(seen);
            a.update(txn).await?;
        }
    }
    Ok(())
}

// ---- the test ------------------------------------------------------------------------------

/// Waits for the destination's initial copy to finish, failing on a halt.
async fn copied(r: &Replicator, what: &str) {
    let began = Instant::now();
    loop {
        let d = r.status().destinations.remove(0);
        assert_ne!(d.state, State::Halted, "{what}: halted: {:?}", d.last_error);
        if d.snapshot.as_ref().is_some_and(|s| s.is_done()) && d.state != State::Copying {
            return;
        }
        assert!(
            began.elapsed() < Duration::from_secs(120),
            "{what}: the initial copy did not finish: {d:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The corpus's tables at a source on `backend`.
fn specs(backend: Backend) -> Vec<TableSpec> {
    let mut out = vec![
        categories::Entity::table_spec(),
        order::Entity::table_spec(),
        order_lines::Entity::table_spec(),
        badges::Entity::table_spec(),
        attachments::Entity::table_spec(),
        tags::Entity::table_spec(),
        moments::Entity::table_spec(),
        people::Entity::table_spec(),
    ];
    if backend == Backend::Postgres {
        out.push(profiles::Entity::table_spec());
    }
    out
}

/// What differs between source and destination, table by table, each row read by its
/// columns' types (an array a destination keeps as JSON reads back as the array).
async fn every_difference(
    source: &DatabaseConnection,
    dest: &DatabaseConnection,
    specs: &[TableSpec],
) -> Vec<String> {
    let mut out = Vec::new();
    for spec in specs {
        let s = rows_by_spec(source, spec).await;
        let d = rows_by_spec(dest, spec).await;
        out.extend(diff_rows(&spec.table, &spec.key, s, d, &|_| String::new()));
    }
    out
}

async fn corpus_replicates(src: Backend, dst: Backend) {
    common::trace();
    let seed = common::seed();
    let what = format!("{}→{} (corpus seed = {seed})", src.name(), dst.name());
    eprintln!("corpus seed = {seed} ({}→{})", src.name(), dst.name());
    let (Some(source), Some(dest)) = (TestDb::create(src).await, TestDb::create(dst).await) else {
        return;
    };
    // MariaDB as most servers run it: text compared without case or accents.
    for db in [&source, &dest] {
        if db.backend == Backend::MySql {
            db.db
                .execute_unprepared(
                    "ALTER DATABASE CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci",
                )
                .await
                .expect("a case-insensitive default");
        }
    }
    application_tables(&source).await;
    let arrays = src == Backend::Postgres;
    let mut writer = Writer {
        db: source.db.clone(),
        rng: StdRng::seed_from_u64(seed),
        arrays,
        committed: 0,
    };

    // Rows that exist before the replicator does: the initial copy takes them.
    writer.run(200).await;
    let r = replicator(&source, &dest).start().await.expect("start");
    // Writes while the copy runs, then after it.
    writer.run(150).await;
    copied(&r, &what).await;
    writer.run(150).await;
    r.sync_now().await.expect("sync");
    let status = r.status().destinations.remove(0);
    r.shutdown().await;
    assert_ne!(
        status.state,
        State::Halted,
        "{what}: halted: {:?}",
        status.last_error
    );

    let specs = specs(src);
    let diffs = every_difference(&source.db, &dest.db, &specs).await;
    assert!(diffs.is_empty(), "{what}:\n{}", diffs.join("\n"));
    // The writer's plan did reach every table.
    for table in [
        "categories",
        "\"order\"",
        "order_lines",
        "badges",
        "attachments",
    ] {
        let table = if src == Backend::MySql {
            table.replace('"', "`")
        } else {
            table.to_string()
        };
        assert!(
            common::count(&source.db, &table).await > 0,
            "{what}: the writes left `{table}` empty"
        );
    }
    // The application's hooks ran at the source; the destination holds what they saved.
    let people = people::Entity::find()
        .all(&source.db)
        .await
        .expect("people");
    assert!(
        people
            .iter()
            .all(|p| p.email == p.email.trim().to_lowercase()),
        "{what}: the hooks did not run: {people:?}"
    );

    let mut verifier = Verifier::new(source.db.clone(), dest.db.clone());
    for spec in &specs {
        verifier = verifier.table(spec.clone());
    }
    let reports = verifier
        .verify(&VerifyOptions::default().chunk_size(5))
        .await
        .unwrap_or_else(|e| panic!("{what}: verify failed: {e}"));
    for report in &reports {
        assert!(report.is_clean(), "{what}: verify found drift: {report}");
    }
    eprintln!(
        "{what}: {} transactions, every table equal, verify clean",
        writer.committed
    );
}

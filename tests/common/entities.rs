//! The entities the tests replicate, and their tables on each backend (as an application's
//! migrations would create them).

use std::str::FromStr;

use chrono::{SubsecRound, Utc};
use sea_orm::DbBackend;
use sea_orm::Set;
use sea_orm::prelude::Decimal;

/// An account to insert or update; every backend here stores timestamps to the microsecond.
pub fn account(id: i64, name: &str, balance: &str) -> accounts::ActiveModel {
    accounts::ActiveModel {
        id: Set(id),
        name: Set(name.into()),
        balance: Set(Decimal::from_str(balance).expect("decimal")),
        updated_at: Set(Utc::now().trunc_subsecs(6)),
        note: Set(Some(format!("note of {id}"))),
        local_flag: Set(Some(1)),
    }
}

fn at(s: &str) -> chrono::DateTime<Utc> {
    chrono::DateTime::<Utc>::from_str(s).expect("timestamp")
}

/// Three rows holding every type at its edges (`i64::MAX`, `f64::MIN_POSITIVE`, empty and
/// NULL text, unicode, 256 bytes, nested JSON). sea-orm reads SQLite decimals through f64,
/// so decimals stay within 15 digits.
pub fn everything_rows() -> Vec<everything::Model> {
    vec![
        everything::Model {
            id: 1,
            amount: Decimal::from_str("1234567890.12345").unwrap(),
            ts: at("2024-02-29T23:59:59.123456Z"),
            uid: uuid::Uuid::from_str("6f1e0c1a-8d3b-4c8e-9a57-0123456789ab").unwrap(),
            doc: serde_json::json!({"a": [1, 2.5, "x", null], "nested": {"ü": "🚀"}, "big": 9007199254740993i64}),
            bin: vec![0, 255, 1, 2, 0, 127, 128],
            big: i64::MAX,
            dbl: 0.1 + 0.2,
            txt: "ünïcødé 🚀 日本語 \"quoted\" 'single' \\ back\nline".into(),
            maybe_txt: None,
            maybe_int: None,
            flag: true,
        },
        everything::Model {
            id: 2,
            amount: Decimal::from_str("-0.0001").unwrap(),
            ts: at("1999-12-31T23:59:59.999999Z"),
            uid: uuid::Uuid::nil(),
            doc: serde_json::json!([]),
            bin: vec![],
            big: i64::MIN,
            dbl: f64::MIN_POSITIVE,
            txt: String::new(),
            maybe_txt: Some(String::new()),
            maybe_int: Some(i32::MIN),
            flag: false,
        },
        everything::Model {
            id: 3,
            amount: Decimal::from_str("98765.4321").unwrap(),
            // Before 2038: sqlx binds a zoned timestamp to MariaDB as a `TIMESTAMP`, which
            // the server turns into NULL past 2038-01-19, and MariaDB is a source here.
            ts: at("2037-06-15T12:00:00.5Z"),
            uid: uuid::Uuid::max(),
            doc: serde_json::json!({"nothing": null}),
            bin: (0..=255).collect(),
            big: 0,
            dbl: -1.5e300,
            txt: "x".repeat(5000),
            maybe_txt: Some("NULL".into()),
            maybe_int: Some(0),
            flag: true,
        },
    ]
}

/// A line item to insert or update.
pub fn line(order_id: i64, line_no: i32, qty: i32) -> line_items::ActiveModel {
    line_items::ActiveModel {
        order_id: Set(order_id),
        line_no: Set(line_no),
        sku: Set(format!("SKU-{order_id}-{line_no}")),
        qty: Set(qty),
    }
}

pub mod accounts {
    use ormsync::{Replicated, ReplicatedHooks};
    use sea_orm::entity::prelude::*;
    use sea_orm::{ActiveValue, Set};

    /// A typical entity: a decimal, a timestamp, a nullable column, a column that never
    /// ships, and a hook of the application's own.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, Replicated)]
    #[sea_orm(table_name = "accounts")]
    #[replicated(hooks)]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        pub name: String,
        pub balance: Decimal,
        pub updated_at: DateTimeUtc,
        pub note: Option<String>,
        #[replicated(skip)]
        pub local_flag: Option<i32>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    #[async_trait::async_trait]
    impl ReplicatedHooks for ActiveModel {
        async fn before_save<C: ConnectionTrait>(
            mut self,
            _db: &C,
            _insert: bool,
        ) -> Result<Self, DbErr> {
            // The application's own rule: names are stored trimmed.
            if let ActiveValue::Set(name) = &self.name {
                let trimmed = name.trim().to_string();
                self.name = Set(trimmed);
            }
            Ok(self)
        }
    }
}

pub mod line_items {
    use ormsync::Replicated;
    use sea_orm::entity::prelude::*;

    /// A composite primary key.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, Replicated)]
    #[sea_orm(table_name = "line_items")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub order_id: i64,
        #[sea_orm(primary_key, auto_increment = false)]
        pub line_no: i32,
        pub sku: String,
        pub qty: i32,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
}

pub mod everything {
    use ormsync::Replicated;
    use sea_orm::entity::prelude::*;

    /// One column of every type whose exact round trip the payload promises.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, Replicated)]
    #[sea_orm(table_name = "everything")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        pub amount: Decimal,
        pub ts: DateTimeUtc,
        pub uid: Uuid,
        pub doc: Json,
        pub bin: Vec<u8>,
        pub big: i64,
        pub dbl: f64,
        pub txt: String,
        pub maybe_txt: Option<String>,
        pub maybe_int: Option<i32>,
        pub flag: bool,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
}

/// `CREATE TABLE` statements for the test entities on `backend`.
pub fn ddl(backend: DbBackend) -> Vec<String> {
    match backend {
        DbBackend::Postgres => vec![
            "CREATE TABLE accounts (id BIGINT PRIMARY KEY, name TEXT NOT NULL, balance NUMERIC(20,4) NOT NULL, \
             updated_at TIMESTAMPTZ NOT NULL, note TEXT NULL, local_flag INTEGER NULL)".into(),
            "CREATE TABLE line_items (order_id BIGINT NOT NULL, line_no INTEGER NOT NULL, sku TEXT NOT NULL, \
             qty INTEGER NOT NULL, PRIMARY KEY (order_id, line_no))".into(),
            "CREATE TABLE everything (id BIGINT PRIMARY KEY, amount NUMERIC(38,10) NOT NULL, ts TIMESTAMPTZ NOT NULL, \
             uid UUID NOT NULL, doc JSONB NOT NULL, bin BYTEA NOT NULL, big BIGINT NOT NULL, \
             dbl DOUBLE PRECISION NOT NULL, txt TEXT NOT NULL, maybe_txt TEXT NULL, maybe_int INTEGER NULL, \
             flag BOOLEAN NOT NULL)".into(),
        ],
        DbBackend::MySql => vec![
            "CREATE TABLE accounts (id BIGINT PRIMARY KEY, name VARCHAR(255) NOT NULL, balance DECIMAL(20,4) NOT NULL, \
             updated_at DATETIME(6) NOT NULL, note TEXT NULL, local_flag INT NULL)".into(),
            "CREATE TABLE line_items (order_id BIGINT NOT NULL, line_no INT NOT NULL, sku VARCHAR(255) NOT NULL, \
             qty INT NOT NULL, PRIMARY KEY (order_id, line_no))".into(),
            "CREATE TABLE everything (id BIGINT PRIMARY KEY, amount DECIMAL(38,10) NOT NULL, ts DATETIME(6) NOT NULL, \
             uid BINARY(16) NOT NULL, doc JSON NOT NULL, bin LONGBLOB NOT NULL, big BIGINT NOT NULL, \
             dbl DOUBLE NOT NULL, txt TEXT NOT NULL, maybe_txt TEXT NULL, maybe_int INT NULL, \
             flag BOOL NOT NULL)".into(),
        ],
        // sea-orm's own SQLite column types (what `Schema::create_table_from_entity` makes).
        _ => vec![
            "CREATE TABLE accounts (id INTEGER PRIMARY KEY, name TEXT NOT NULL, balance real_decimal NOT NULL, \
             updated_at timestamp_with_timezone_text NOT NULL, note TEXT NULL, local_flag INTEGER NULL)".into(),
            "CREATE TABLE line_items (order_id INTEGER NOT NULL, line_no INTEGER NOT NULL, sku TEXT NOT NULL, \
             qty INTEGER NOT NULL, PRIMARY KEY (order_id, line_no))".into(),
            "CREATE TABLE everything (id INTEGER PRIMARY KEY, amount real_decimal NOT NULL, \
             ts timestamp_with_timezone_text NOT NULL, uid uuid_text NOT NULL, doc json_text NOT NULL, \
             bin blob NOT NULL, big INTEGER NOT NULL, dbl double NOT NULL, txt TEXT NOT NULL, \
             maybe_txt TEXT NULL, maybe_int INTEGER NULL, flag boolean NOT NULL)".into(),
        ],
    }
}

pub mod customers {
    use ormsync::Replicated;
    use sea_orm::entity::prelude::*;

    /// A parent table (its orders reference it), with a column that never ships.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, Replicated)]
    #[sea_orm(table_name = "snap_customers")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        pub name: String,
        #[sea_orm(column_type = "Decimal(Some((20, 4)))")]
        pub credit: Decimal,
        #[replicated(skip)]
        pub local_note: Option<String>,
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

pub mod orders {
    use ormsync::Replicated;
    use sea_orm::entity::prelude::*;

    /// A child table: a foreign key to `snap_customers`.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, Replicated)]
    #[sea_orm(table_name = "snap_orders")]
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

/// `CREATE TABLE` statements for `customers` and `orders` (with the foreign key) on
/// `backend`, as an application's migrations would create them.
pub fn fk_ddl(backend: DbBackend) -> Vec<String> {
    let (text, dec, fk_suffix) = match backend {
        DbBackend::Postgres => ("TEXT", "NUMERIC(20,4)", ""),
        DbBackend::MySql => ("VARCHAR(255)", "DECIMAL(20,4)", " ENGINE=InnoDB"),
        _ => ("TEXT", "real_decimal", ""),
    };
    vec![
        format!(
            "CREATE TABLE snap_customers (id BIGINT NOT NULL PRIMARY KEY, name {text} NOT NULL, \
             credit {dec} NOT NULL, local_note {text} NULL){fk_suffix}"
        ),
        format!(
            "CREATE TABLE snap_orders (id BIGINT NOT NULL PRIMARY KEY, customer_id BIGINT NOT NULL, \
             item {text} NOT NULL, qty INTEGER NOT NULL, \
             FOREIGN KEY (customer_id) REFERENCES snap_customers (id)){fk_suffix}"
        ),
    ]
}

//! One authoritative hub feeding three child databases that have lived their own lives:
//! each child assigns its own ids and keeps rows of its own, the hub's rows land under the
//! child's ids (an existing child row with the same email is adopted, not duplicated),
//! every order points at the right local customer, and a child's local edit is kept under
//! `DestinationWins` and logged in its `ormsync_conflicts`.
//!
//! ```text
//! cargo run --example hub_and_children
//! ```
//!
//! runs on SQLite files in a temporary directory. `--hub URL` and `--child URL` (three
//! times) run it on servers; use scratch databases, since the example drops and recreates
//! its `hub_*` tables and ormsync's own tables there. Exits non-zero if a check fails.
//!
//! ```text
//! cargo run --example hub_and_children -- --nats nats://127.0.0.1:4222
//! ```
//!
//! ships through a NATS JetStream server instead (feature `jetstream`, on by default): the
//! hub publishes once to a stream of its own (`HUB_` and 8 random hex digits, so runs do not
//! collide), each child applies it with a `Subscriber` under the same rules, and the
//! example deletes the stream and its `_STATE` companion at the end.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ormsync::redact::redact;
use ormsync::{ConflictPolicy, Destination, KeyStrategy, Replicator};
use sea_orm::{
    ActiveModelTrait, ConnectionTrait, Database, DatabaseConnection, DbErr, EntityTrait,
    QueryOrder, Schema, Set, Statement, TransactionTrait,
};

mod customers {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, ormsync::Replicated)]
    #[sea_orm(table_name = "hub_customers")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        #[sea_orm(unique)]
        pub email: String,
        pub name: String,
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
    #[sea_orm(table_name = "hub_orders")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        /// Follows the key map: at a child it holds the child's id of the customer.
        pub customer_id: i64,
        pub item: String,
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
#[command(about = "A hub feeding three children whose keys differ from its own")]
struct Args {
    /// The hub's database URL. Default: a SQLite file in a temporary directory.
    #[arg(long, env = "ORMSYNC_HUB_URL", hide_env_values = true)]
    hub: Option<String>,
    /// A child's database URL; give three. Default: three SQLite files.
    #[arg(
        long = "child",
        env = "ORMSYNC_CHILD_URLS",
        hide_env_values = true,
        value_delimiter = ','
    )]
    children: Vec<String>,
    /// Ship through this NATS JetStream server (`nats://host:port`) instead of writing to
    /// each child directly.
    #[arg(long, env = "ORMSYNC_NATS_URL", hide_env_values = true)]
    nats: Option<String>,
}

type Error = Box<dyn std::error::Error>;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "error".into()),
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
    let hub_url = args.hub.unwrap_or_else(|| sqlite("hub.sqlite"));
    let child_urls = match args.children.len() {
        0 => (1..=3)
            .map(|i| sqlite(&format!("child-{i}.sqlite")))
            .collect(),
        3 => args.children,
        n => return Err(format!("give three --child URLs, not {n}").into()),
    };

    let hub = Database::connect(&hub_url).await?;
    fresh(&hub).await?;
    ormsync::install(&hub).await?;
    println!("hub      {}", redact(&hub_url));

    // Each child lived its own life before joining: a different number of local rows, so
    // its ids are offset from the hub's, and child-2 already knows one of the hub's
    // customers (same email) under an id of its own.
    let mut children = Vec::new();
    for (i, url) in child_urls.iter().enumerate() {
        let name = format!("child-{}", i + 1);
        let db = Database::connect(url).await?;
        fresh(&db).await?;
        ormsync::install(&db).await?;
        for n in 0..(2 + 3 * i) {
            local(
                &db,
                &format!("local{n}@{name}.example"),
                &format!("{name} local {n}"),
            )
            .await?;
        }
        if i == 1 {
            local(&db, "grace@hub.example", "Grace (child-2's own record)").await?;
        }
        println!("{name:<8} {}", redact(url));
        children.push((name, db));
    }

    // The hub's data, written by the application in transactions.
    let txn = hub.begin().await?;
    let mut hub_customers = Vec::new();
    for (email, name) in [
        ("ada@hub.example", "Ada Lovelace"),
        ("grace@hub.example", "Grace Hopper"),
        ("edsger@hub.example", "Edsger Dijkstra"),
    ] {
        let c = customers::ActiveModel {
            email: Set(email.into()),
            name: Set(name.into()),
            ..Default::default()
        }
        .insert(&txn)
        .await?;
        orders::ActiveModel {
            customer_id: Set(c.id),
            item: Set(format!("welcome pack for {name}")),
            ..Default::default()
        }
        .insert(&txn)
        .await?;
        hub_customers.push(c);
    }
    txn.commit().await?;

    // Every child: its own keys (adopting rows with the same email), orders following
    // their customers, and local edits kept.
    let shipping = match &args.nats {
        None => Shipping::direct(&hub, &children).await?,
        Some(url) => Shipping::stream(url, &hub, &children).await?,
    };
    let checked = check(&hub, &children, &hub_customers, &shipping).await;
    shipping.shutdown().await;
    let ok = checked?;
    println!(
        "\n{}",
        if ok {
            "every child is consistent"
        } else {
            "CHECKS FAILED"
        }
    );
    Ok(ok)
}

/// The rules every child applies the hub's rows under, directly or from a stream.
fn rules(name: &str, db: &DatabaseConnection) -> Destination {
    Destination::new(name, db.clone())
        .keys::<customers::Entity>(KeyStrategy::key_map().matching(["email"]))
        .keys::<orders::Entity>(KeyStrategy::key_map())
        .conflicts(ConflictPolicy::DestinationWins)
        .alert_on_conflicts()
}

/// The first sync, a local edit at child-2 and the hub's renames, then each child's rows
/// compared to the hub's: whether every check passed.
async fn check(
    hub: &DatabaseConnection,
    children: &[(String, DatabaseConnection)],
    hub_customers: &[customers::Model],
    shipping: &Shipping,
) -> Result<bool, Error> {
    shipping.sync().await?;
    println!("\nfirst sync: each child holds the hub's customers under its own ids");
    for (name, db) in children {
        let mut line = Vec::new();
        for c in hub_customers {
            line.push(format!("{} → {}", c.id, id_at(db, &c.email).await?));
        }
        println!("  {name}: {}", line.join(", "));
    }

    // child-2 edits Grace locally; then the hub's administrator renames every customer.
    children[1]
        .1
        .execute_unprepared("UPDATE hub_customers SET name = 'Grace (edited at child-2)' WHERE email = 'grace@hub.example'")
        .await?;
    let txn = hub.begin().await?;
    for c in hub_customers {
        let mut am: customers::ActiveModel = c.clone().into();
        am.name = Set(format!("{} (verified)", c.name));
        am.update(&txn).await?;
    }
    orders::ActiveModel {
        customer_id: Set(hub_customers[2].id),
        item: Set("a second order for Edsger".into()),
        ..Default::default()
    }
    .insert(&txn)
    .await?;
    txn.commit().await?;
    println!("\nthe hub renamed every customer; child-2 had edited Grace itself");
    shipping.sync().await?;

    let hub_view = view(hub).await?;
    let mut ok = true;
    for (name, db) in children {
        let child = view(db).await?;
        println!("\n{name}:");
        for (email, cname, items) in &child {
            println!("  {email:<32} {cname:<32} orders: {items:?}");
        }
        for (email, hub_name, hub_items) in &hub_view {
            let Some((_, child_name, child_items)) = child.iter().find(|(e, ..)| e == email) else {
                println!("  MISSING {email}");
                ok = false;
                continue;
            };
            let expected_name = if name == "child-2" && email == "grace@hub.example" {
                "Grace (edited at child-2)"
            } else {
                hub_name.as_str()
            };
            if child_name != expected_name || child_items != hub_items {
                println!("  WRONG {email}: {child_name} {child_items:?}");
                ok = false;
            }
        }
        let locals = child
            .iter()
            .filter(|(e, ..)| e.contains(name.as_str()))
            .count();
        println!("  {locals} local rows kept");
        for (table, outcome) in conflicts(db).await? {
            println!("  conflict logged: {table}: {outcome}");
        }
    }
    let grace_conflicts = conflicts(&children[1].1).await?;
    if grace_conflicts != [("hub_customers".to_string(), "kept_destination".to_string())] {
        println!("child-2 should have logged one kept local edit, found {grace_conflicts:?}");
        ok = false;
    }
    Ok(ok)
}

/// How the hub's changes reach the children.
enum Shipping {
    /// One destination per child, written by the hub's replicator.
    Direct(Replicator),
    /// One JetStream destination at the hub; a subscriber per child.
    #[cfg(feature = "jetstream")]
    Stream(Box<stream::Stream>),
}

impl Shipping {
    async fn direct(
        hub: &DatabaseConnection,
        children: &[(String, DatabaseConnection)],
    ) -> Result<Shipping, Error> {
        let mut builder = Replicator::builder(hub.clone())
            .entity::<customers::Entity>()
            .entity::<orders::Entity>()
            .poll_interval(Duration::from_millis(200))
            .on_alert(|alert| println!("  alert: {alert}"));
        for (name, db) in children {
            builder = builder.destination(rules(name, db));
        }
        Ok(Shipping::Direct(builder.start().await?))
    }

    #[cfg(feature = "jetstream")]
    async fn stream(
        url: &str,
        hub: &DatabaseConnection,
        children: &[(String, DatabaseConnection)],
    ) -> Result<Shipping, Error> {
        Ok(Shipping::Stream(Box::new(
            stream::Stream::start(url, hub, children).await?,
        )))
    }

    #[cfg(not(feature = "jetstream"))]
    async fn stream(
        _: &str,
        _: &DatabaseConnection,
        _: &[(String, DatabaseConnection)],
    ) -> Result<Shipping, Error> {
        Err("--nats needs ormsync's `jetstream` feature".into())
    }

    /// Ships everything the hub's outbox holds, and waits until every child applied it.
    async fn sync(&self) -> Result<(), Error> {
        match self {
            Shipping::Direct(replicator) => Ok(replicator.sync_now().await?),
            #[cfg(feature = "jetstream")]
            Shipping::Stream(s) => s.sync().await,
        }
    }

    async fn shutdown(self) {
        match self {
            Shipping::Direct(replicator) => replicator.shutdown().await,
            #[cfg(feature = "jetstream")]
            Shipping::Stream(s) => s.shutdown().await,
        }
    }
}

#[cfg(feature = "jetstream")]
mod stream {
    use std::time::Duration;

    use ormsync::jetstream::{Publisher, Subscriber};
    use ormsync::{Destination, Replicator};
    use sea_orm::DatabaseConnection;

    use super::{Error, customers, orders, rules};

    /// The hub publishing to a stream of its own, and a subscriber per child.
    pub struct Stream {
        js: async_nats::jetstream::Context,
        name: String,
        replicator: Replicator,
        subscribers: Vec<Subscriber>,
    }

    impl Stream {
        pub async fn start(
            url: &str,
            hub: &DatabaseConnection,
            children: &[(String, DatabaseConnection)],
        ) -> Result<Stream, Error> {
            let client = async_nats::connect(url).await?;
            let js = async_nats::jetstream::new(client);
            let name = format!(
                "HUB_{}",
                &uuid::Uuid::new_v4().simple().to_string()[..8].to_uppercase()
            );
            println!("stream   {name} at {}", ormsync::redact::redact(url));
            let publisher = Publisher::builder(js.clone(), &name).create().await?;
            let replicator = Replicator::builder(hub.clone())
                .entity::<customers::Entity>()
                .entity::<orders::Entity>()
                .poll_interval(Duration::from_millis(200))
                .on_alert(|alert| println!("  alert: {alert}"))
                .destination(Destination::jetstream("children", hub.clone(), publisher).realtime())
                .start()
                .await;
            let replicator = match replicator {
                Ok(r) => r,
                Err(e) => {
                    delete(&js, &name).await;
                    return Err(e.into());
                }
            };
            let mut stream = Stream {
                js,
                name,
                replicator,
                subscribers: Vec::new(),
            };
            for (child, db) in children {
                let subscriber =
                    Subscriber::builder(stream.js.clone(), &stream.name, rules(child, db))
                        .entity::<customers::Entity>()
                        .entity::<orders::Entity>()
                        .on_alert(|alert| println!("  alert: {alert}"))
                        .start()
                        .await;
                match subscriber {
                    Ok(s) => stream.subscribers.push(s),
                    Err(e) => {
                        stream.shutdown().await;
                        return Err(e.into());
                    }
                }
            }
            Ok(stream)
        }

        /// Publishes what the hub's outbox holds, then waits until every child has applied
        /// up to the hub's position.
        pub async fn sync(&self) -> Result<(), Error> {
            self.replicator.sync_now().await?;
            let hub = self
                .replicator
                .status()
                .destinations
                .into_iter()
                .find(|d| d.name == "children")
                .ok_or("the hub has no stream destination")?;
            for s in &self.subscribers {
                s.wait_for(Duration::from_secs(30), |c| {
                    c.watermark >= hub.watermark && c.frontier >= hub.frontier
                })
                .await?;
            }
            Ok(())
        }

        /// Stops the children and the hub, and deletes the stream and its state stream.
        pub async fn shutdown(self) {
            for s in self.subscribers {
                s.shutdown().await;
            }
            self.replicator.shutdown().await;
            delete(&self.js, &self.name).await;
        }
    }

    async fn delete(js: &async_nats::jetstream::Context, name: &str) {
        for stream in [name.to_string(), format!("{name}_STATE")] {
            match js.delete_stream(&stream).await {
                Ok(_) => println!("deleted stream {stream}"),
                Err(e) => eprintln!("could not delete stream {stream}: {e}"),
            }
        }
    }
}

/// Drops and recreates the example's tables from the entities.
async fn fresh(db: &DatabaseConnection) -> Result<(), DbErr> {
    ormsync::uninstall(db)
        .await
        .map_err(|e| DbErr::Custom(e.to_string()))?;
    db.execute_unprepared("DROP TABLE IF EXISTS hub_orders")
        .await?;
    db.execute_unprepared("DROP TABLE IF EXISTS hub_customers")
        .await?;
    let schema = Schema::new(db.get_database_backend());
    db.execute(&schema.create_table_from_entity(customers::Entity))
        .await?;
    db.execute(&schema.create_table_from_entity(orders::Entity))
        .await?;
    Ok(())
}

/// A row a child's own application wrote.
async fn local(db: &DatabaseConnection, email: &str, name: &str) -> Result<(), DbErr> {
    let backend = db.get_database_backend();
    let sql = match backend {
        sea_orm::DbBackend::Postgres => "INSERT INTO hub_customers (email, name) VALUES ($1, $2)",
        _ => "INSERT INTO hub_customers (email, name) VALUES (?, ?)",
    };
    db.execute_raw(Statement::from_sql_and_values(
        backend,
        sql,
        [email.into(), name.into()],
    ))
    .await
    .map(|_| ())
}

async fn id_at(db: &DatabaseConnection, email: &str) -> Result<i64, DbErr> {
    Ok(customers::Entity::find()
        .all(db)
        .await?
        .into_iter()
        .find(|c| c.email == email)
        .map(|c| c.id)
        .unwrap_or(-1))
}

/// Each customer as (email, name, its orders' items), by email: the same on every side
/// when every foreign key points at the right row, whatever the ids.
async fn view(db: &DatabaseConnection) -> Result<Vec<(String, String, Vec<String>)>, DbErr> {
    let customers = customers::Entity::find()
        .order_by_asc(customers::Column::Email)
        .all(db)
        .await?;
    let orders = orders::Entity::find().all(db).await?;
    Ok(customers
        .into_iter()
        .map(|c| {
            let mut items: Vec<String> = orders
                .iter()
                .filter(|o| o.customer_id == c.id)
                .map(|o| o.item.clone())
                .collect();
            items.sort();
            (c.email, c.name, items)
        })
        .collect())
}

async fn conflicts(db: &DatabaseConnection) -> Result<Vec<(String, String)>, DbErr> {
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT table_name, outcome FROM ormsync_conflicts ORDER BY id",
        ))
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("", "table_name")?, r.try_get("", "outcome")?)))
        .collect()
}

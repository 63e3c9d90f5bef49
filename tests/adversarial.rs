//! Hostile histories, checked by what a user would check: every destination ends with the
//! source's rows.
//!
//! Four writers share a key space of 20 customers and 60 orders (a foreign key from each
//! order to its customer), so they collide all the time. Each runs a plan of random
//! transactions drawn from a seed: inserts, updates (an update that sets no column among
//! them), deletes, a delete and a re-insert of one key in one transaction, orders moved to
//! another customer, a customer deleted with its orders or deleted and created again with
//! some of them, the bulk helpers of `ormsync::bulk`, rollbacks, and transactions held open
//! while the others commit. What the database refuses under that concurrency (deadlocks,
//! lock timeouts, busy SQLite, key and foreign-key violations, rows gone) rolls that
//! transaction back, and the writer goes on.
//!
//! Meanwhile a controller follows the seed's plan of replicator events, each after a given
//! number of writer transactions: two destinations, fresh databases whose tables the
//! worker creates, are added while the writers run (the second at run time to a live
//! replicator, or by starting another instance), so their initial snapshots copy
//! mid-stream; instances are killed as a crash would (no shutdown, leases left to expire),
//! some in the middle of a snapshot, and others started; several may run at once and
//! compete for the leases. Now and then a destination is resynced or paused for a while.
//! Retention runs often and prunes the outbox. The destinations apply a large batch
//! through one, two or three connections at once.
//!
//! Then the writers stop, every destination is drained, and three oracles are checked:
//!
//! 1. every destination's tables hold the source's rows, row by row;
//! 2. no destination halted (status of every live instance, alerts of all instances);
//! 3. per key, replaying the captured changes in outbox order gives the source's final row.
//!    A trigger at the source copies each outbox row to `adv_outbox_log` in the capturing
//!    transaction, so what retention prunes is still there to replay.
//!
//! A failure names the oracle, the seed, and the table and keys that differ, each key with
//! its last captured changes; a halt comes with the refused change's history, the changes
//! captured just before it and, for a customer, the destination's orders still referencing
//! it; then the replication state at the source and at each destination (progress,
//! checkpoints, snapshot progress), the settings, the events as they happened, and each
//! live instance's status. Writers meeting an error a database does not raise for
//! concurrency alone fail the round too.
//!
//! Environment:
//!
//! - `ORMSYNC_SEED=<u64>`: the seed (random otherwise). Printed at the start of every round
//!   as `adversarial seed = …`. The seed fixes every writer's plan and the replicator
//!   events; the interleaving still varies from run to run.
//! - `ORMSYNC_SOAK_SECS=<seconds>`: soak mode. Rounds four times longer, one after another
//!   with seeds `seed`, `seed + 1`, …, until that many seconds have passed. A failing soak
//!   round is replayed with `ORMSYNC_SEED=<its seed> ORMSYNC_SOAK_SECS=1`.
//!
//! ```sh
//! cargo test --test adversarial                                  # one round per pair, 5-15 s each
//! ORMSYNC_SEED=42 cargo test --test adversarial postgres_to_mariadb
//! ORMSYNC_SOAK_SECS=600 cargo test --release --test adversarial  # ten minutes per pair
//! ```

#[macro_use]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::entities::{customers, fk_ddl, orders};
use common::{Backend, TestDb, differences_noted, key_of_row, rows_of};
use ormsync::change::{Op, Row};
use ormsync::classify::ErrorKind;
use ormsync::value::Value;
use ormsync::{Alert, AlertKind, Destination, Replicated, Replicator, RetentionPolicy, State};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sea_orm::prelude::Decimal;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction,
    DbBackend, DbErr, EntityTrait, IntoActiveModel, ModelTrait, QueryFilter, Set, SqlErr,
    Statement, TransactionTrait, Unchanged,
};

on_every_pair!(also_sqlite: hostile_histories);

mod hostile_histories_one_engine {
    use super::*;
    on_every_pair!(@pair hostile_histories, postgres_to_postgres, Postgres, Postgres);
}

// ---- the plan ----------------------------------------------------------------------------

const WRITERS: usize = 4;
const PARENTS: i64 = 20;
const CHILDREN: i64 = 60;
const DESTINATIONS: [&str; 2] = ["a", "b"];

/// How long a soak lasts, from `ORMSYNC_SOAK_SECS`; `None` for the default single round.
fn soak() -> Option<Duration> {
    let s = std::env::var("ORMSYNC_SOAK_SECS").ok()?;
    let secs: u64 = s
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("ORMSYNC_SOAK_SECS={s:?} is not a number of seconds"));
    Some(Duration::from_secs(secs))
}

/// What one operation of a writer's transaction does.
#[derive(Clone, Copy, Debug)]
enum Kind {
    InsertCustomer,
    InsertOrder,
    UpdateCustomer,
    UpdateOrder,
    UpdateSettingNothing,
    DeleteOrder,
    DeleteAndReinsertOrder,
    RecreateCustomerWithOrders,
    MoveOrder,
    DeleteCustomerWithOrders,
    BulkInsertOrders,
    BulkUpdate,
    BulkDelete,
    HoldOpen,
}

/// Each kind with its weight.
const KINDS: [(Kind, u32); 14] = [
    (Kind::InsertCustomer, 12),
    (Kind::InsertOrder, 18),
    (Kind::UpdateCustomer, 10),
    (Kind::UpdateOrder, 12),
    (Kind::UpdateSettingNothing, 6),
    (Kind::DeleteOrder, 9),
    (Kind::DeleteAndReinsertOrder, 6),
    (Kind::RecreateCustomerWithOrders, 4),
    (Kind::MoveOrder, 8),
    (Kind::DeleteCustomerWithOrders, 5),
    (Kind::BulkInsertOrders, 4),
    (Kind::BulkUpdate, 4),
    (Kind::BulkDelete, 3),
    (Kind::HoldOpen, 4),
];

/// One operation, every random choice drawn up front so the plan depends on the seed
/// alone, whatever the operation finds when it runs.
#[derive(Clone, Debug)]
struct OpPlan {
    kind: Kind,
    customer: i64,
    other_customer: i64,
    order: i64,
    orders: Vec<i64>,
    /// Picks among the ways of doing the operation (see [`OpPlan::variant`]).
    way: u32,
    value: i64,
    hold: Duration,
}

impl OpPlan {
    /// Which of `n` ways to do the operation.
    fn variant(&self, n: u32) -> u32 {
        self.way % n
    }

    fn draw(rng: &mut StdRng) -> Self {
        let total: u32 = KINDS.iter().map(|(_, w)| w).sum();
        let mut pick = rng.random_range(0..total);
        let kind = KINDS
            .iter()
            .find(|(_, w)| {
                let hit = pick < *w;
                pick = pick.saturating_sub(*w);
                hit
            })
            .map(|(k, _)| *k)
            .expect("a kind");
        let n = rng.random_range(1..=3);
        OpPlan {
            kind,
            customer: rng.random_range(1..=PARENTS),
            other_customer: rng.random_range(1..=PARENTS),
            order: rng.random_range(1..=CHILDREN),
            orders: (0..n).map(|_| rng.random_range(1..=CHILDREN)).collect(),
            way: rng.random_range(0..12),
            value: rng.random_range(0..1_000_000),
            // Now and then long enough for an outbox gap to be probed (MariaDB probes
            // one a second old) and for retention and snapshots to run around it.
            hold: Duration::from_millis(if rng.random_bool(0.05) {
                rng.random_range(200..=1200)
            } else {
                rng.random_range(1..=15)
            }),
        }
    }
}

#[derive(Clone, Debug)]
struct TxnPlan {
    ops: Vec<OpPlan>,
    /// Sleep this long before the end, holding the transaction (and its locks) open.
    hold_before_end: Option<Duration>,
    rollback: bool,
}

impl TxnPlan {
    fn draw(rng: &mut StdRng) -> Self {
        let n = rng.random_range(1..=4);
        TxnPlan {
            ops: (0..n).map(|_| OpPlan::draw(rng)).collect(),
            hold_before_end: rng
                .random_bool(0.1)
                .then(|| Duration::from_millis(rng.random_range(1..=20))),
            rollback: rng.random_bool(0.08),
        }
    }
}

/// What the controller does once the writers have finished a number of transactions.
#[derive(Clone, Debug)]
enum Event {
    /// Adds destination `dest`: at run time to the newest live instance, or by starting a
    /// new instance with every destination added so far. With `kill_while_copying`, that
    /// instance is killed this long after its snapshot is seen copying, and another
    /// started `restart_after` later.
    Add {
        dest: usize,
        at_run_time: bool,
        kill_while_copying: Option<Duration>,
        restart_after: Duration,
    },
    /// Kills a live instance (`pick` modulo their number), and starts another
    /// `restart_after` later, or two.
    Kill {
        pick: usize,
        restart_after: Duration,
        two: bool,
    },
    /// Copies both tables to destination `dest` again, through the instance shipping to
    /// it, while the writers go on (if it was added and some instance ships to it).
    Resync { dest: usize },
    /// Pauses destination `dest` for a while, then resumes it.
    Pause { dest: usize, lasting: Duration },
}

/// Replicator settings drawn from the seed.
#[derive(Clone, Debug)]
struct Settings {
    batch_size: u64,
    chunk_rows: [u64; 2],
    realtime: [bool; 2],
    poll: Duration,
    lease_ttl: Duration,
    retention_every: Duration,
    retention_step: i64,
    /// Destination connections a batch may apply through at once.
    apply_connections: usize,
}

#[derive(Clone, Debug)]
struct Plan {
    writers: Vec<Vec<TxnPlan>>,
    /// `(after this many writer transactions, event)`, in order.
    events: Vec<(u64, Event)>,
    settings: Settings,
}

impl Plan {
    fn draw(seed: u64, long: bool) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let per_writer = rng.random_range(200..=320) * if long { 4 } else { 1 };
        let total = (per_writer * WRITERS) as u64;
        let mut settings = Settings {
            batch_size: [3, 17, 64, 500][rng.random_range(0..4)],
            chunk_rows: [rng.random_range(2..=15), rng.random_range(2..=15)],
            realtime: [rng.random_bool(0.5), rng.random_bool(0.5)],
            poll: Duration::from_millis(rng.random_range(20..=60)),
            lease_ttl: Duration::from_millis(rng.random_range(300..=600)),
            retention_every: Duration::from_millis(rng.random_range(100..=400)),
            retention_step: [7, 100, 1000][rng.random_range(0..3)],
            apply_connections: 1,
        };
        let mut events = Vec::new();
        let first_at = rng.random_range(0..=total / 4);
        let second_at = rng.random_range(first_at..=total * 2 / 3);
        for (dest, at) in [first_at, second_at].into_iter().enumerate() {
            let event = Event::Add {
                dest,
                at_run_time: rng.random_bool(0.5),
                kill_while_copying: rng
                    .random_bool(0.5)
                    .then(|| Duration::from_millis(rng.random_range(0..=30))),
                restart_after: Duration::from_millis(rng.random_range(0..=300)),
            };
            events.push((at, event));
        }
        for _ in 0..rng.random_range(2..=4) * if long { 3 } else { 1 } {
            let event = Event::Kill {
                pick: rng.random_range(0..3),
                restart_after: Duration::from_millis(rng.random_range(0..=400)),
                two: rng.random_bool(0.25),
            };
            events.push((rng.random_range(first_at..=total * 9 / 10), event));
        }
        for _ in 0..rng.random_range(0..=2) * if long { 3 } else { 1 } {
            let event = Event::Resync {
                dest: rng.random_range(0..DESTINATIONS.len()),
            };
            events.push((rng.random_range(first_at..=total * 9 / 10), event));
        }
        if rng.random_bool(0.5) {
            let event = Event::Pause {
                dest: rng.random_range(0..DESTINATIONS.len()),
                lasting: Duration::from_millis(rng.random_range(50..=1500)),
            };
            events.push((rng.random_range(first_at..=total * 9 / 10), event));
        }
        events.sort_by_key(|(at, _)| *at);
        // Drawn last, so that a seed found before keeps drawing what it drew.
        settings.apply_connections = [1, 2, 3][rng.random_range(0..3)];
        let writers = (0..WRITERS)
            .map(|w| {
                let mut rng = StdRng::seed_from_u64(
                    seed ^ 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(w as u64 + 1),
                );
                (0..per_writer).map(|_| TxnPlan::draw(&mut rng)).collect()
            })
            .collect();
        Plan {
            writers,
            events,
            settings,
        }
    }

    fn transactions(&self) -> u64 {
        self.writers.iter().map(|w| w.len() as u64).sum()
    }
}

// ---- the writers -------------------------------------------------------------------------

fn customer(id: i64, label: &str, cents: i64) -> customers::ActiveModel {
    customers::ActiveModel {
        id: Set(id),
        name: Set(format!("{label} c{id}")),
        credit: Set(Decimal::new(cents, 2)),
        local_note: Set(Some(label.to_string())),
    }
}

fn order(id: i64, customer_id: i64, label: &str, qty: i64) -> orders::ActiveModel {
    orders::ActiveModel {
        id: Set(id),
        customer_id: Set(customer_id),
        item: Set(format!("{label} o{id}")),
        qty: Set((qty % 10_000) as i32),
    }
}

async fn find_customer(
    txn: &DatabaseTransaction,
    id: i64,
) -> Result<Option<customers::Model>, DbErr> {
    customers::Entity::find_by_id(id).one(txn).await
}

async fn find_order(txn: &DatabaseTransaction, id: i64) -> Result<Option<orders::Model>, DbErr> {
    orders::Entity::find_by_id(id).one(txn).await
}

async fn orders_of(txn: &DatabaseTransaction, customer: i64) -> Result<Vec<orders::Model>, DbErr> {
    orders::Entity::find()
        .filter(orders::Column::CustomerId.eq(customer))
        .all(txn)
        .await
}

/// Runs one planned operation in `txn`. Every write goes through the derived hooks or
/// `ormsync::bulk`.
async fn run_op(txn: &DatabaseTransaction, op: &OpPlan, label: &str) -> Result<(), DbErr> {
    match op.kind {
        Kind::InsertCustomer => insert_customer(txn, op, label).await,
        Kind::InsertOrder => insert_order(txn, op, label).await,
        Kind::UpdateCustomer => update_customer(txn, op, label).await,
        Kind::UpdateOrder => update_order(txn, op, label).await,
        Kind::UpdateSettingNothing => update_setting_nothing(txn, op).await,
        Kind::DeleteOrder => delete_order(txn, op).await,
        Kind::DeleteAndReinsertOrder => delete_and_reinsert_order(txn, op, label).await,
        Kind::RecreateCustomerWithOrders => recreate_customer_with_orders(txn, op, label).await,
        Kind::MoveOrder => move_order(txn, op, label).await,
        Kind::DeleteCustomerWithOrders => delete_customer_with_orders(txn, op).await,
        Kind::BulkInsertOrders => bulk_insert_orders(txn, op, label).await,
        Kind::BulkUpdate => bulk_update(txn, op, label).await,
        Kind::BulkDelete => bulk_delete(txn, op).await,
        Kind::HoldOpen => {
            tokio::time::sleep(op.hold).await;
            Ok(())
        }
    }
}

/// Mostly as an application would (look first, insert if absent); sometimes blindly.
async fn insert_customer(txn: &DatabaseTransaction, op: &OpPlan, label: &str) -> Result<(), DbErr> {
    let c = op.customer;
    if op.variant(3) != 0 && find_customer(txn, c).await?.is_some() {
        return Ok(());
    }
    customer(c, label, op.value).insert(txn).await?;
    Ok(())
}

async fn insert_order(txn: &DatabaseTransaction, op: &OpPlan, label: &str) -> Result<(), DbErr> {
    let o = op.order;
    if op.variant(3) != 0 && find_order(txn, o).await?.is_some() {
        return Ok(());
    }
    order(o, op.customer, label, op.value).insert(txn).await?;
    Ok(())
}

/// A model read and changed, saved with `update` or `save`; or by key alone, blindly
/// (`RecordNotUpdated` when the row is gone).
async fn update_customer(txn: &DatabaseTransaction, op: &OpPlan, label: &str) -> Result<(), DbErr> {
    let c = op.customer;
    let name = format!("{label} c{c}");
    match op.variant(4) {
        0 => {
            if let Some(m) = find_customer(txn, c).await? {
                let mut am = m.into_active_model();
                am.name = Set(name);
                am.credit = Set(Decimal::new(op.value, 2));
                am.update(txn).await?;
            }
        }
        1 => {
            if let Some(m) = find_customer(txn, c).await? {
                let mut am = m.into_active_model();
                am.name = Set(name);
                am.save(txn).await?;
            }
        }
        2 => {
            customers::ActiveModel {
                id: Unchanged(c),
                name: Set(name),
                ..Default::default()
            }
            .update(txn)
            .await?;
        }
        _ => {
            customers::ActiveModel {
                id: Set(c),
                credit: Set(Decimal::new(op.value, 2)),
                ..Default::default()
            }
            .save(txn)
            .await?;
        }
    }
    Ok(())
}

async fn update_order(txn: &DatabaseTransaction, op: &OpPlan, label: &str) -> Result<(), DbErr> {
    let o = op.order;
    let item = format!("{label} o{o}");
    let qty = (op.value % 10_000) as i32;
    match op.variant(4) {
        0 => {
            if let Some(m) = find_order(txn, o).await? {
                let mut am = m.into_active_model();
                am.qty = Set(qty);
                am.item = Set(item);
                am.update(txn).await?;
            }
        }
        1 => {
            if let Some(m) = find_order(txn, o).await? {
                let mut am = m.into_active_model();
                am.qty = Set(qty % 7);
                am.save(txn).await?;
            }
        }
        2 => {
            orders::ActiveModel {
                id: Unchanged(o),
                item: Set(item),
                ..Default::default()
            }
            .update(txn)
            .await?;
        }
        _ => {
            orders::ActiveModel {
                id: Set(o),
                qty: Set(qty),
                ..Default::default()
            }
            .save(txn)
            .await?;
        }
    }
    Ok(())
}

/// An update that sets no column, for which sea-orm runs no `UPDATE`: only the key,
/// `Unchanged`, or a model read back and saved as it is.
async fn update_setting_nothing(txn: &DatabaseTransaction, op: &OpPlan) -> Result<(), DbErr> {
    match op.variant(4) {
        0 => {
            customers::ActiveModel {
                id: Unchanged(op.customer),
                ..Default::default()
            }
            .update(txn)
            .await?;
        }
        1 => {
            orders::ActiveModel {
                id: Unchanged(op.order),
                ..Default::default()
            }
            .update(txn)
            .await?;
        }
        2 => {
            if let Some(m) = find_customer(txn, op.customer).await? {
                m.into_active_model().update(txn).await?;
            }
        }
        _ => {
            if let Some(m) = find_order(txn, op.order).await? {
                m.into_active_model().save(txn).await?;
            }
        }
    }
    Ok(())
}

/// `Model::delete`, an `ActiveModel` holding only the key, or the whole `ActiveModel`.
async fn delete_order(txn: &DatabaseTransaction, op: &OpPlan) -> Result<(), DbErr> {
    let o = op.order;
    match op.variant(3) {
        0 => {
            if let Some(m) = find_order(txn, o).await? {
                m.delete(txn).await?;
            }
        }
        1 => {
            orders::ActiveModel {
                id: Set(o),
                ..Default::default()
            }
            .delete(txn)
            .await?;
        }
        _ => {
            if let Some(m) = find_order(txn, o).await? {
                m.into_active_model().delete(txn).await?;
            }
        }
    }
    Ok(())
}

/// Deletes an order and inserts its key again in the same transaction, under its customer
/// or another.
async fn delete_and_reinsert_order(
    txn: &DatabaseTransaction,
    op: &OpPlan,
    label: &str,
) -> Result<(), DbErr> {
    let o = op.order;
    let found = find_order(txn, o).await?;
    let owner = match &found {
        Some(m) if op.variant(3) != 0 => m.customer_id,
        _ => op.customer,
    };
    match found {
        Some(m) if op.variant(2) == 0 => {
            m.delete(txn).await?;
        }
        _ => {
            orders::ActiveModel {
                id: Set(o),
                ..Default::default()
            }
            .delete(txn)
            .await?;
        }
    }
    order(o, owner, label, op.value).insert(txn).await?;
    Ok(())
}

/// Deletes a customer with its orders, creates it again, and gives it back some of them
/// (same keys, new values), all in one transaction.
async fn recreate_customer_with_orders(
    txn: &DatabaseTransaction,
    op: &OpPlan,
    label: &str,
) -> Result<(), DbErr> {
    let c = op.customer;
    let kids = orders_of(txn, c).await?;
    if op.variant(2) == 0 {
        ormsync::bulk::delete_many::<orders::Entity, _>(txn, orders::Column::CustomerId.eq(c))
            .await?;
    } else {
        for k in kids.iter().cloned() {
            k.delete(txn).await?;
        }
    }
    if op.variant(3) == 0 {
        customers::ActiveModel {
            id: Set(c),
            ..Default::default()
        }
        .delete(txn)
        .await?;
    } else if let Some(m) = find_customer(txn, c).await? {
        m.delete(txn).await?;
    }
    customer(c, label, op.value).insert(txn).await?;
    for k in kids.iter().take(op.orders.len()) {
        order(k.id, c, label, op.value + k.id).insert(txn).await?;
    }
    Ok(())
}

/// Moves an order to another customer (a foreign-key violation when that one is gone).
async fn move_order(txn: &DatabaseTransaction, op: &OpPlan, label: &str) -> Result<(), DbErr> {
    let o = op.order;
    match op.variant(3) {
        0 => {
            if let Some(m) = find_order(txn, o).await? {
                let mut am = m.into_active_model();
                am.customer_id = Set(op.other_customer);
                am.update(txn).await?;
            }
        }
        1 => {
            if let Some(m) = find_order(txn, o).await? {
                let mut am = m.into_active_model();
                am.customer_id = Set(op.other_customer);
                am.item = Set(format!("{label} o{o}"));
                am.save(txn).await?;
            }
        }
        _ => {
            ormsync::bulk::update_many::<orders::Entity, _>(
                txn,
                orders::Column::Id.eq(o),
                [(orders::Column::CustomerId, Expr::value(op.other_customer))],
            )
            .await?;
        }
    }
    Ok(())
}

async fn delete_customer_with_orders(txn: &DatabaseTransaction, op: &OpPlan) -> Result<(), DbErr> {
    let c = op.customer;
    if op.variant(2) == 0 {
        ormsync::bulk::delete_many::<orders::Entity, _>(txn, orders::Column::CustomerId.eq(c))
            .await?;
    } else {
        for k in orders_of(txn, c).await? {
            k.delete(txn).await?;
        }
    }
    if op.variant(3) == 0 {
        ormsync::bulk::delete_many::<customers::Entity, _>(txn, customers::Column::Id.eq(c))
            .await?;
    } else if let Some(m) = find_customer(txn, c).await? {
        m.delete(txn).await?;
    }
    Ok(())
}

/// Inserts up to three orders for a customer in one statement, the keys already taken
/// left out, or (sometimes) not.
async fn bulk_insert_orders(
    txn: &DatabaseTransaction,
    op: &OpPlan,
    label: &str,
) -> Result<(), DbErr> {
    let mut ids = op.orders.clone();
    ids.sort();
    ids.dedup();
    if op.variant(3) != 0 {
        let there: Vec<i64> = orders::Entity::find()
            .filter(orders::Column::Id.is_in(ids.clone()))
            .all(txn)
            .await?
            .iter()
            .map(|m| m.id)
            .collect();
        ids.retain(|id| !there.contains(id));
    }
    ormsync::bulk::insert_many::<orders::Entity, _>(
        txn,
        ids.iter()
            .map(|&id| order(id, op.customer, label, op.value + id)),
    )
    .await?;
    Ok(())
}

async fn bulk_update(txn: &DatabaseTransaction, op: &OpPlan, label: &str) -> Result<(), DbErr> {
    let c = op.customer;
    match op.variant(3) {
        0 => {
            ormsync::bulk::update_many::<orders::Entity, _>(
                txn,
                orders::Column::CustomerId.eq(c),
                [
                    (orders::Column::Qty, Expr::col(orders::Column::Qty).add(1)),
                    (orders::Column::Item, Expr::value(format!("{label} bulk"))),
                ],
            )
            .await?;
        }
        1 => {
            ormsync::bulk::update_many::<customers::Entity, _>(
                txn,
                customers::Column::Id.between(c, c + 2),
                [(
                    customers::Column::Name,
                    Expr::value(format!("{label} bulk")),
                )],
            )
            .await?;
        }
        _ => {
            ormsync::bulk::update_many::<orders::Entity, _>(
                txn,
                orders::Column::Id.is_in(op.orders.clone()),
                [(orders::Column::Item, Expr::value(format!("{label} bulk")))],
            )
            .await?;
        }
    }
    Ok(())
}

async fn bulk_delete(txn: &DatabaseTransaction, op: &OpPlan) -> Result<(), DbErr> {
    if op.variant(2) == 0 {
        ormsync::bulk::delete_many::<orders::Entity, _>(
            txn,
            orders::Column::Id.is_in(op.orders.clone()),
        )
        .await?;
    } else {
        // Refused by the foreign key while the customer has orders.
        ormsync::bulk::delete_many::<customers::Entity, _>(
            txn,
            customers::Column::Id.eq(op.customer),
        )
        .await?;
    }
    Ok(())
}

/// Why a database refused a writer's transaction for what other writers do at the same
/// time (the writer rolls back and goes on), or `None` for any other error.
fn refusal(e: &DbErr) -> Option<Refusal> {
    if matches!(e, DbErr::RecordNotUpdated | DbErr::RecordNotFound(_)) {
        return Some(Refusal::RowGone);
    }
    if ormsync::classify::classify(e) == ErrorKind::Transient {
        return Some(Refusal::Contention);
    }
    match e.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(_)) => Some(Refusal::Unique),
        Some(SqlErr::ForeignKeyConstraintViolation(_)) => Some(Refusal::ForeignKey),
        _ => None,
    }
}

#[derive(Clone, Copy, Debug)]
enum Refusal {
    /// Deadlock, serialization failure, lock timeout, busy SQLite.
    Contention,
    Unique,
    ForeignKey,
    /// `RecordNotUpdated`, `RecordNotFound`: the row went away.
    RowGone,
}

#[derive(Debug, Default)]
struct WriterReport {
    committed: u64,
    rolled_back: u64,
    /// By [`Refusal`], in its order.
    refused: [u64; 4],
    unexpected: Vec<String>,
}

/// Runs one planned transaction: `Ok(true)` committed, `Ok(false)` rolled back as planned.
async fn run_txn(db: &DatabaseConnection, plan: &TxnPlan, label: &str) -> Result<bool, DbErr> {
    let txn = db.begin().await?;
    for (i, op) in plan.ops.iter().enumerate() {
        if let Err(e) = run_op(&txn, op, &format!("{label}o{i}")).await {
            let _ = txn.rollback().await;
            return Err(e);
        }
    }
    if let Some(hold) = plan.hold_before_end {
        tokio::time::sleep(hold).await;
    }
    if plan.rollback {
        txn.rollback().await?;
        Ok(false)
    } else {
        txn.commit().await?;
        Ok(true)
    }
}

async fn writer(
    w: usize,
    db: DatabaseConnection,
    plan: Vec<TxnPlan>,
    done: Arc<AtomicU64>,
) -> WriterReport {
    let mut report = WriterReport::default();
    for (t, txn) in plan.iter().enumerate() {
        match run_txn(&db, txn, &format!("w{w}t{t}")).await {
            Ok(true) => report.committed += 1,
            Ok(false) => report.rolled_back += 1,
            Err(e) => match refusal(&e) {
                Some(why) => report.refused[why as usize] += 1,
                None => report.unexpected.push(format!("w{w}t{t}: {e}")),
            },
        }
        done.fetch_add(1, Ordering::SeqCst);
        // SQLite has one writer at a time: leave the replicators room to read.
        tokio::time::sleep(Duration::from_micros(300 * (t as u64 % 4))).await;
    }
    report
}

// ---- the source's outbox log -------------------------------------------------------------

/// A table and a trigger at `db` that copy every outbox row, in the transaction that
/// captures it, so oracle 3 replays every captured change even after retention.
async fn log_outbox(db: &DatabaseConnection) {
    let sql: &[&str] = match db.get_database_backend() {
        DbBackend::Postgres => &[
            "CREATE TABLE adv_outbox_log (id BIGINT NOT NULL, table_name TEXT NOT NULL, \
             op TEXT NOT NULL, pk TEXT NOT NULL, payload TEXT NOT NULL)",
            "CREATE FUNCTION adv_outbox_log_row() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN INSERT INTO adv_outbox_log VALUES (NEW.id, NEW.table_name, NEW.op, NEW.pk, NEW.payload); \
             RETURN NULL; END $$",
            "CREATE TRIGGER adv_outbox_log AFTER INSERT ON ormsync_outbox \
             FOR EACH ROW EXECUTE FUNCTION adv_outbox_log_row()",
        ],
        DbBackend::MySql => &[
            "CREATE TABLE adv_outbox_log (id BIGINT NOT NULL, table_name VARCHAR(255) NOT NULL, \
             op CHAR(1) NOT NULL, pk LONGTEXT NOT NULL, payload LONGTEXT NOT NULL) ENGINE=InnoDB",
            "CREATE TRIGGER adv_outbox_log AFTER INSERT ON ormsync_outbox FOR EACH ROW \
             INSERT INTO adv_outbox_log VALUES (NEW.id, NEW.table_name, NEW.op, NEW.pk, NEW.payload)",
        ],
        _ => &[
            "CREATE TABLE adv_outbox_log (id INTEGER NOT NULL, table_name TEXT NOT NULL, \
             op TEXT NOT NULL, pk TEXT NOT NULL, payload TEXT NOT NULL)",
            "CREATE TRIGGER adv_outbox_log AFTER INSERT ON ormsync_outbox BEGIN \
             INSERT INTO adv_outbox_log VALUES (NEW.id, NEW.table_name, NEW.op, NEW.pk, NEW.payload); END",
        ],
    };
    for s in sql {
        db.execute_unprepared(s)
            .await
            .unwrap_or_else(|e| panic!("{s}: {e}"));
    }
}

/// One captured change, as the log holds it.
struct Logged {
    id: i64,
    op: Op,
    key: Row,
    row: Row,
}

async fn read_log(db: &DatabaseConnection) -> BTreeMap<(String, String), Vec<Logged>> {
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT id, table_name, op, pk, payload FROM adv_outbox_log ORDER BY id",
        ))
        .await
        .expect("read the outbox log");
    let mut by_key: BTreeMap<(String, String), Vec<Logged>> = BTreeMap::new();
    for r in rows {
        let get = |c: &str| r.try_get::<String>("", c).expect(c);
        let (table, op) = (get("table_name"), get("op"));
        let logged = Logged {
            id: r.try_get::<i64>("", "id").expect("id"),
            op: Op::from_code(&op).unwrap_or_else(|| panic!("op {op:?}")),
            key: Row::from_json(&get("pk")).expect("pk"),
            row: Row::from_json(&get("payload")).expect("payload"),
        };
        by_key
            .entry((table, format!("{:?}", logged.key.0)))
            .or_default()
            .push(logged);
    }
    by_key
}

/// Oracle 3 for `E`: per key, the logged changes replayed in id order against the source's
/// final rows. One line per key that differs, with its last changes.
async fn replay_differences<E>(
    source: &DatabaseConnection,
    log: &BTreeMap<(String, String), Vec<Logged>>,
) -> Vec<String>
where
    E: Replicated,
    E::Model: Sync,
{
    let table = E::table_spec().table;
    let actual: BTreeMap<String, Row> = rows_of::<E>(source)
        .await
        .into_iter()
        .map(|r| (format!("{:?}", key_of_row::<E>(&r).0), r))
        .collect();
    let mut replayed: BTreeMap<&str, (Option<&Row>, &[Logged])> = BTreeMap::new();
    for ((t, key), changes) in log {
        if *t != table {
            continue;
        }
        let last = changes.last().expect("a change");
        let row = (last.op != Op::Delete).then_some(&last.row);
        replayed.insert(key, (row, changes));
    }
    let mut out = Vec::new();
    let mut keys: Vec<&str> = actual.keys().map(String::as_str).collect();
    keys.extend(
        replayed
            .keys()
            .copied()
            .filter(|k| !actual.contains_key(*k)),
    );
    for key in keys {
        let (want, changes) = replayed.get(key).copied().unwrap_or((None, &[]));
        let have = actual.get(key);
        if want == have {
            continue;
        }
        let verdict = match (want, have) {
            (Some(_), None) => "the replay has a row the source lacks",
            (None, Some(_)) => "the source has a row the replay lacks",
            _ => "the replay's row differs from the source's",
        };
        let history: Vec<String> = changes
            .iter()
            .rev()
            .take(6)
            .rev()
            .map(|c| format!("#{} {} {:?}", c.id, c.op.code(), c.row.0))
            .collect();
        out.push(format!(
            "`{table}` {key}: {verdict}\n    source: {have:?}\n    last changes: {}",
            history.join("\n                  ")
        ));
    }
    out
}

// ---- the replicators ---------------------------------------------------------------------

struct Instance {
    name: String,
    rep: Replicator,
    dests: Vec<usize>,
}

/// The replicator instances of one round, and what happened to them.
struct Fleet<'a> {
    source: &'a TestDb,
    dests: &'a [TestDb],
    settings: Settings,
    added: Vec<usize>,
    live: Vec<Instance>,
    started: usize,
    alerts: Arc<Mutex<Vec<(String, Alert)>>>,
    journal: Vec<String>,
    kills_while_copying: usize,
}

impl Fleet<'_> {
    async fn destination(&self, i: usize) -> Destination {
        let d = Destination::new(DESTINATIONS[i], self.dests[i].connect().await)
            .create_tables()
            .snapshot_chunk_rows(self.settings.chunk_rows[i])
            .apply_connections(self.settings.apply_connections);
        if self.settings.realtime[i] {
            d.realtime()
        } else {
            d
        }
    }

    /// A replicator named `name` shipping to every destination added so far.
    async fn builder(&self, name: &str) -> ormsync::ReplicatorBuilder {
        let s = &self.settings;
        let alerts = self.alerts.clone();
        let who = name.to_string();
        let mut b = Replicator::builder(self.source.connect().await)
            .entity::<customers::Entity>()
            .entity::<orders::Entity>()
            .instance_id(name)
            .poll_interval(s.poll)
            .retry_delays(Duration::from_millis(10), Duration::from_millis(200))
            .lease_ttl(s.lease_ttl)
            .batch_size(s.batch_size)
            .retention(
                RetentionPolicy::default()
                    .every(s.retention_every)
                    .step(s.retention_step),
            )
            .on_alert(move |a| alerts.lock().unwrap().push((who.clone(), a.clone())));
        for &i in &self.added {
            b = b.destination(self.destination(i).await);
        }
        b
    }

    /// Starts an instance shipping to every destination added so far.
    async fn start(&mut self) -> Result<(), String> {
        if self.added.is_empty() {
            return Ok(());
        }
        // As many instances run as there are copies of the application; keep it to three.
        while self.live.len() >= 3 {
            let oldest = self.live.remove(0);
            self.journal
                .push(format!("  shut down {} to make room", oldest.name));
            oldest.rep.shutdown().await;
        }
        let name = format!("adv-{}", self.started);
        self.started += 1;
        let mut attempts = 0;
        let rep = loop {
            match self.builder(&name).await.start().await {
                Ok(rep) => break rep,
                // A busy source (SQLite, say) fails the start as it would fail any write:
                // the application tries again.
                Err(e) if e.is_transient() && attempts < 20 => attempts += 1,
                Err(e) => return Err(format!("starting {name}: {e}")),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        self.journal.push(format!(
            "  started {name} for {:?}",
            self.added
                .iter()
                .map(|&i| DESTINATIONS[i])
                .collect::<Vec<_>>()
        ));
        self.live.push(Instance {
            name,
            rep,
            dests: self.added.clone(),
        });
        Ok(())
    }

    async fn kill(&mut self, i: usize) {
        let gone = self.live.remove(i);
        let copying: Vec<&str> = gone
            .rep
            .status()
            .destinations
            .iter()
            .filter(|d| d.state == State::Copying)
            .map(|d| {
                DESTINATIONS
                    .iter()
                    .find(|n| **n == d.name)
                    .copied()
                    .unwrap_or("?")
            })
            .collect();
        if !copying.is_empty() {
            self.kills_while_copying += 1;
        }
        gone.rep.abort().await;
        self.journal
            .push(format!("  killed {} (copying: {copying:?})", gone.name));
    }

    async fn apply(&mut self, event: &Event) -> Result<(), String> {
        match *event {
            Event::Add {
                dest,
                at_run_time,
                kill_while_copying,
                restart_after,
            } => {
                self.added.push(dest);
                let name = DESTINATIONS[dest];
                if at_run_time && !self.live.is_empty() {
                    let mut attempts = 0;
                    loop {
                        let destination = self.destination(dest).await;
                        let newest = self.live.last().expect("a live instance");
                        match newest.rep.add_destination(destination).await {
                            Ok(()) => break,
                            Err(e) if e.is_transient() && attempts < 20 => attempts += 1,
                            Err(e) => return Err(format!("adding `{name}`: {e}")),
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    let newest = self.live.last_mut().expect("a live instance");
                    newest.dests.push(dest);
                    let line = format!("  added `{name}` at run time to {}", newest.name);
                    self.journal.push(line);
                } else {
                    self.start().await?;
                }
                if let Some(delay) = kill_while_copying {
                    let i = self.live.len() - 1;
                    let began = Instant::now();
                    while began.elapsed() < Duration::from_secs(3) {
                        let st = self.live[i].rep.status();
                        if st
                            .destinations
                            .iter()
                            .any(|d| d.name == name && d.state == State::Copying)
                        {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    tokio::time::sleep(delay).await;
                    self.kill(i).await;
                    tokio::time::sleep(restart_after).await;
                    self.start().await?;
                }
            }
            Event::Kill {
                pick,
                restart_after,
                two,
            } => {
                if !self.live.is_empty() {
                    let i = pick % self.live.len();
                    self.kill(i).await;
                }
                tokio::time::sleep(restart_after).await;
                self.start().await?;
                if two {
                    self.start().await?;
                }
            }
            Event::Resync { dest } => {
                let name = DESTINATIONS[dest];
                let Some(i) = self.shipping(dest) else {
                    self.journal
                        .push(format!("  no instance ships to `{name}`: no resync"));
                    return Ok(());
                };
                let tables = [
                    customers::Entity::table_spec().table,
                    orders::Entity::table_spec().table,
                ];
                let tables: Vec<&str> = tables.iter().map(String::as_str).collect();
                let resync = self.live[i].rep.resync(name, &tables);
                let outcome = match tokio::time::timeout(Duration::from_secs(120), resync).await {
                    Ok(Ok(())) => "done".to_string(),
                    // Lost the lease meanwhile, or a busy or deadlocked chunk: the
                    // application would try again later.
                    Ok(Err(e)) if e.is_transient() => format!("failed for now: {e}"),
                    Ok(Err(e)) => return Err(format!("resync of `{name}`: {e}")),
                    Err(_) => return Err(format!("resync of `{name}` not done within 120 s")),
                };
                let line = format!("  resync of `{name}` at {}: {outcome}", self.live[i].name);
                self.journal.push(line);
            }
            Event::Pause { dest, lasting } => {
                let name = DESTINATIONS[dest];
                let Some(i) = self
                    .live
                    .iter()
                    .rposition(|inst| inst.dests.contains(&dest))
                else {
                    return Ok(());
                };
                let rep = &self.live[i].rep;
                rep.pause(name)
                    .await
                    .map_err(|e| format!("pausing `{name}`: {e}"))?;
                tokio::time::sleep(lasting).await;
                rep.resume(name)
                    .await
                    .map_err(|e| format!("resuming `{name}`: {e}"))?;
                let line = format!("  paused `{name}` at {}", self.live[i].name);
                self.journal.push(line);
            }
        }
        Ok(())
    }

    /// The live instance shipping to destination `dest` (holding its lease), if any.
    fn shipping(&self, dest: usize) -> Option<usize> {
        self.live.iter().position(|inst| {
            inst.rep.status().destinations.iter().any(|d| {
                d.name == DESTINATIONS[dest]
                    && matches!(
                        d.state,
                        State::Running | State::Idle | State::Retrying | State::Copying
                    )
            })
        })
    }

    /// A live instance that ships to every destination, started if there is none.
    async fn complete(&mut self) -> Result<usize, String> {
        let all = |inst: &Instance| self.added.iter().all(|d| inst.dests.contains(d));
        if let Some(i) = self.live.iter().rposition(all) {
            return Ok(i);
        }
        self.start().await?;
        Ok(self.live.len() - 1)
    }
}

/// Returns once some instance reports `name` halted.
async fn halted(live: &[Instance], name: &str) {
    loop {
        if live.iter().any(|i| {
            i.rep
                .status()
                .destinations
                .iter()
                .any(|d| d.name == name && d.state == State::Halted)
        }) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the log says of the change a halt names (`destination `x`: change 123 to …`): the
/// changes logged just before it, every change of its key, and, for a customer, the orders
/// the destination holds that reference it, each with its changes.
async fn explain(
    error: &str,
    log: &BTreeMap<(String, String), Vec<Logged>>,
    dests: &[TestDb],
) -> Option<String> {
    let id: i64 = error
        .split("change ")
        .nth(1)?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    let line = |c: &Logged| format!("#{} {} {:?}", c.id, c.op.code(), c.row.0);
    let ((table, key), changes) = log
        .iter()
        .find(|(_, changes)| changes.iter().any(|c| c.id == id))?;
    let mut out = format!("  change {id} is of `{table}` {key}, whose changes are:");
    for c in changes {
        let mark = if c.id == id { " <- refused" } else { "" };
        out += &format!("\n    {}{mark}", line(c));
    }
    let mut before: Vec<&Logged> = log.values().flatten().filter(|c| c.id < id).collect();
    before.sort_by_key(|c| c.id);
    out += "\n  the changes logged just before it:";
    for c in before.iter().rev().take(8).rev() {
        out += &format!("\n    `{}` {}", log_table(log, c.id), line(c));
    }
    let dest = error.split("destination `").nth(1)?.split('`').next()?;
    let at = &dests[DESTINATIONS.iter().position(|d| *d == dest)?].db;
    if *table == customers::Entity::table_spec().table
        && let Some(Value::BigInt(Some(customer))) = changes[0].key.get("id")
        && let Ok(referencing) = orders::Entity::find()
            .filter(orders::Column::CustomerId.eq(*customer))
            .all(at)
            .await
    {
        out += &format!("\n  orders at `{dest}` referencing customer {customer}:");
        for o in referencing {
            out += &format!("\n    {o:?}, whose changes are:");
            let key = format!("{:?}", orders::Entity::key_of(&o).ok()?.0);
            for c in log.get(&(orders::Entity::table_spec().table, key))? {
                out += &format!("\n      {}", line(c));
            }
        }
    }
    Some(out)
}

/// The table of the logged change `id`.
fn log_table(log: &BTreeMap<(String, String), Vec<Logged>>, id: i64) -> &str {
    log.iter()
        .find(|(_, changes)| changes.iter().any(|c| c.id == id))
        .map(|((table, _), _)| table.as_str())
        .unwrap_or("?")
}

/// What the source keeps of the replication, for a failure's report.
const SOURCE_STATE: &[&str] = &[
    "SELECT destination, watermark, frontier FROM ormsync_progress ORDER BY destination",
    "SELECT COUNT(*) AS outbox_rows, MIN(id) AS first_id, MAX(id) AS last_id FROM ormsync_outbox",
    "SELECT destination, holder, generation FROM ormsync_leases ORDER BY destination",
];

/// What a destination keeps of the replication, for a failure's report.
const DESTINATION_STATE: &[&str] = &[
    "SELECT watermark, applied, fence FROM ormsync_checkpoint",
    "SELECT table_name, done, copied, deferred, last_key FROM ormsync_snapshot ORDER BY table_name",
    "SELECT base FROM ormsync_snapshot_base",
];

/// The rows `queries` return at `db`, one line each, every column as text.
async fn ormsync_state(db: &DatabaseConnection, queries: &[&str]) -> String {
    let mut out = Vec::new();
    for q in queries {
        let rows = match db
            .query_all_raw(Statement::from_string(db.get_database_backend(), *q))
            .await
        {
            Ok(rows) => rows,
            Err(e) => {
                out.push(format!("  {q}: {e}"));
                continue;
            }
        };
        for r in rows {
            let cells: Vec<String> = r
                .column_names()
                .iter()
                .map(|c| {
                    let v = r
                        .try_get::<Option<i64>>("", c)
                        .map(|v| format!("{v:?}"))
                        .or_else(|_| r.try_get::<Option<i32>>("", c).map(|v| format!("{v:?}")))
                        .or_else(|_| r.try_get::<Option<String>>("", c).map(|v| format!("{v:?}")))
                        .unwrap_or_else(|_| "?".into());
                    format!("{c}={v}")
                })
                .collect();
            out.push(format!("  {}", cells.join(" ")));
        }
    }
    out.join("\n")
}

// ---- one round ---------------------------------------------------------------------------

async fn hostile_histories(src: Backend, dst: Backend) {
    common::trace();
    let soak = soak();
    let first = common::seed();
    let began = Instant::now();
    for round in 0u64.. {
        let seed = first.wrapping_add(round);
        if !round_of(src, dst, seed, soak.is_some()).await {
            return;
        }
        match soak {
            Some(limit) if began.elapsed() < limit => continue,
            _ => break,
        }
    }
}

/// One round with `seed`; `false` when a server is unreachable and the test skips.
async fn round_of(src: Backend, dst: Backend, seed: u64, long: bool) -> bool {
    let pair = format!("{}→{}", src.name(), dst.name());
    eprintln!("adversarial seed = {seed} ({pair})");
    let began = Instant::now();
    let Some(s) = TestDb::create(src).await else {
        return false;
    };
    let mut dests = Vec::new();
    for _ in DESTINATIONS {
        let Some(d) = TestDb::create(dst).await else {
            return false;
        };
        dests.push(d);
    }
    for ddl in fk_ddl(s.db.get_database_backend()) {
        s.db.execute_unprepared(&ddl).await.expect("create table");
    }
    ormsync::install(&s.db).await.expect("install");
    log_outbox(&s.db).await;

    let plan = Plan::draw(seed, long);
    let mut fleet = Fleet {
        source: &s,
        dests: &dests,
        settings: plan.settings.clone(),
        added: Vec::new(),
        live: Vec::new(),
        started: 0,
        alerts: Arc::default(),
        journal: Vec::new(),
        kills_while_copying: 0,
    };
    let mut failures = Vec::new();
    let report = write_and_control(&s, &plan, &mut fleet, &mut failures).await;
    let written = began.elapsed();
    catch_up(&mut fleet, long, &mut failures).await;
    let drained = began.elapsed();

    failures.extend(no_halt(&fleet));
    let log = read_log(&s.db).await;
    failures.extend(same_rows(&s.db, &dests, &fleet.added, &log).await);
    failures.extend(replay_equals_source(&s.db, &log).await);
    if !report.unexpected.is_empty() {
        failures.push(format!(
            "writers: {} errors a database does not raise for concurrency alone, first: {:?}",
            report.unexpected.len(),
            report.unexpected.iter().take(3).collect::<Vec<_>>()
        ));
    }
    let mut halts = BTreeSet::new();
    for f in failures.iter().filter(|f| f.starts_with("oracle 2")) {
        halts.extend(explain(f, &log, &dests).await);
    }
    failures.extend(halts);

    let captured: usize = log.values().map(Vec::len).sum();
    let kept = common::count(&s.db, "ormsync_outbox").await;
    let [contention, unique, foreign_key, gone] = report.refused;
    let summary = format!(
        "{pair}: {} transactions ({} committed, {} rolled back, refused by the database: \
         {contention} contention, {unique} unique key, {foreign_key} foreign key, {gone} row gone), \
         {captured} changes captured ({kept} left in the outbox by retention), \
         {} instances started, {} kills while copying; writes {:.1}s, drained {:.1}s",
        plan.transactions(),
        report.committed,
        report.rolled_back,
        fleet.started,
        fleet.kills_while_copying,
        written.as_secs_f64(),
        drained.as_secs_f64(),
    );
    eprintln!("{summary}");
    let status: Vec<String> = fleet
        .live
        .iter()
        .map(|i| format!("{}:\n{}", i.name, i.rep.status()))
        .collect();
    for inst in fleet.live.drain(..) {
        inst.rep.shutdown().await;
    }
    if !failures.is_empty() {
        let mut state = vec![format!(
            "source:\n{}",
            ormsync_state(&s.db, SOURCE_STATE).await
        )];
        for &d in &fleet.added {
            let at = ormsync_state(&dests[d].db, DESTINATION_STATE).await;
            state.push(format!("destination `{}`:\n{at}", DESTINATIONS[d]));
        }
        failures.push(format!("\nreplication state:\n{}", state.join("\n")));
        panic!(
            "adversarial seed = {seed} ({pair}) failed; replay with ORMSYNC_SEED={seed}{}\n{}\n\n\
             {summary}\nsettings: {:?}\nevents:\n{}\nstatus:\n{}",
            if long { " ORMSYNC_SOAK_SECS=1" } else { "" },
            failures.join("\n"),
            plan.settings,
            fleet.journal.join("\n"),
            status.join("\n"),
        );
    }
    true
}

/// Runs the writers' plans and, meanwhile, the replicator events, each once the writers
/// have finished its number of transactions. Returns what the writers met.
async fn write_and_control(
    s: &TestDb,
    plan: &Plan,
    fleet: &mut Fleet<'_>,
    failures: &mut Vec<String>,
) -> WriterReport {
    let done = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for (w, txns) in plan.writers.iter().enumerate() {
        let db = s.connect().await;
        writers.push(tokio::spawn(writer(w, db, txns.clone(), done.clone())));
    }
    for (at, event) in &plan.events {
        while done.load(Ordering::SeqCst) < *at {
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        fleet.journal.push(format!(
            "after {} transactions: {event:?}",
            done.load(Ordering::SeqCst)
        ));
        if let Err(e) = fleet.apply(event).await {
            failures.push(format!("replicator control: {e}"));
        }
    }
    let mut report = WriterReport::default();
    for h in writers {
        let r = h.await.expect("writer");
        report.committed += r.committed;
        report.rolled_back += r.rolled_back;
        for (sum, n) in report.refused.iter_mut().zip(r.refused) {
            *sum += n;
        }
        report.unexpected.extend(r.unexpected);
    }
    report
}

/// Drains every destination through an instance that ships to all of them.
async fn catch_up(fleet: &mut Fleet<'_>, long: bool, failures: &mut Vec<String>) {
    let limit = Duration::from_secs(if long { 600 } else { 120 });
    let i = match fleet.complete().await {
        Ok(i) => i,
        Err(e) => return failures.push(format!("replicator control: {e}")),
    };
    for &d in &fleet.added {
        let name = DESTINATIONS[d];
        let drain = fleet.live[i].rep.drain(name);
        tokio::select! {
            r = tokio::time::timeout(limit, drain) => match r {
                Ok(Ok(())) => {}
                // A halt is reported by `no_halt`.
                Ok(Err(ormsync::Error::Halted { .. })) => {}
                Ok(Err(e)) => failures.push(format!("oracle 2 (no halt): draining `{name}`: {e}")),
                Err(_) => failures.push(format!(
                    "oracle 2 (no halt): `{name}` not drained within {limit:?}"
                )),
            },
            // The instance draining may stand by while another one holds the lease: that
            // one's halt shows in its status (and `no_halt` reports it).
            () = halted(&fleet.live, name) => {}
        }
    }
}

/// Oracle 2: no destination is halted at any live instance, and no instance, killed ones
/// included, ever alerted a halt. One line per destination and error, naming the instances.
fn no_halt(fleet: &Fleet<'_>) -> Vec<String> {
    let mut halts: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for inst in &fleet.live {
        for d in inst.rep.status().destinations {
            if d.state == State::Halted {
                let error = d.last_error.unwrap_or_else(|| "no error recorded".into());
                halts
                    .entry((d.name, error))
                    .or_default()
                    .insert(format!("{} (halted now)", inst.name));
            }
        }
    }
    for (who, a) in fleet.alerts.lock().unwrap().iter() {
        if a.kind == AlertKind::Halted {
            let error = a
                .error
                .clone()
                .unwrap_or_else(|| "no error recorded".into());
            halts
                .entry((a.destination.clone(), error))
                .or_default()
                .insert(format!("{who} (alerted)"));
        }
    }
    halts
        .into_iter()
        .map(|((dest, error), seen)| {
            let seen: Vec<String> = seen.into_iter().collect();
            format!(
                "oracle 2 (no halt): `{dest}` halted, at {}: {error}",
                seen.join(", ")
            )
        })
        .collect()
}

/// Oracle 1: every destination holds the source's rows, row by row. Each key that differs
/// comes with its last logged changes.
async fn same_rows(
    source: &DatabaseConnection,
    dests: &[TestDb],
    added: &[usize],
    log: &BTreeMap<(String, String), Vec<Logged>>,
) -> Vec<String> {
    let history = |table: String| {
        move |key: &str| {
            let Some(changes) = log.get(&(table.clone(), key.to_string())) else {
                return "\n      never captured".to_string();
            };
            let lines: Vec<String> = changes
                .iter()
                .rev()
                .take(6)
                .rev()
                .map(|c| format!("\n      #{} {} {:?}", c.id, c.op.code(), c.row.0))
                .collect();
            lines.concat()
        }
    };
    let mut out = Vec::new();
    for &d in added {
        let dest = &dests[d].db;
        let customers_note = history(customers::Entity::table_spec().table);
        let orders_note = history(orders::Entity::table_spec().table);
        for diff in [
            differences_noted::<customers::Entity>(source, dest, &customers_note).await,
            differences_noted::<orders::Entity>(source, dest, &orders_note).await,
        ]
        .into_iter()
        .flatten()
        {
            out.push(format!(
                "oracle 1 (destination `{}` = source): {diff}",
                DESTINATIONS[d]
            ));
        }
    }
    out
}

/// Oracle 3: replaying the captured changes gives the source's rows.
async fn replay_equals_source(
    source: &DatabaseConnection,
    log: &BTreeMap<(String, String), Vec<Logged>>,
) -> Vec<String> {
    const LISTED: usize = 8;
    let mut keys = replay_differences::<customers::Entity>(source, log).await;
    keys.extend(replay_differences::<orders::Entity>(source, log).await);
    let n = keys.len();
    let mut out: Vec<String> = keys
        .into_iter()
        .take(LISTED)
        .map(|k| format!("oracle 3 (replay = source): {k}"))
        .collect();
    if n > LISTED {
        out.push(format!(
            "oracle 3 (replay = source): … {} more keys",
            n - LISTED
        ));
    }
    out
}

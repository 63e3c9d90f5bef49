//! The opt-in guard (`ormsync::guard`) on SQLite, PostgreSQL and MariaDB: captured writes
//! (the derived hooks and `ormsync::bulk`) commit through it; sea-orm's plain bulk writes to
//! a replicated table are refused at commit and rolled back, also beside a captured write of
//! the same table, inside the closure API, and on the pool before they run; a savepoint
//! rolled back takes its writes with it; warn mode lets the write commit.

mod common;

use common::entities::{account, accounts, line, line_items};
use common::{Backend, TestDb, count};
use ormsync::bulk;
use ormsync::guard::{GuardMode, GuardedConnection};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, Set,
    TransactionError, TransactionTrait,
};

macro_rules! on_every_backend {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() { super::$scenario(Backend::Sqlite).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() { super::$scenario(Backend::Postgres).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn mariadb() { super::$scenario(Backend::MySql).await }
        }
    )*};
}

on_every_backend!(
    captured_writes_pass_and_plain_bulk_writes_are_refused,
    savepoints_pool_writes_and_warn_mode,
);

async fn setup(backend: Backend) -> Option<(TestDb, GuardedConnection)> {
    let db = TestDb::create(backend).await?;
    db.create_tables().await;
    ormsync::install(&db.db).await.expect("install");
    let guarded = GuardedConnection::new(db.db.clone()).entity::<accounts::Entity>();
    Some((db, guarded))
}

/// The accounts as (id, name), in key order.
async fn names<C: ConnectionTrait>(db: &C) -> Vec<(i64, String)> {
    accounts::Entity::find()
        .all(db)
        .await
        .expect("read accounts")
        .into_iter()
        .map(|a| (a.id, a.name))
        .collect()
}

fn refused(e: &DbErr, table: &str, kind: &str) {
    let msg = e.to_string();
    assert!(
        msg.contains("guard refused")
            && msg.contains(&format!("`{table}`"))
            && msg.contains(kind)
            && msg.contains("ormsync::bulk"),
        "not the guard's refusal naming {table} ({kind}): {msg}"
    );
}

async fn captured_writes_pass_and_plain_bulk_writes_are_refused(backend: Backend) {
    let Some((db, guarded)) = setup(backend).await else {
        return;
    };

    // Every captured path, and a plain write of a table the guard does not watch.
    let txn = guarded.begin().await.unwrap();
    account(1, "ada", "1").insert(&txn).await.unwrap();
    account(2, "bob", "2").insert(&txn).await.unwrap();
    bulk::insert_many::<accounts::Entity, _>(&txn, [account(3, "cy", "3"), account(4, "di", "4")])
        .await
        .unwrap();
    let mut ada: accounts::ActiveModel = account(1, "ada", "1");
    ada.name = Set("ada lovelace".into());
    ada.update(&txn).await.unwrap();
    bulk::update_many::<accounts::Entity, _>(
        &txn,
        accounts::Column::Id.eq(3),
        [(accounts::Column::Name, Expr::value("cyd"))],
    )
    .await
    .unwrap();
    bulk::delete_many::<accounts::Entity, _>(&txn, accounts::Column::Id.eq(4))
        .await
        .unwrap();
    account(2, "bob", "2").delete(&txn).await.unwrap();
    line_items::Entity::insert_many([line(1, 1, 1), line(1, 2, 2)])
        .exec(&txn)
        .await
        .unwrap();
    txn.commit().await.expect("every write was captured");
    let committed = vec![(1, "ada lovelace".to_string()), (3, "cyd".to_string())];
    assert_eq!(names(&db.db).await, committed);
    assert_eq!(count(&db.db, "line_items").await, 2);
    let outbox = count(&db.db, "ormsync_outbox").await;
    assert_eq!(outbox, 8, "one outbox row per captured change");

    // A plain bulk update: refused at commit, and rolled back.
    let txn = guarded.begin().await.unwrap();
    let changed = accounts::Entity::update_many()
        .col_expr(accounts::Column::Name, Expr::value("x"))
        .exec(&txn)
        .await
        .unwrap();
    assert_eq!(changed.rows_affected, 2);
    let err = txn
        .commit()
        .await
        .expect_err("a plain update_many is refused");
    refused(&err, "accounts", "1 update");
    assert!(err.to_string().contains("rolled back"), "{err}");
    assert_eq!(names(&db.db).await, committed, "rolled back");

    // Beside a captured write of the same table, a plain delete is still caught.
    let txn = guarded.begin().await.unwrap();
    accounts::Entity::delete_by_id(3).exec(&txn).await.unwrap();
    account(5, "eve", "5").insert(&txn).await.unwrap();
    let err = txn.commit().await.expect_err("the plain delete is refused");
    refused(&err, "accounts", "1 delete");
    assert_eq!(
        names(&db.db).await,
        committed,
        "neither the delete nor the insert"
    );

    // A plain insert_many, through the closure API.
    let result = guarded
        .transaction::<_, (), DbErr>(|txn| {
            Box::pin(async move {
                accounts::Entity::insert_many([account(6, "fay", "6"), account(7, "gus", "7")])
                    .exec(txn)
                    .await?;
                Ok(())
            })
        })
        .await;
    match result {
        Err(TransactionError::Connection(err)) => refused(&err, "accounts", "1 insert"),
        other => panic!("a plain insert_many must be refused at commit: {other:?}"),
    }

    // sea-orm's `update_without_returning` runs `before_save` but not `after_save`, where
    // the capture happens: refused like a plain bulk write.
    let txn = guarded.begin().await.unwrap();
    account(3, "cy", "3")
        .update_without_returning(&txn)
        .await
        .unwrap();
    let err = txn
        .commit()
        .await
        .expect_err("an update without returning is refused");
    refused(&err, "accounts", "1 update");

    // A plain update that matched nothing changed nothing: it commits.
    let txn = guarded.begin().await.unwrap();
    accounts::Entity::update_many()
        .col_expr(accounts::Column::Name, Expr::value("x"))
        .filter(accounts::Column::Id.eq(999))
        .exec(&txn)
        .await
        .unwrap();
    txn.commit().await.expect("nothing was changed");

    assert_eq!(names(&db.db).await, committed);
    assert_eq!(
        count(&db.db, "ormsync_outbox").await,
        outbox,
        "nothing refused left an outbox row"
    );
}

async fn savepoints_pool_writes_and_warn_mode(backend: Backend) {
    let Some((db, guarded)) = setup(backend).await else {
        return;
    };
    let txn = guarded.begin().await.unwrap();
    account(1, "ada", "1").insert(&txn).await.unwrap();
    account(2, "bob", "2").insert(&txn).await.unwrap();
    txn.commit().await.unwrap();

    // A savepoint that wrote without capture and was rolled back leaves nothing to refuse.
    let txn = guarded.begin().await.unwrap();
    let savepoint = txn.begin().await.unwrap();
    accounts::Entity::delete_by_id(1)
        .exec(&savepoint)
        .await
        .unwrap();
    savepoint.rollback().await.unwrap();
    account(3, "cy", "3").insert(&txn).await.unwrap();
    txn.commit()
        .await
        .expect("the plain delete was rolled back");
    // One that is committed is refused, and only it is rolled back.
    let txn = guarded.begin().await.unwrap();
    let savepoint = txn.begin().await.unwrap();
    accounts::Entity::delete_by_id(1)
        .exec(&savepoint)
        .await
        .unwrap();
    refused(
        &savepoint.commit().await.unwrap_err(),
        "accounts",
        "1 delete",
    );
    account(4, "di", "4").insert(&txn).await.unwrap();
    txn.commit().await.unwrap();
    let kept: Vec<(i64, String)> = [(1, "ada"), (2, "bob"), (3, "cy"), (4, "di")]
        .into_iter()
        .map(|(id, name)| (id, name.to_string()))
        .collect();
    assert_eq!(names(&db.db).await, kept);

    // On the pool, a plain write is refused before it runs, and a captured one as always.
    let err = accounts::Entity::delete_many()
        .exec(&guarded)
        .await
        .expect_err("refused on the pool");
    refused(&err, "accounts", "delete");
    assert!(err.to_string().contains("did not run"), "{err}");
    let err = account(9, "zed", "9")
        .insert(&guarded)
        .await
        .expect_err("a captured write outside a transaction is refused too");
    assert!(err.to_string().contains("pooled connection"), "{err}");
    assert_eq!(names(&db.db).await, kept, "nothing ran");
    let outbox = count(&db.db, "ormsync_outbox").await;
    assert_eq!(outbox, 4);

    // Warn mode lets the uncaptured write commit (and logs it).
    let warned = guarded.clone().mode(GuardMode::Warn);
    let txn = warned.begin().await.unwrap();
    accounts::Entity::update_many()
        .col_expr(accounts::Column::Name, Expr::value("x"))
        .filter(accounts::Column::Id.eq(4))
        .exec(&txn)
        .await
        .unwrap();
    txn.commit().await.expect("warn mode commits");
    assert_eq!(names(&db.db).await[3], (4, "x".to_string()));
    assert_eq!(
        count(&db.db, "ormsync_outbox").await,
        outbox,
        "not captured"
    );

    // The guard the warn mode was cloned from still refuses.
    let txn = guarded.begin().await.unwrap();
    accounts::Entity::delete_by_id(4).exec(&txn).await.unwrap();
    refused(&txn.commit().await.unwrap_err(), "accounts", "1 delete");
}

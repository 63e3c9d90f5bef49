//! The fence that keeps an instance that lost its lease from writing a copy's bookkeeping.
//!
//! The lease lives at the source and a copy writes at the destination, so no check at the
//! source can be atomic with a destination write: an instance held up longer than its
//! lease (a starved pool, a busy database) still sends the write it had prepared, after
//! another instance took over and maybe finished the copy. Its plan, chunk or checkpoint
//! would then overwrite the new holder's, and a plan left unfinished that no instance
//! resumes keeps the destination from ever draining.
//!
//! So the destination's checkpoint row records the highest lease generation that wrote
//! there (`fence`), and each of those writes checks it inside its own transaction, under
//! the checkpoint's lock: an older generation is refused with [`Error::LeaseLost`], a
//! newer one raised to. An instance that takes the lease [`claim`]s the destination before
//! it reads the copy's state, so whatever it reads no older holder changes afterwards.

use sea_orm::{ConnectionTrait, Statement};

use crate::error::{DbContext, Error, Result};
use crate::sql_text::marks;

/// The lease generation a copy writes under, and the destination it is for (its name, for
/// messages).
#[derive(Clone, Debug)]
pub(crate) struct Fence {
    pub(crate) destination: String,
    pub(crate) generation: i64,
}

impl Fence {
    /// Inside a transaction holding `source`'s checkpoint lock: refuses a generation older
    /// than the one recorded, and records a newer one.
    pub(crate) async fn hold<C: ConnectionTrait>(&self, txn: &C, source: &str) -> Result<()> {
        let recorded = recorded(txn, source).await?;
        if recorded > self.generation {
            return Err(self.lost());
        }
        if recorded < self.generation {
            raise(txn, source, self.generation, false).await?;
        }
        Ok(())
    }

    /// Records this generation at the destination before the copy's state is read there,
    /// waiting for a write of an older one under way; refuses an older generation than the
    /// one recorded. A destination without a checkpoint yet has nothing to fence: the first
    /// write there creates the row and holds the fence.
    pub(crate) async fn claim<C: ConnectionTrait>(&self, db: &C, source: &str) -> Result<()> {
        raise(db, source, self.generation, true).await?;
        if recorded(db, source).await? > self.generation {
            return Err(self.lost());
        }
        Ok(())
    }

    fn lost(&self) -> Error {
        Error::LeaseLost {
            destination: self.destination.clone(),
        }
    }
}

/// The generation recorded for `source`; 0 without a checkpoint row.
async fn recorded<C: ConnectionTrait>(db: &C, source: &str) -> Result<i64> {
    let backend = db.get_database_backend();
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            backend,
            marks(
                backend,
                "SELECT fence FROM ormsync_checkpoint WHERE source = ?",
            ),
            [source.into()],
        ))
        .await
        .context(|| "reading the lease generation that writes the destination".into())?;
    match row {
        Some(row) => row
            .try_get::<i64>("", "fence")
            .context(|| "reading the lease generation that writes the destination".into()),
        None => Ok(0),
    }
}

/// Sets the recorded generation to `generation`; with `only_up`, only where it is lower.
async fn raise<C: ConnectionTrait>(
    db: &C,
    source: &str,
    generation: i64,
    only_up: bool,
) -> Result<()> {
    let backend = db.get_database_backend();
    let sql = if only_up {
        "UPDATE ormsync_checkpoint SET fence = ? WHERE source = ? AND fence < ?"
    } else {
        "UPDATE ormsync_checkpoint SET fence = ? WHERE source = ?"
    };
    let mut values: Vec<sea_orm::Value> = vec![generation.into(), source.into()];
    if only_up {
        values.push(generation.into());
    }
    db.execute_raw(Statement::from_sql_and_values(
        backend,
        marks(backend, sql),
        values,
    ))
    .await
    .context(|| "recording the lease generation that writes the destination".into())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use sea_orm::{Database, DatabaseConnection, TransactionTrait};

    use super::*;
    use crate::apply;

    const SOURCE: &str = "src";

    fn fence(generation: i64) -> Fence {
        Fence {
            destination: "d".into(),
            generation,
        }
    }

    /// A destination in a file of its own, which every connection of the pool sees.
    async fn destination() -> (tempfile::TempDir, DatabaseConnection) {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("d.db").display());
        let db = Database::connect(url).await.expect("connect");
        crate::schema::install(&db).await.expect("install");
        (dir, db)
    }

    /// `fence.hold` in a transaction that locks the checkpoint, as every copy write does.
    async fn write(db: &DatabaseConnection, fence: &Fence) -> Result<()> {
        let txn = db.begin().await.expect("begin");
        apply::lock_checkpoint(&txn, SOURCE).await?;
        fence.hold(&txn, SOURCE).await?;
        txn.commit().await.expect("commit");
        Ok(())
    }

    #[tokio::test]
    async fn an_older_generation_is_refused_once_a_newer_one_wrote() {
        let (_dir, db) = destination().await;
        write(&db, &fence(1))
            .await
            .expect("the first holder writes");
        write(&db, &fence(2)).await.expect("the next holder writes");
        let refused = write(&db, &fence(1)).await;
        assert!(
            matches!(refused, Err(Error::LeaseLost { .. })),
            "{refused:?}"
        );
        write(&db, &fence(2)).await.expect("the holder goes on");
    }

    #[tokio::test]
    async fn a_claim_fences_off_the_older_generation_before_it_writes() {
        let (_dir, db) = destination().await;
        write(&db, &fence(1))
            .await
            .expect("the first holder writes");
        fence(2)
            .claim(&db, SOURCE)
            .await
            .expect("the next holder claims");
        let refused = write(&db, &fence(1)).await;
        assert!(
            matches!(refused, Err(Error::LeaseLost { .. })),
            "{refused:?}"
        );
        let late = fence(1).claim(&db, SOURCE).await;
        assert!(matches!(late, Err(Error::LeaseLost { .. })), "{late:?}");
    }

    #[tokio::test]
    async fn a_claim_creates_no_checkpoint() {
        let (_dir, db) = destination().await;
        fence(3).claim(&db, SOURCE).await.expect("claim");
        let checkpoint = apply::read_checkpoint(&db, SOURCE).await.expect("read");
        assert_eq!(
            checkpoint, None,
            "a destination without one still gets a snapshot"
        );
    }
}

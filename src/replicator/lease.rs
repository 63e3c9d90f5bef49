//! `ormsync_leases`: which replicator instance ships to a destination.
//!
//! Applications run several copies of themselves, each starting a replicator. A lease row
//! per destination at the source, renewed by the holder and taken over by another instance
//! once it expires, makes one of them active. Times come from the source database's clock,
//! so instances on machines whose clocks disagree still agree. The destination's
//! checkpoint lock keeps even an overlap at hand-over from applying anything twice.
//!
//! Each taking of a lease gets a *generation*, higher than any before it: an instance
//! that lost the lease while a write was on its way (held up longer than the lease) may
//! still reach the destination after the new holder, and a destination that records the
//! highest generation it met refuses the older one's writes (see `snapshot::fence`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};

use crate::error::{DbContext, Result};
use crate::sql_text::{insert_if_absent, marks};

/// Until when a lease is surely held, as its holder last renewed it. The worker's status
/// reads it: a worker held up longer than the lease (a slow database, a starved pool) has
/// not yet seen that another instance took over, and must not show as shipping meanwhile.
#[derive(Clone, Debug, Default)]
pub(crate) struct HeldUntil(Arc<Mutex<Option<Instant>>>);

impl HeldUntil {
    fn get(&self) -> Option<Instant> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, until: Option<Instant>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = until;
    }

    fn take(&self) -> Option<Instant> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Whether a lease that was held ran out without a renewal: another instance may hold
    /// it now. It is counted from before each renewal was sent, so it lapses here no later
    /// than at the database.
    pub(crate) fn lapsed(&self) -> bool {
        self.get().is_some_and(|until| until <= Instant::now())
    }
}

/// A lease on one name (a destination, or the retention task) for one instance.
pub(crate) struct Lease {
    db: DatabaseConnection,
    name: String,
    holder: String,
    ttl: Duration,
    /// Until when (by our clock, with margin) we know we hold it.
    held_until: HeldUntil,
    /// The generation of the taking we hold, while we hold it.
    generation: Option<i64>,
}

impl Lease {
    pub(crate) fn new(
        db: DatabaseConnection,
        name: impl Into<String>,
        holder: impl Into<String>,
        ttl: Duration,
    ) -> Self {
        Lease {
            db,
            name: name.into(),
            holder: holder.into(),
            ttl,
            held_until: HeldUntil::default(),
            generation: None,
        }
    }

    /// Until when this instance surely holds the lease, shared with the status.
    pub(crate) fn held_until(&self) -> HeldUntil {
        self.held_until.clone()
    }

    /// Whether this instance holds the lease now; renews it when a third of its life is
    /// gone, and takes it over when it expired. `Err` only on a database error.
    pub(crate) async fn ensure(&mut self) -> Result<bool> {
        if let Some(until) = self.held_until.get()
            && until.saturating_duration_since(Instant::now()) > self.ttl * 2 / 3
        {
            return Ok(true);
        }
        let asked = Instant::now();
        self.generation = self.try_acquire().await?;
        let held = self.generation.is_some();
        // Renewed at some instant after `asked`: counting from `asked` errs on the safe side.
        self.held_until.set(held.then(|| asked + self.ttl));
        Ok(held)
    }

    /// The generation of the taking this instance holds, as [`ensure`](Self::ensure) last
    /// found it; `None` when it does not hold the lease.
    pub(crate) fn generation(&self) -> Option<i64> {
        self.held_until.get().and(self.generation)
    }

    /// Stops trusting the lease until [`ensure`](Self::ensure) asks the database again: a
    /// destination refused a write of this generation, so a newer holder wrote there.
    pub(crate) fn forget(&mut self) {
        self.held_until.set(None);
        self.generation = None;
    }

    /// Who holds the lease now, per the database.
    pub(crate) async fn holder(&self) -> Result<Option<String>> {
        let backend = self.db.get_database_backend();
        let row = self
            .db
            .query_one_raw(Statement::from_sql_and_values(
                backend,
                marks(
                    backend,
                    "SELECT holder FROM ormsync_leases WHERE destination = ?",
                ),
                [self.name.clone().into()],
            ))
            .await
            .context(|| format!("reading the lease of `{}`", self.name))?;
        Ok(row
            .and_then(|r| r.try_get::<String>("", "holder").ok())
            .filter(|h| !h.is_empty()))
    }

    /// Takes or renews the lease; returns the generation held, or `None` when another
    /// instance holds it.
    async fn try_acquire(&self) -> Result<Option<i64>> {
        let backend = self.db.get_database_backend();
        // A row that is already expired, so the conditional update below can take it.
        let create = insert_if_absent(
            backend,
            &format!(
                "ormsync_leases (destination, holder, expires_at) VALUES (?, '', {})",
                expired(backend)
            ),
        );
        self.db
            .execute_raw(Statement::from_sql_and_values(
                backend,
                create,
                [self.name.clone().into()],
            ))
            .await
            .context(|| format!("creating the lease of `{}`", self.name))?;
        let millis = self.ttl.as_millis() as i64;
        // A renewal keeps the generation; a taking (of an expired lease, or by another
        // holder) raises it, to at least the source's clock in microseconds, so it stays
        // above every earlier one even if the row was deleted meanwhile.
        let (sql, values): (&str, Vec<sea_orm::Value>) = match backend {
            DbBackend::MySql => (
                "UPDATE ormsync_leases SET generation = CASE WHEN holder = ? AND expires_at >= NOW(6) \
                 THEN generation ELSE GREATEST(generation + 1, \
                 CAST(UNIX_TIMESTAMP(NOW(6)) * 1000000 AS SIGNED)) END, \
                 holder = ?, expires_at = TIMESTAMPADD(MICROSECOND, ?, NOW(6)), \
                 updated_at = NOW(6) WHERE destination = ? AND (holder = ? OR expires_at < NOW(6))",
                vec![
                    self.holder.clone().into(),
                    self.holder.clone().into(),
                    (millis * 1000).into(),
                    self.name.clone().into(),
                    self.holder.clone().into(),
                ],
            ),
            DbBackend::Postgres => (
                "UPDATE ormsync_leases SET generation = CASE WHEN holder = $1 AND expires_at >= now() \
                 THEN generation ELSE GREATEST(generation + 1, \
                 (extract(epoch FROM clock_timestamp()) * 1000000)::bigint) END, \
                 holder = $1, expires_at = now() + $2 * interval '1 millisecond', \
                 updated_at = now() WHERE destination = $3 AND (holder = $1 OR expires_at < now())",
                vec![
                    self.holder.clone().into(),
                    millis.into(),
                    self.name.clone().into(),
                ],
            ),
            _ => (
                "UPDATE ormsync_leases SET generation = CASE WHEN holder = ?1 \
                 AND expires_at >= strftime('%Y-%m-%dT%H:%M:%fZ', 'now') THEN generation \
                 ELSE MAX(generation + 1, \
                 CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER)) END, \
                 holder = ?1, \
                 expires_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '+' || (?2 / 1000.0) || ' seconds'), \
                 updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') \
                 WHERE destination = ?3 AND (holder = ?1 OR expires_at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
                vec![
                    self.holder.clone().into(),
                    millis.into(),
                    self.name.clone().into(),
                ],
            ),
        };
        let done = self
            .db
            .execute_raw(Statement::from_sql_and_values(backend, sql, values))
            .await
            .context(|| format!("renewing the lease of `{}`", self.name))?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        let row = self
            .db
            .query_one_raw(Statement::from_sql_and_values(
                backend,
                marks(
                    backend,
                    "SELECT generation FROM ormsync_leases WHERE destination = ? AND holder = ?",
                ),
                [self.name.clone().into(), self.holder.clone().into()],
            ))
            .await
            .context(|| format!("reading the lease of `{}`", self.name))?;
        match row {
            Some(row) => row
                .try_get::<i64>("", "generation")
                .map(Some)
                .context(|| format!("reading the lease of `{}`", self.name)),
            // Released by another process of this same instance name meanwhile.
            None => Ok(None),
        }
    }

    /// Gives the lease up, so another instance takes over at once.
    pub(crate) async fn release(&mut self) {
        self.generation = None;
        if self.held_until.take().is_none() {
            return;
        }
        let backend = self.db.get_database_backend();
        // Expired rather than deleted: the row keeps the generation, which the next taking
        // raises by one whatever the source's clock does meanwhile.
        let sql = marks(
            backend,
            &format!(
                "UPDATE ormsync_leases SET holder = '', expires_at = {} \
                 WHERE destination = ? AND holder = ?",
                expired(backend)
            ),
        );
        let result = self
            .db
            .execute_raw(Statement::from_sql_and_values(
                backend,
                sql,
                [self.name.clone().into(), self.holder.clone().into()],
            ))
            .await;
        if let Err(e) = result {
            tracing::debug!(lease = %self.name, error = %e, "could not release the lease; it will expire");
        }
    }
}

/// A time long past, as `backend` stores timestamps (text on SQLite).
fn expired(backend: DbBackend) -> &'static str {
    match backend {
        DbBackend::MySql => "'1970-01-02 00:00:00'",
        DbBackend::Postgres => "'1970-01-02T00:00:00Z'",
        _ => "'1970-01-02T00:00:00.000Z'",
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::Database;

    use super::*;

    async fn source() -> (tempfile::TempDir, DatabaseConnection) {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("s.db").display());
        let db = Database::connect(url).await.expect("connect");
        crate::schema::install(&db).await.expect("install");
        (dir, db)
    }

    fn lease(db: &DatabaseConnection, holder: &str) -> Lease {
        Lease::new(db.clone(), "d", holder, Duration::from_secs(60))
    }

    #[tokio::test]
    async fn each_taking_raises_the_generation_and_a_renewal_keeps_it() {
        let (_dir, db) = source().await;
        let mut a = lease(&db, "a");
        assert!(a.ensure().await.expect("take"));
        let first = a.generation().expect("held");
        a.forget();
        assert!(a.ensure().await.expect("renew"));
        assert_eq!(a.generation(), Some(first), "a renewal keeps it");

        a.release().await;
        assert_eq!(a.generation(), None);
        let mut b = lease(&db, "b");
        assert!(b.ensure().await.expect("take over"));
        let second = b.generation().expect("held");
        assert!(second > first, "{second} > {first}");
        assert!(!a.ensure().await.expect("ask"), "b holds it");
        assert_eq!(a.generation(), None);
    }
}

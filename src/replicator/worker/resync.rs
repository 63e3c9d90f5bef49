//! Copying tables again on request, from the [`Replicator`](crate::Replicator) or
//! through `ormsync_control`, between passes.

use sea_orm::TransactionTrait;

use super::super::status::State;
use super::{Worker, WorkerState};
use crate::apply;
use crate::error::{DbContext, Error, Result};
use crate::outbox::control;
use crate::redact::redact;
use crate::snapshot::{self, Fence};

impl Worker {
    /// Copies `tables` again (see [`Replicator::resync`](crate::Replicator::resync)).
    pub(super) async fn resync(
        &mut self,
        state: &mut WorkerState,
        tables: &[String],
    ) -> Result<()> {
        if !self.target.copies {
            return Err(Error::Config(format!(
                "resync of `{}`: it applies through a sink of its own, which a copy does not reach",
                self.name
            )));
        }
        let shipped = self.shipped_tables();
        if let Some(t) = tables.iter().find(|t| !shipped.contains_key(*t)) {
            return Err(Error::Config(format!(
                "resync of `{}`: table `{t}` is not replicated to it (register its entity, and \
                 do not skip it for this destination)",
                self.name
            )));
        }
        self.still_shipping().await?;
        if !state.readiness.installed {
            self.install().await?;
            state.readiness.installed = true;
        }
        let fence = self.claim(state).await?;
        self.plan_resync(tables, &fence).await?;
        let done = match self.snapshot(state).await {
            Ok(done) => done,
            Err(e) => {
                // The copy stays planned and the stream waits for it: the next pass resumes
                // it, and a failure there retries or halts as any other, with its error in
                // the status, until a resume after the fix.
                state.readiness.snapshot_checked = false;
                return Err(e);
            }
        };
        // A halted destination stays halted: the copy fixed rows, not the change at fault,
        // which only a resume retries.
        let shown = if state.halted.is_some() {
            State::Halted
        } else {
            State::Idle
        };
        self.update(|s| s.state = shown);
        if done { Ok(()) } else { Err(Error::Shutdown) }
    }

    /// Plans the copy of `tables` from the checkpoint.
    async fn plan_resync(&mut self, tables: &[String], fence: &Fence) -> Result<()> {
        // The stream waits while the copy runs, so every other table stays at the
        // checkpoint: the copy converges from it.
        let base = apply::read_checkpoint(&self.target.db, &self.source_id)
            .await?
            .unwrap_or_default();
        let names: Vec<&str> = tables.iter().map(String::as_str).collect();
        let txn = self
            .target
            .db
            .begin()
            .await
            .context(|| format!("destination `{}`: starting a resync", self.name))?;
        apply::lock_checkpoint(&txn, &self.source_id).await?;
        fence.hold(&txn, &self.source_id).await?;
        snapshot::reset(&txn, &self.source_id, &names, true).await?;
        snapshot::set_base(&txn, &self.source_id, &base).await?;
        txn.commit()
            .await
            .context(|| format!("destination `{}`: starting a resync", self.name))?;
        tracing::info!(destination = %self.name, ?tables, "resync: starting");
        Ok(())
    }

    /// Runs the resync asked through `ormsync_control` by request `request`, if this
    /// instance ships to the destination, and records the outcome there.
    pub(super) async fn resync_asked(&mut self, state: &mut WorkerState, request: i64) {
        // Another instance holds the lease: that one answers.
        if !self.lease.ensure().await.unwrap_or(false) {
            return;
        }
        let outcome = match control::resync_request(&self.source, &self.name).await {
            Ok(asked) => {
                let mut tables = asked.tables;
                if tables.is_empty() {
                    tables = self.shipped_tables().into_keys().collect();
                    tables.sort();
                }
                self.resync(state, &tables).await
            }
            Err(e) => Err(e),
        };
        let error = match outcome {
            Ok(()) => None,
            Err(e) => {
                self.forget_lease_if_lost(&e);
                tracing::warn!(destination = %self.name, error = %e, "resync failed");
                Some(redact(&e.to_string()))
            }
        };
        let done = control::resync_done(&self.source, &self.name, request, error).await;
        if let Err(e) = done {
            tracing::warn!(destination = %self.name, error = %e, "cannot record a resync");
        }
    }
}

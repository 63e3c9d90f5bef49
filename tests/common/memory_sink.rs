//! A destination without a server, for tests of the worker's logic: [`MemorySink`] keeps
//! rows and positions in memory; [`Faulty`] wraps a sink and fails, refuses or holds its
//! applies as a test asks through [`Faults`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use ormsync::apply::Sink;
use ormsync::change::{Batch, Change, Op, Row};
use ormsync::position::Position;
use ormsync::{Error, Replicated, Result};
use sea_orm::{DbErr, RuntimeErr};
use tokio::sync::watch;

/// What a [`MemorySink`] holds: rows by table and key, and a position per source.
#[derive(Default)]
struct Store {
    /// Table → key (as JSON) → row.
    rows: HashMap<String, BTreeMap<String, Row>>,
    positions: HashMap<String, Position>,
}

impl Store {
    /// Writes `change` as a SQL destination would: an insert replaces the row, an update
    /// sets the columns it carries, a delete removes the row.
    fn write(&mut self, change: &Change) {
        let table = self.rows.entry(change.table.clone()).or_default();
        let key = change.key.to_json();
        match change.op {
            Op::Delete => {
                table.remove(&key);
            }
            Op::Insert => {
                table.insert(key, change.row.clone());
            }
            Op::Update => {
                let row = table.entry(key).or_default();
                for (column, value) in &change.row.0 {
                    match row.0.iter_mut().find(|(c, _)| c == column) {
                        Some((_, v)) => *v = value.clone(),
                        None => row.0.push((column.clone(), value.clone())),
                    }
                }
            }
        }
    }
}

/// A sink keeping rows in memory. Clones share what they hold, so a test keeps one to
/// look at the rows while the replicator applies through another.
#[derive(Clone, Default)]
pub struct MemorySink {
    store: Arc<Mutex<Store>>,
}

impl MemorySink {
    pub fn new() -> Self {
        Self::default()
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        // A test that panicked holding the lock fails on its own.
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The rows of `table`, by key as JSON.
    pub fn rows(&self, table: &str) -> BTreeMap<String, Row> {
        self.store().rows.get(table).cloned().unwrap_or_default()
    }

    /// The position stored for `source`.
    pub fn position_of(&self, source: &str) -> Position {
        self.store()
            .positions
            .get(source)
            .cloned()
            .unwrap_or_default()
    }
}

#[async_trait]
impl Sink for MemorySink {
    async fn position(&mut self, source: &str) -> Result<Position> {
        Ok(self.position_of(source))
    }

    async fn apply(&mut self, source: &str, batch: &Batch) -> Result<Position> {
        // One lock for the changes and the position: both are stored or neither.
        let mut store = self.store();
        let mut position = store.positions.get(source).cloned().unwrap_or_default();
        for change in batch.changes.iter().filter(|c| !position.contains(c.id)) {
            store.write(change);
        }
        batch.mark_done(&mut position);
        store.positions.insert(source.to_string(), position.clone());
        Ok(position)
    }

    async fn replay(&mut self, _source: &str, changes: &[Change]) -> Result<()> {
        let mut store = self.store();
        for change in changes {
            store.write(change);
        }
        Ok(())
    }
}

/// The rows of `E` at `db`, keyed as a [`MemorySink`] keys them.
pub async fn source_rows<E>(db: &sea_orm::DatabaseConnection) -> BTreeMap<String, Row>
where
    E: Replicated,
    E::Model: Sync,
{
    super::rows_of::<E>(db)
        .await
        .into_iter()
        .map(|row| (super::key_of_row::<E>(&row).to_json(), row))
        .collect()
}

/// Which changes a [`Faulty`] sink refuses.
type Refusal = Box<dyn Fn(&Change) -> bool + Send + Sync>;

/// A hold on an apply: the test learns when the apply reached it and lets it go on.
pub struct Gate {
    entered: watch::Receiver<bool>,
    open: watch::Sender<bool>,
}

impl Gate {
    /// Returns once an apply waits at the gate.
    pub async fn entered(&mut self) {
        let _ = self.entered.wait_for(|e| *e).await;
    }

    /// Lets the apply waiting at the gate go on.
    pub fn release(&self) {
        let _ = self.open.send(true);
    }
}

/// What a held apply waits on.
struct Held {
    entered: watch::Sender<bool>,
    open: watch::Receiver<bool>,
}

#[derive(Default)]
struct Plan {
    /// Applies to fail, counting from the next, as a lost connection does.
    fail_next: u64,
    /// Applies to fail by number, the first being 1.
    fail_at: Vec<u64>,
    /// A pause before each apply.
    delay: Option<Duration>,
    /// The next apply waits here.
    hold: Option<Held>,
    refuse: Option<Refusal>,
    /// Applies fail for good, naming no change, as a destination missing a privilege does.
    broken: bool,
    /// Applies started, failed ones included.
    applies: u64,
}

/// The test's side of a [`Faulty`] sink: what its next applies do.
#[derive(Clone, Default)]
pub struct Faults {
    plan: Arc<Mutex<Plan>>,
}

impl Faults {
    fn plan(&self) -> MutexGuard<'_, Plan> {
        self.plan.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next `n` applies fail with a lost connection, applying nothing.
    pub fn fail_next(&self, n: u64) {
        self.plan().fail_next = n;
    }

    /// The `n`-th apply (the first being 1) fails with a lost connection, applying nothing.
    pub fn fail_at(&self, n: u64) {
        self.plan().fail_at.push(n);
    }

    /// Applies and replays holding a change `refuse` picks fail on it for good, naming it,
    /// as a destination's constraint would; nothing of their batch is applied.
    pub fn refuse(&self, refuse: impl Fn(&Change) -> bool + Send + Sync + 'static) {
        self.plan().refuse = Some(Box::new(refuse));
    }

    /// Every apply fails with an error that needs a person and names no change, until
    /// [`mend`](Self::mend).
    pub fn break_for_good(&self) {
        self.plan().broken = true;
    }

    /// Undoes [`break_for_good`](Self::break_for_good).
    pub fn mend(&self) {
        self.plan().broken = false;
    }

    /// Refuses nothing from now on.
    pub fn stop_refusing(&self) {
        self.plan().refuse = None;
    }

    /// Each apply waits `delay` first.
    pub fn delay(&self, delay: Option<Duration>) {
        self.plan().delay = delay;
    }

    /// The next apply waits at the gate returned until it is released.
    pub fn hold_next(&self) -> Gate {
        let (entered_tx, entered_rx) = watch::channel(false);
        let (open_tx, open_rx) = watch::channel(false);
        self.plan().hold = Some(Held {
            entered: entered_tx,
            open: open_rx,
        });
        Gate {
            entered: entered_rx,
            open: open_tx,
        }
    }

    /// How many applies started.
    pub fn applies(&self) -> u64 {
        self.plan().applies
    }

    /// The first change `changes` holds that is refused, if any.
    fn refused<'c>(&self, changes: impl IntoIterator<Item = &'c Change>) -> Option<&'c Change> {
        let plan = self.plan();
        let refuse = plan.refuse.as_ref()?;
        changes.into_iter().find(|c| refuse(c))
    }
}

/// The error a destination gives for a change it refuses for good.
fn refusal(change: &Change) -> Error {
    Error::Apply {
        destination: "memory".into(),
        id: change.id,
        table: change.table.clone(),
        source: DbErr::Custom("refused by the test".into()),
    }
}

/// A sink failing, refusing or holding applies of the sink it wraps, as [`Faults`] says.
pub struct Faulty<S> {
    inner: S,
    faults: Faults,
}

impl<S: Sink> Faulty<S> {
    /// Wraps `inner`; the faults returned control it.
    pub fn new(inner: S) -> (Self, Faults) {
        let faults = Faults::default();
        (
            Faulty {
                inner,
                faults: faults.clone(),
            },
            faults,
        )
    }
}

#[async_trait]
impl<S: Sink> Sink for Faulty<S> {
    async fn position(&mut self, source: &str) -> Result<Position> {
        self.inner.position(source).await
    }

    async fn apply(&mut self, source: &str, batch: &Batch) -> Result<Position> {
        let (fail, broken, delay, hold) = {
            let mut plan = self.faults.plan();
            plan.applies += 1;
            let fail = plan.fail_next > 0 || plan.fail_at.contains(&plan.applies);
            plan.fail_next = plan.fail_next.saturating_sub(1);
            (fail, plan.broken, plan.delay, plan.hold.take())
        };
        if let Some(mut held) = hold {
            let _ = held.entered.send(true);
            let _ = held.open.wait_for(|o| *o).await;
        }
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        if fail {
            return Err(Error::Db {
                context: "destination `memory`: applying a batch".into(),
                source: DbErr::Conn(RuntimeErr::Internal("connection reset by the test".into())),
            });
        }
        if broken {
            return Err(Error::Config(
                "destination `memory`: broken for good by the test".into(),
            ));
        }
        let done = self.inner.position(source).await?;
        let todo = batch.changes.iter().filter(|c| !done.contains(c.id));
        if let Some(change) = self.faults.refused(todo) {
            return Err(refusal(change));
        }
        self.inner.apply(source, batch).await
    }

    async fn replay(&mut self, source: &str, changes: &[Change]) -> Result<()> {
        if let Some(change) = self.faults.refused(changes) {
            return Err(refusal(change));
        }
        self.inner.replay(source, changes).await
    }
}

//! The `ormsync` command line, run as a process against real databases: exit codes,
//! output (JSON parsed), pause and resume of a running replicator, dead letters, and no
//! password anywhere in what it prints.

mod common;

use std::time::{Duration, Instant};

use common::entities::{account, accounts, line_items};
use common::{Backend, TestDb, assert_all_same, count, pair};
use ormsync::{Destination, OnPermanentError, Replicated, Replicator, State};
use sea_orm::{ActiveModelTrait, ConnectionTrait, DatabaseConnection, TransactionTrait};
use serde_json::Value as Json;

/// The password put into every server URL: trust authentication accepts any, and it must
/// never show up in the command line's output.
const PASSWORD: &str = "s3cret";

/// What a run of the command line gave.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Json {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }

    fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// Runs `ormsync args…` off the async threads (a replicator may be running in this
/// process) and checks that no password appears in its output.
async fn ormsync(args: Vec<String>) -> Run {
    ormsync_with_env(args, Vec::new()).await
}

/// [`ormsync`] with these environment variables (and none of ormsync's others).
async fn ormsync_with_env(args: Vec<String>, env: Vec<(&'static str, String)>) -> Run {
    let shown = args.join(" ");
    let out = tokio::task::spawn_blocking(move || {
        assert_cmd::Command::new(env!("CARGO_BIN_EXE_ormsync"))
            .args(&args)
            .env_remove("ORMSYNC_SOURCE_URL")
            .env_remove("ORMSYNC_DEST_URLS")
            .env_remove("ORMSYNC_CONFIG")
            .envs(env)
            .timeout(Duration::from_secs(60))
            .output()
            .expect("run ormsync")
    })
    .await
    .expect("join");
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    for (name, text) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
        assert!(
            !text.contains(PASSWORD),
            "`ormsync {}` printed the password on {name}:\n{text}",
            ormsync::redact::redact(&shown)
        );
    }
    run
}

/// The database's URL, with a password where the server takes any (PostgreSQL, trust).
fn url(db: &TestDb) -> String {
    match db.backend {
        Backend::Postgres => {
            db.url
                .replacen("://postgres@", &format!("://postgres:{PASSWORD}@"), 1)
        }
        _ => db.url.clone(),
    }
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn builder(source: &DatabaseConnection) -> ormsync::ReplicatorBuilder {
    Replicator::builder(source.clone())
        .entity::<accounts::Entity>()
        .entity::<line_items::Entity>()
        .poll_interval(Duration::from_millis(50))
        .retry_delays(Duration::from_millis(20), Duration::from_millis(300))
}

async fn insert_accounts(
    db: &DatabaseConnection,
    ids: std::ops::RangeInclusive<i64>,
    balance: &str,
) {
    let txn = db.begin().await.unwrap();
    for id in ids {
        account(id, "someone", balance).insert(&txn).await.unwrap();
    }
    txn.commit().await.unwrap();
}

/// Waits until `check` holds, for at most `limit`.
async fn wait_for<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn state(rep: &Replicator, name: &str) -> State {
    rep.status()
        .destinations
        .iter()
        .find(|d| d.name == name)
        .map(|d| d.state)
        .expect("a destination")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entity_descriptions_round_trip_on_every_backend() {
    for backend in [Backend::Sqlite, Backend::Postgres, Backend::MySql] {
        let Some((s, d)) = pair(backend, Backend::Sqlite).await else {
            continue;
        };
        let rep = builder(&s.db)
            .destination(Destination::new("backup", d.db.clone()))
            .start()
            .await
            .unwrap();
        let mut expected = vec![
            accounts::Entity::table_spec(),
            line_items::Entity::table_spec(),
        ];
        expected.sort_by(|a, b| a.table.cmp(&b.table));
        let loaded = ormsync::outbox::entities::load(&s.db).await.unwrap();
        assert_eq!(loaded, expected, "{backend:?}");
        rep.shutdown().await;
        // Recording again (a restart) replaces, never duplicates.
        let rep = builder(&s.db)
            .destination(Destination::new("backup", d.db.clone()))
            .start()
            .await
            .unwrap();
        assert_eq!(
            ormsync::outbox::entities::load(&s.db).await.unwrap(),
            expected
        );
        rep.shutdown().await;
    }
}

async fn status_outbox_pause_and_resume(src: Backend, dst: Backend) {
    let Some((s, d)) = pair(src, dst).await else {
        return;
    };
    let rep = builder(&s.db)
        .destination(Destination::new("backup", d.db.clone()))
        .start()
        .await
        .unwrap();
    insert_accounts(&s.db, 1..=5, "10").await;
    rep.sync_now().await.unwrap();
    let source = url(&s);

    // Pause from another process: the running replicator stops shipping to it.
    let run = ormsync(args(&["--source", &source, "pause", "backup"]))
        .await
        .ok();
    assert!(run.stdout.contains("paused `backup`"), "{}", run.stdout);
    wait_for(
        Duration::from_secs(5),
        "the replicator to pause",
        || async { state(&rep, "backup") == State::Paused },
    )
    .await;
    insert_accounts(&s.db, 6..=9, "20").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        count(&d.db, "accounts").await,
        5,
        "nothing shipped while paused"
    );
    assert!(
        rep.sync_now().await.is_err(),
        "sync_now refuses while paused"
    );

    // Status and outbox show the pause and the backlog, as text and as JSON.
    let status = ormsync(args(&["--source", &source, "status", "--json"]))
        .await
        .ok()
        .json();
    let backup = &status["destinations"][0];
    assert_eq!(backup["name"], "backup");
    assert_eq!(backup["paused"], true);
    assert_eq!(backup["pending"], 4, "{status}");
    assert_eq!(backup["dead_letters"], 0);
    assert_eq!(backup["lease_holder"], rep.instance_id(), "{status}");
    assert!(backup["lag_seconds"].as_f64().is_some(), "{status}");
    let text = ormsync(args(&["--source", &source, "status"])).await.ok();
    assert!(text.stdout.contains("backup"), "{}", text.stdout);
    assert!(
        text.stdout.contains("paused"),
        "paused shows: {}",
        text.stdout
    );

    let outbox = ormsync(args(&["--source", &source, "outbox", "--json"]))
        .await
        .ok()
        .json();
    assert_eq!(outbox[0]["destination"], "backup");
    let tables = outbox[0]["tables"].as_array().expect("tables");
    assert_eq!(tables.len(), 1, "{outbox}");
    assert_eq!(tables[0]["table"], "accounts");
    assert_eq!(tables[0]["pending"], 4);
    assert!(tables[0]["oldest"].is_string(), "{outbox}");

    // Resume, through a config file this time: the backlog arrives.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ormsync.json");
    let json = serde_json::json!({"source": source, "destinations": {"backup": url(&d)}});
    std::fs::write(&config, json.to_string()).unwrap();
    let config = config.display().to_string();
    ormsync(args(&["--config", &config, "resume", "backup"]))
        .await
        .ok();
    wait_for(Duration::from_secs(10), "the backlog to arrive", || async {
        count(&d.db, "accounts").await == 9
    })
    .await;
    rep.sync_now().await.unwrap();
    assert_all_same(&s.db, &d.db).await;
    let status = ormsync(args(&["--config", &config, "status", "--json"]))
        .await
        .ok()
        .json();
    assert_eq!(status["destinations"][0]["paused"], false);

    // An unknown destination is an error, not a silent no-op.
    let typo = ormsync(args(&["--source", &source, "pause", "bakcup"])).await;
    assert_eq!(typo.code, 2, "{}", typo.stderr);
    assert!(typo.stderr.contains("bakcup"), "{}", typo.stderr);
    rep.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_outbox_pause_and_resume_sqlite() {
    status_outbox_pause_and_resume(Backend::Sqlite, Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_outbox_pause_and_resume_postgres_to_mariadb() {
    status_outbox_pause_and_resume(Backend::Postgres, Backend::MySql).await;
}

/// Makes `accounts` at `db` refuse negative balances (SQLite triggers).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_list_replay_and_discard() {
    let Some((s, d)) = pair(Backend::Sqlite, Backend::Sqlite).await else {
        return;
    };
    common::refuse_negative(&d.db, true).await;
    let rep = builder(&s.db)
        .destination(
            // The refused rows must reach the destination as changes, not in a copy.
            Destination::new("backup", d.db.clone())
                .initial_snapshot(false)
                .on_permanent_error(OnPermanentError::DeadLetter),
        )
        .start()
        .await
        .unwrap();
    insert_accounts(&s.db, 1..=3, "5").await;
    insert_accounts(&s.db, 4..=5, "-5").await;
    rep.sync_now().await.unwrap();
    let source = url(&s);
    let dest = format!("backup={}", url(&d));

    let listed = ormsync(args(&[
        "--source",
        &source,
        "dead-letters",
        "list",
        "--json",
    ]))
    .await
    .ok()
    .json();
    let listed = listed.as_array().expect("a list");
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(
        listed
            .iter()
            .all(|l| l["destination"] == "backup" && l["table"] == "accounts")
    );
    assert!(
        listed[0]["key"].as_str().unwrap().contains('4'),
        "{listed:?}"
    );
    let first = listed[0]["outbox_id"].as_i64().expect("an id");
    let text = ormsync(args(&[
        "--source",
        &source,
        "dead-letters",
        "list",
        "backup",
    ]))
    .await
    .ok();
    assert!(text.stdout.contains("negative balance"), "{}", text.stdout);

    // Still refused: the running replicator's replay fails, they stay, the command says so
    // and exits 2.
    let again = ormsync(args(&[
        "--source",
        &source,
        "dead-letters",
        "replay",
        "backup",
    ]))
    .await;
    assert_eq!(again.code, 2, "{}{}", again.stdout, again.stderr);
    assert!(
        again.stdout.contains("0 replayed, 2 failed"),
        "{}",
        again.stdout
    );

    // Discard the first; fix the cause and replay the other.
    let first = first.to_string();
    let gone = ormsync(args(&[
        "--source",
        &source,
        "dead-letters",
        "discard",
        "backup",
        "--id",
        &first,
    ]))
    .await
    .ok();
    assert!(gone.stdout.contains("1 discarded"), "{}", gone.stdout);
    common::refuse_negative(&d.db, false).await;
    // `--direct` applies it from the command line, without asking the replicator (paused
    // here in process; the command line sees that pause too).
    rep.pause("backup").await.unwrap();
    let status = ormsync(args(&["--source", &source, "status", "--json"]))
        .await
        .ok()
        .json();
    assert_eq!(status["destinations"][0]["paused"], true, "{status}");
    let replayed = ormsync(args(&[
        "--source",
        &source,
        "--dest",
        &dest,
        "dead-letters",
        "replay",
        "backup",
        "--direct",
    ]))
    .await
    .ok();
    assert!(
        replayed.stdout.contains("1 replayed, 0 failed"),
        "{}",
        replayed.stdout
    );
    let left = ormsync(args(&[
        "--source",
        &source,
        "dead-letters",
        "list",
        "--json",
    ]))
    .await
    .ok()
    .json();
    assert_eq!(left.as_array().map(Vec::len), Some(0), "{left}");
    assert_eq!(
        count(&d.db, "accounts").await,
        4,
        "the discarded change did not apply"
    );

    // The running replicator learns that row 4 is no longer blocked: its next change ships.
    rep.resume("backup").await.unwrap();
    let txn = s.db.begin().await.unwrap();
    account(4, "fixed", "4").update(&txn).await.unwrap();
    txn.commit().await.unwrap();
    let shipped = Instant::now();
    while count(&d.db, "accounts").await != 5 {
        assert!(
            shipped.elapsed() < Duration::from_secs(10),
            "row 4 did not ship: {}",
            rep.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    rep.sync_now().await.unwrap();
    assert_all_same(&s.db, &d.db).await;
    let status = ormsync(args(&["--source", &source, "status", "--json"]))
        .await
        .ok()
        .json();
    assert_eq!(status["destinations"][0]["dead_letters"], 0);
    rep.shutdown().await;

    // No replicator left to ask: replaying without --direct says so.
    let alone = ormsync(args(&[
        "--source",
        &source,
        "dead-letters",
        "replay",
        "backup",
    ]))
    .await;
    assert_eq!(alone.code, 2, "{}", alone.stdout);
    assert!(
        alone.stderr.contains("no replicator is running"),
        "{}",
        alone.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_exit_2_without_the_password() {
    for source in [
        format!("postgres://postgres:{PASSWORD}@127.0.0.1:1/nowhere"),
        format!("mysql://root:{PASSWORD}@127.0.0.1:1/nowhere"),
    ] {
        let run = ormsync(args(&["--source", &source, "status"])).await;
        assert_eq!(run.code, 2, "{}", run.stderr);
        assert!(
            run.stderr.contains("error: connecting to the source"),
            "{}",
            run.stderr
        );
        assert!(
            run.stderr.contains("***"),
            "the URL shows, redacted: {}",
            run.stderr
        );
    }
    // The same through the environment and a config file.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.json");
    std::fs::write(
        &config,
        format!(r#"{{"source": "postgres://postgres:{PASSWORD}@127.0.0.1:1/x", "extra": 1}}"#),
    )
    .unwrap();
    let run = ormsync(args(&["--config", &config.display().to_string(), "status"])).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    let run = ormsync(args(&["status"])).await;
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("no source database"), "{}", run.stderr);
    let help = tokio::task::spawn_blocking(|| {
        assert_cmd::Command::new(env!("CARGO_BIN_EXE_ormsync"))
            .arg("--help")
            .env(
                "ORMSYNC_SOURCE_URL",
                format!("postgres://u:{PASSWORD}@h/db"),
            )
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(help.status.code(), Some(0));
    assert!(
        !String::from_utf8_lossy(&help.stdout).contains(PASSWORD),
        "--help shows no env value"
    );
}

async fn verify_and_repair(src: Backend, dst: Backend) {
    let Some((s, d)) = pair(src, dst).await else {
        return;
    };
    let rep = builder(&s.db)
        .destination(Destination::new("backup", d.db.clone()))
        .start()
        .await
        .unwrap();
    insert_accounts(&s.db, 1..=5, "10").await;
    let txn = s.db.begin().await.unwrap();
    for n in 1..=3 {
        common::entities::line(7, n, n * 2)
            .insert(&txn)
            .await
            .unwrap();
    }
    txn.commit().await.unwrap();
    rep.sync_now().await.unwrap();
    rep.shutdown().await;
    let source = url(&s);
    let dest = format!("backup={}", url(&d));
    let base = ["--source", source.as_str(), "--dest", dest.as_str()];
    let with = |more: &[&str]| {
        let mut a = args(&base);
        a.extend(args(more));
        a
    };

    let clean = ormsync(with(&["verify", "--json"])).await.ok().json();
    assert_eq!(clean[0]["destination"], "backup");
    assert_eq!(clean[0]["in_sync"], true, "{clean}");
    assert_eq!(clean[0]["tables"].as_array().map(Vec::len), Some(2));

    // A row changed at the destination behind ormsync's back.
    d.db.execute_unprepared("UPDATE accounts SET name = 'tampered' WHERE id = 3")
        .await
        .unwrap();
    let drift = ormsync(with(&["verify", "--json"])).await;
    assert_eq!(drift.code, 1, "{}", drift.stderr);
    let found = drift.json();
    assert_eq!(found[0]["in_sync"], false);
    let accounts = found[0]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "accounts")
        .expect("a report of accounts");
    assert_eq!(accounts["different_count"], 1, "{accounts}");
    assert_eq!(accounts["different"][0]["key"]["id"]["i8"], 3, "{accounts}");
    assert_eq!(
        accounts["different"][0]["columns"],
        serde_json::json!(["name"])
    );
    // The same from the environment, as text.
    let env = vec![
        ("ORMSYNC_SOURCE_URL", source.clone()),
        ("ORMSYNC_DEST_URLS", dest.clone()),
    ];
    let text = ormsync_with_env(args(&["verify"]), env).await;
    assert_eq!(text.code, 1);
    assert!(text.stdout.contains("different id=3"), "{}", text.stdout);
    // Values stay out of the report unless asked for: they may be sensitive.
    assert!(
        !text.stdout.contains("tampered") && !drift.stdout.contains("tampered"),
        "{}",
        text.stdout
    );
    assert!(
        accounts["different"][0].get("values").is_none(),
        "{accounts}"
    );
    let shown = ormsync(with(&["verify", "--show-values"])).await;
    assert_eq!(shown.code, 1, "{}", shown.stderr);
    assert!(
        shown
            .stdout
            .contains("name: source \"someone\", destination \"tampered\""),
        "{}",
        shown.stdout
    );
    let shown = ormsync(with(&["verify", "--show-values", "--json"]))
        .await
        .json();
    let values = &shown[0]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "accounts")
        .expect("a report of accounts")["different"][0]["values"];
    assert_eq!(
        values,
        &serde_json::json!([{"column": "name", "source": "\"someone\"", "destination": "\"tampered\""}]),
        "{shown}"
    );
    let other = ormsync(with(&["verify", "--table", "line_items"])).await;
    assert_eq!(other.code, 0, "only line_items: in sync\n{}", other.stdout);

    // A dry run changes nothing; a direct repair fixes the row.
    let dry = ormsync(with(&["repair", "--dry-run", "--direct"]))
        .await
        .ok();
    assert!(dry.stdout.contains("would be"), "{}", dry.stdout);
    assert_eq!(ormsync(with(&["verify"])).await.code, 1);
    ormsync(with(&["repair", "--direct"])).await.ok();
    assert_eq!(ormsync(with(&["verify"])).await.code, 0);
    assert_all_same(&s.db, &d.db).await;

    // By default the fix is queued in the outbox and shipped by the replicator.
    d.db.execute_unprepared("DELETE FROM accounts WHERE id = 2")
        .await
        .unwrap();
    let queued = ormsync(with(&["repair", "--json"])).await.ok().json();
    let outcome = &queued[0]["tables"][0];
    assert_eq!(outcome["table"], "accounts", "{queued}");
    assert_eq!(outcome["mode"], "Outbox", "{queued}");
    assert_eq!(outcome["upserts"], 1, "{queued}");
    assert_eq!(ormsync(with(&["verify"])).await.code, 1, "not shipped yet");
    let rep = builder(&s.db)
        .destination(Destination::new("backup", d.db.clone()))
        .start()
        .await
        .unwrap();
    rep.sync_now().await.unwrap();
    rep.shutdown().await;
    assert_eq!(ormsync(with(&["verify"])).await.code, 0);
    assert_all_same(&s.db, &d.db).await;

    // A destination that cannot be reached is an error, not drift.
    let unreachable = "backup=postgres://postgres:s3cret@127.0.0.1:1/nowhere";
    let bad = ormsync(args(&[
        "--source",
        &source,
        "--dest",
        unreachable,
        "verify",
    ]))
    .await;
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(
        bad.stderr.contains("destination `backup`"),
        "{}",
        bad.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_and_repair_sqlite() {
    verify_and_repair(Backend::Sqlite, Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_and_repair_postgres_to_mariadb() {
    verify_and_repair(Backend::Postgres, Backend::MySql).await;
}

/// `ormsync resync` asks the running replicator to copy a table again: rows changed,
/// deleted or added behind ormsync's back at the destination match the source afterwards,
/// while changes keep streaming.
async fn resync_through_the_running_replicator(src: Backend, dst: Backend) {
    let Some((s, d)) = pair(src, dst).await else {
        return;
    };
    let rep = builder(&s.db)
        .destination(Destination::new("backup", d.db.clone()))
        .start()
        .await
        .unwrap();
    insert_accounts(&s.db, 1..=5, "10").await;
    rep.sync_now().await.unwrap();
    let source = url(&s);
    let dest = format!("backup={}", url(&d));
    let base = ["--source", source.as_str(), "--dest", dest.as_str()];
    let with = |more: &[&str]| {
        let mut a = args(&base);
        a.extend(args(more));
        a
    };

    // Mangled behind ormsync's back: a row deleted, one changed, one extra.
    for sql in [
        "DELETE FROM accounts WHERE id = 2",
        "UPDATE accounts SET name = 'tampered', balance = 99 WHERE id = 3",
        "INSERT INTO accounts (id, name, balance, updated_at) \
         VALUES (99, 'extra', 1, '2020-01-01 00:00:00')",
    ] {
        d.db.execute_unprepared(sql).await.unwrap();
    }
    assert_eq!(
        ormsync(with(&["verify", "--table", "accounts"])).await.code,
        1
    );

    let done = ormsync(with(&[
        "resync", "backup", "--table", "accounts", "--wait", "30",
    ]))
    .await
    .ok();
    assert!(done.stdout.contains("resynced accounts"), "{}", done.stdout);
    assert_eq!(count(&d.db, "accounts").await, 5);
    assert_all_same(&s.db, &d.db).await;
    assert_eq!(ormsync(with(&["verify"])).await.code, 0);

    // Streaming goes on after it.
    insert_accounts(&s.db, 6..=6, "20").await;
    rep.sync_now().await.unwrap();
    assert_all_same(&s.db, &d.db).await;

    // A table that is not replicated: refused before anything is asked, naming those
    // that are.
    let unknown = ormsync(with(&["resync", "backup", "--table", "nope"])).await;
    assert_eq!(unknown.code, 2, "{}", unknown.stdout);
    assert!(
        unknown.stderr.contains(
            "`nope` is not a replicated table of this source; it replicates: accounts, line_items"
        ),
        "{}",
        unknown.stderr
    );
    assert!(
        !unknown.stderr.contains("invalid configuration"),
        "{}",
        unknown.stderr
    );

    // A resync that does not finish in time is a timeout, not a configuration error.
    let late = ormsync(with(&["resync", "backup", "--wait", "0"])).await;
    assert_eq!(late.code, 2, "{}", late.stdout);
    assert!(
        late.stderr
            .contains("did not finish within 0 s; it goes on"),
        "{}",
        late.stderr
    );
    assert!(
        !late.stderr.contains("invalid configuration"),
        "{}",
        late.stderr
    );
    rep.sync_now().await.unwrap();

    // No replicator left to ask: it says what to do.
    rep.shutdown().await;
    let alone = ormsync(with(&["resync", "backup", "--table", "accounts"])).await;
    assert_eq!(alone.code, 2, "{}", alone.stdout);
    assert!(
        alone.stderr.contains(
            "error: no replicator is running for `backup`: start the application's replicator"
        ),
        "{}",
        alone.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_sqlite() {
    resync_through_the_running_replicator(Backend::Sqlite, Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_postgres_to_mariadb() {
    resync_through_the_running_replicator(Backend::Postgres, Backend::MySql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_takes_a_halt_away_and_a_pause_survives_a_restart() {
    let Some((s, d)) = pair(Backend::Sqlite, Backend::Sqlite).await else {
        return;
    };
    common::refuse_negative(&d.db, true).await;
    let rep = builder(&s.db)
        .destination(Destination::new("backup", d.db.clone()))
        .start()
        .await
        .unwrap();
    insert_accounts(&s.db, 1..=2, "-1").await;
    assert!(
        rep.sync_now().await.is_err(),
        "halted on the refused change"
    );
    assert_eq!(state(&rep, "backup"), State::Halted);
    let source = url(&s);

    // Status says so, with the error, as text and as JSON.
    let started = Instant::now();
    let status = loop {
        let status = ormsync(args(&["--source", &source, "status", "--json"]))
            .await
            .ok()
            .json();
        if status["destinations"][0]["state"] == "halted" {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "status shows the halt: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let error = status["destinations"][0]["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        error.contains("negative"),
        "the halt's error shows: {status}"
    );
    let text = ormsync(args(&["--source", &source, "status"])).await.ok();
    assert!(
        text.stdout.contains("halted") && text.stdout.contains("negative"),
        "{}",
        text.stdout
    );

    // Fixed at the destination, resumed from the command line: the halted worker retries.
    common::refuse_negative(&d.db, false).await;
    ormsync(args(&["--source", &source, "resume", "backup"]))
        .await
        .ok();
    wait_for(
        Duration::from_secs(10),
        "the halted change to apply",
        || async { count(&d.db, "accounts").await == 2 },
    )
    .await;

    // A pause holds across a restart of the application, until resumed.
    ormsync(args(&["--source", &source, "pause", "backup"]))
        .await
        .ok();
    rep.shutdown().await;
    let rep = builder(&s.db)
        .destination(Destination::new("backup", d.db.clone()))
        .start()
        .await
        .unwrap();
    wait_for(
        Duration::from_secs(5),
        "the restarted replicator to pause",
        || async { state(&rep, "backup") == State::Paused },
    )
    .await;
    insert_accounts(&s.db, 3..=4, "1").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        count(&d.db, "accounts").await,
        2,
        "nothing shipped while paused"
    );
    ormsync(args(&["--source", &source, "resume", "backup"]))
        .await
        .ok();
    wait_for(Duration::from_secs(10), "the backlog to arrive", || async {
        count(&d.db, "accounts").await == 4
    })
    .await;
    rep.sync_now().await.unwrap();
    assert_all_same(&s.db, &d.db).await;
    rep.shutdown().await;
}

/// A destination the source does not know is an error on every command that names one,
/// worded for where the names come from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_destination_exits_2_on_every_command() {
    let Some((s, d)) = pair(Backend::Sqlite, Backend::Sqlite).await else {
        return;
    };
    let rep = builder(&s.db)
        .destination(Destination::new("backup", d.db.clone()))
        .start()
        .await
        .unwrap();
    rep.sync_now().await.unwrap();
    rep.shutdown().await;
    let source = url(&s);
    for command in [
        &["dead-letters", "list", "nosuch"][..],
        &["dead-letters", "list", "nosuch", "--json"],
        &["dead-letters", "discard", "nosuch", "--all"],
        &["dead-letters", "discard", "nosuch", "--id", "1"],
        &["dead-letters", "replay", "nosuch"],
        &["dead-letters", "replay", "nosuch", "--direct"],
        &["pause", "nosuch"],
        &["resume", "nosuch"],
        &["resync", "nosuch"],
    ] {
        let mut a = args(&["--source", &source]);
        a.extend(args(command));
        let run = ormsync(a).await;
        assert_eq!(run.code, 2, "{command:?}: {}{}", run.stdout, run.stderr);
        assert!(
            run.stderr.contains(
                "error: the source has no destination named `nosuch` (it records: backup)"
            ),
            "{command:?}: {}",
            run.stderr
        );
        assert!(!run.stderr.contains("is configured"), "{}", run.stderr);
    }
    // verify and repair take their destinations from the configuration.
    let dest = format!("backup={}", url(&d));
    for command in [&["verify", "nosuch"][..], &["repair", "nosuch"]] {
        let mut a = args(&["--source", &source, "--dest", &dest]);
        a.extend(args(command));
        let run = ormsync(a).await;
        assert_eq!(run.code, 2, "{command:?}: {}{}", run.stdout, run.stderr);
        assert!(
            run.stderr
                .contains("error: no destination named `nosuch` is configured"),
            "{command:?}: {}",
            run.stderr
        );
    }
}

/// A refused port is reported at once, as what it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_says_so_at_once() {
    for source in [
        format!("postgres://postgres:{PASSWORD}@127.0.0.1:1/nowhere"),
        format!("mysql://root:{PASSWORD}@127.0.0.1:1/nowhere"),
    ] {
        let started = Instant::now();
        let run = ormsync(args(&["--source", &source, "status"])).await;
        assert_eq!(run.code, 2, "{}", run.stderr);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "took {:?}",
            started.elapsed()
        );
        assert!(
            run.stderr
                .contains(":***@127.0.0.1:1/nowhere: connection refused"),
            "{}",
            run.stderr
        );
        assert!(!run.stderr.contains("timed out"), "{}", run.stderr);
    }
}

/// The server's pointer into its own source code is not the user's business.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_noise_stays_out_of_messages() {
    let Some(db) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    let missing = url(&db)
        .rsplit_once('/')
        .map(|(server, _)| server.to_string())
        .unwrap()
        + "/ormsync_no_such_database";
    let run = ormsync(args(&["--source", &missing, "status"])).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("\"ormsync_no_such_database\" does not exist"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains(" at line "), "{}", run.stderr);
}

/// A URL that cannot be parsed is refused without being quoted, naming the input and the
/// forms expected; one that can is shown rebuilt without its secrets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urls_are_shown_rebuilt_or_not_at_all() {
    for (input, env) in [
        (vec!["--source", "postgres//u:s3cret@h/db", "status"], None),
        (vec!["--dest", "maria=mysql:u:s3cret@h", "verify"], None),
        (
            vec!["status"],
            Some(("ORMSYNC_SOURCE_URL", "postgres:/u:s3cret@h/db")),
        ),
    ] {
        let env: Vec<(&'static str, String)> =
            env.into_iter().map(|(k, v)| (k, v.to_string())).collect();
        let run = ormsync_with_env(args(&input), env).await;
        assert_eq!(run.code, 2, "{}", run.stderr);
        assert!(
            run.stderr
                .contains("is not a database URL that ormsync can read")
                && run
                    .stderr
                    .contains("expected postgres://user:password@host:port/database"),
            "{}",
            run.stderr
        );
        assert!(!run.stderr.contains("u:s"), "not quoted: {}", run.stderr);
    }
    let run = ormsync(args(&["--dest", "maria=mysql:u:s3cret@h", "status"])).await;
    assert!(run.stderr.contains("--dest maria"), "{}", run.stderr);
    let run = ormsync(args(&[
        "--source",
        "postgres://app:a/b@c@127.0.0.1:1/db?sslmode=disable&password=s3cret&api_token=t0k",
        "status",
    ]))
    .await;
    assert!(
        run.stderr.contains(
            "connecting to the source at postgres://app:***@127.0.0.1:1/db?sslmode=disable: \
             connection refused"
        ),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("t0k"), "{}", run.stderr);
}

/// Hints show only where they apply: a source without ormsync's tables, or that records no
/// replicated table, is told to start a replicator; the same command at a refused port is
/// not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hints_only_where_they_apply() {
    let Some(db) = TestDb::create(Backend::Sqlite).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let dest = format!("d=sqlite://{}?mode=rwc", dir.path().join("d.db").display());
    for command in [
        &["verify"][..],
        &["status"],
        &["pause", "d"],
        &["dead-letters", "list"],
    ] {
        let mut a = args(&["--source", &url(&db), "--dest", &dest]);
        a.extend(args(command));
        let run = ormsync(a).await;
        assert_eq!(run.code, 2, "{}", run.stderr);
        assert!(
            run.stderr.contains(
                "error: the source has no `ormsync_progress` table: no replicator has started on \
                 it yet"
            ),
            "{command:?}: {}",
            run.stderr
        );
    }
    // Installed, but no replicator has recorded its tables yet.
    ormsync::install(&db.db).await.unwrap();
    let run = ormsync(args(&["--source", &url(&db), "--dest", &dest, "verify"])).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "error: the source records no replicated table: start the application's replicator"
        ),
        "{}",
        run.stderr
    );
    let run = ormsync(args(&[
        "--source",
        "postgres://u@127.0.0.1:1/x",
        "--dest",
        &dest,
        "verify",
    ]))
    .await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(!run.stderr.contains("start"), "{}", run.stderr);
}

/// A destination halted on a change goes on once an operator parks that change by hand;
/// the command refuses a change the destination applied and an unknown destination.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn park_by_hand_lets_a_halted_destination_go_on() {
    let Some((s, d)) = pair(Backend::Sqlite, Backend::Sqlite).await else {
        return;
    };
    common::refuse_negative(&d.db, true).await;
    let rep = builder(&s.db)
        .destination(Destination::new("backup", d.db.clone()).initial_snapshot(false))
        .start()
        .await
        .unwrap();
    insert_accounts(&s.db, 1..=2, "5").await;
    insert_accounts(&s.db, 3..=3, "-1").await;
    insert_accounts(&s.db, 4..=4, "5").await;
    assert!(rep.sync_now().await.is_err(), "halted on account 3");
    let outbox_id = |id: i64| {
        let db = s.db.clone();
        async move {
            let row = db
                .query_one_raw(sea_orm::Statement::from_string(
                    db.get_database_backend(),
                    format!("SELECT id FROM ormsync_outbox WHERE pk LIKE '%:{id}}}%'"),
                ))
                .await
                .unwrap()
                .unwrap();
            row.try_get_by_index::<i64>(0).unwrap().to_string()
        }
    };
    let (refused, applied) = (outbox_id(3).await, outbox_id(1).await);
    let source = url(&s);

    let again = ormsync(args(&[
        "--source",
        &source,
        "dead-letters",
        "park",
        "backup",
        &applied,
    ]))
    .await;
    assert_eq!(again.code, 2, "{}{}", again.stdout, again.stderr);
    assert!(again.stderr.contains("applied"), "{}", again.stderr);
    let unknown = ormsync(args(&[
        "--source",
        &source,
        "dead-letters",
        "park",
        "nosuch",
        &refused,
    ]))
    .await;
    assert_eq!(unknown.code, 2, "{}{}", unknown.stdout, unknown.stderr);

    ormsync(args(&[
        "--source",
        &source,
        "dead-letters",
        "park",
        "backup",
        &refused,
    ]))
    .await
    .ok();
    ormsync(args(&["--source", &source, "resume", "backup"]))
        .await
        .ok();
    wait_for(Duration::from_secs(10), "the changes after it", || async {
        count(&d.db, "accounts").await == 3
    })
    .await;
    let listed = ormsync(args(&[
        "--source",
        &source,
        "dead-letters",
        "list",
        "backup",
        "--json",
    ]))
    .await
    .ok()
    .json();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["outbox_id"].to_string(), refused, "{listed}");
    rep.shutdown().await;
}

/// A request to a replicator that died fails once its lease expires, instead of waiting
/// out `--wait`; and an outbox repair says it reaches every destination, and that it ships
/// only once a replicator runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_to_a_replicator_that_died_fail_when_its_lease_expires() {
    let Some((s, d)) = pair(Backend::Sqlite, Backend::Sqlite).await else {
        return;
    };
    let rep = builder(&s.db)
        .lease_ttl(Duration::from_secs(5))
        .destination(Destination::new("backup", d.db.clone()))
        .start()
        .await
        .unwrap();
    insert_accounts(&s.db, 1..=3, "10").await;
    rep.sync_now().await.unwrap();
    // Killed as by SIGKILL: its lease stays until it expires.
    rep.abort().await;
    let source = url(&s);
    let dest = format!("backup={}", url(&d));

    // Asked while the dead holder's lease still runs: the command notices it lapse (the
    // process would be killed at 60 s, long before `--wait`).
    let run = ormsync(args(&[
        "--source", &source, "resync", "backup", "--wait", "600",
    ]))
    .await;
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("stopped renewing its lease"),
        "{}",
        run.stderr
    );
    // Once it lapsed, no replicator runs for it.
    let run = ormsync(args(&[
        "--source",
        &source,
        "dead-letters",
        "replay",
        "backup",
    ]))
    .await;
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("no replicator is running"),
        "{}",
        run.stderr
    );

    d.db.execute_unprepared("DELETE FROM accounts WHERE id = 2")
        .await
        .unwrap();
    let repaired = ormsync(args(&["--source", &source, "--dest", &dest, "repair"]))
        .await
        .ok();
    assert!(
        repaired.stdout.contains("every destination receives")
            && repaired.stdout.contains("no replicator runs now"),
        "{}",
        repaired.stdout
    );
}

/// `ormsync schema` against destinations whose tables `create_tables` made: nothing
/// differs; then a column dropped and one added behind ormsync's back are listed (exit 1),
/// `--evolve` adds the missing one, and the extra one stays listed until it goes.
async fn schema_lists_differences_and_evolves(src: Backend, dst: Backend) {
    let Some(s) = TestDb::create(src).await else {
        return;
    };
    let Some(d) = TestDb::create(dst).await else {
        return;
    };
    s.create_tables().await;
    ormsync::install(&s.db).await.unwrap();
    let rep = builder(&s.db)
        .destination(Destination::new("backup", d.db.clone()).create_tables())
        .start()
        .await
        .unwrap();
    insert_accounts(&s.db, 1..=3, "10").await;
    rep.sync_now().await.unwrap();
    rep.shutdown().await;
    let source = url(&s);
    let dest = format!("backup={}", url(&d));
    let with = |more: &[&str]| {
        let mut a = args(&["--source", source.as_str(), "--dest", dest.as_str()]);
        a.extend(args(more));
        a
    };

    let same = ormsync(with(&["schema", "--json"])).await.ok().json();
    assert_eq!(same[0]["destination"], "backup", "{same}");
    assert_eq!(same[0]["same"], true, "{same}");
    let text = ormsync(with(&["schema"])).await.ok();
    assert!(
        text.stdout
            .contains("backup: every table as its entity records it"),
        "{}",
        text.stdout
    );

    d.db.execute_unprepared("ALTER TABLE accounts DROP COLUMN note")
        .await
        .unwrap();
    d.db.execute_unprepared("ALTER TABLE accounts ADD COLUMN audit_tag TEXT NULL")
        .await
        .unwrap();
    let differs = ormsync(with(&["schema", "--json"])).await;
    assert_eq!(differs.code, 1, "{}{}", differs.stdout, differs.stderr);
    let found = differs.json();
    let accounts = found[0]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "accounts")
        .expect("accounts");
    let columns = accounts["columns"].as_array().unwrap();
    assert_eq!(columns.len(), 2, "{accounts}");
    assert!(
        columns
            .iter()
            .any(|c| c["column"] == "note" && c["kind"] == "missing" && c["evolves"] == true),
        "{accounts}"
    );
    assert!(
        columns
            .iter()
            .any(|c| c["column"] == "audit_tag" && c["kind"] == "extra" && c["evolves"] == false),
        "{accounts}"
    );
    let text = ormsync(with(&["schema", "backup"])).await;
    assert_eq!(text.code, 1);
    assert!(
        text.stdout
            .contains("backup: `accounts`: missing column `note` (evolve_schema adds it)")
            && text.stdout.contains("extra column `audit_tag`"),
        "{}",
        text.stdout
    );

    let evolved = ormsync(with(&["schema", "--evolve", "--json"])).await;
    assert_eq!(evolved.code, 1, "the extra column still differs");
    let evolved = evolved.json();
    assert_eq!(
        evolved[0]["added"],
        serde_json::json!([["accounts", "note"]])
    );
    d.db.execute_unprepared("ALTER TABLE accounts DROP COLUMN audit_tag")
        .await
        .unwrap();
    let same = ormsync(with(&["schema", "--json"])).await.ok().json();
    assert_eq!(same[0]["same"], true, "{same}");
    // The added column takes what the entity ships, as a created one would.
    let rep = builder(&s.db)
        .destination(Destination::new("backup", d.db.clone()))
        .start()
        .await
        .unwrap();
    let txn = s.db.begin().await.unwrap();
    let mut a: accounts::ActiveModel = <accounts::Entity as sea_orm::EntityTrait>::find_by_id(2)
        .one(&txn)
        .await
        .unwrap()
        .unwrap()
        .into();
    a.note = sea_orm::Set(Some("back".into()));
    a.update(&txn).await.unwrap();
    txn.commit().await.unwrap();
    rep.sync_now().await.unwrap();
    rep.shutdown().await;
    // The rows that did not change since hold NULL in the column that came back: verify
    // finds exactly those, and repair mends them.
    let drift = ormsync(with(&["verify", "--json"])).await;
    assert_eq!(drift.code, 1, "{}", drift.stderr);
    let drift = drift.json();
    let accounts = drift[0]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "accounts")
        .expect("accounts");
    assert_eq!(accounts["different_count"], 2, "{accounts}");
    ormsync(with(&["repair", "--direct"])).await.ok();
    ormsync(with(&["verify"])).await.ok();
    common::assert_same::<accounts::Entity>(&s.db, &d.db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_lists_differences_and_evolves_sqlite() {
    schema_lists_differences_and_evolves(Backend::Sqlite, Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_lists_differences_and_evolves_postgres_to_mariadb() {
    schema_lists_differences_and_evolves(Backend::Postgres, Backend::MySql).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_lists_differences_and_evolves_mariadb_to_postgres() {
    schema_lists_differences_and_evolves(Backend::MySql, Backend::Postgres).await
}

/// `status --nats … --stream …` lists a hub's subscribers from the stream alone: a child
/// that caught up has nothing pending, one that is paused has what the hub published since.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lists_the_subscribers_of_a_stream() {
    let Some(nats) = common::nats::NatsServer::start() else {
        return;
    };
    let Some((s, d)) = pair(Backend::Sqlite, Backend::Sqlite).await else {
        return;
    };
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.expect("nats"));
    let publisher = ormsync::jetstream::Publisher::builder(js.clone(), "CLIHUB")
        .create()
        .await
        .expect("streams");
    let rep = builder(&s.db)
        .destination(Destination::jetstream("children", s.db.clone(), publisher).realtime())
        .start()
        .await
        .unwrap();
    let child = ormsync::jetstream::Subscriber::builder(
        js,
        "CLIHUB",
        Destination::new("child-1", d.db.clone()),
    )
    .entity::<accounts::Entity>()
    .entity::<line_items::Entity>()
    .start()
    .await
    .unwrap();
    insert_accounts(&s.db, 1..=20, "1").await;
    rep.sync_now().await.unwrap();
    let hub = rep.status().destinations[0].clone();
    child
        .wait_for(Duration::from_secs(30), |c| c.watermark >= hub.watermark)
        .await
        .unwrap();
    assert_all_same(&s.db, &d.db).await;
    child.pause().await.unwrap();
    child
        .wait_for(Duration::from_secs(10), |c| c.state == State::Paused)
        .await
        .unwrap();
    insert_accounts(&s.db, 21..=30, "1").await;
    rep.sync_now().await.unwrap();

    // A server that refuses the connection: a clear error, without the password.
    let closed = format!("nats://u:{PASSWORD}@127.0.0.1:1");
    let out = ormsync(args(&[
        "--source",
        &url(&s),
        "status",
        "--nats",
        &closed,
        "--stream",
        "CLIHUB",
    ]))
    .await;
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(out.stderr.contains("connecting to NATS"), "{}", out.stderr);
    let out = ormsync(args(&[
        "--source",
        &url(&s),
        "status",
        "--nats",
        &nats.url(),
        "--stream",
        "CLIHUB",
        "--json",
    ]))
    .await
    .ok()
    .json();
    let subs = out["subscribers"].as_array().expect("subscribers");
    assert_eq!(subs.len(), 1, "{out}");
    assert_eq!(subs[0]["name"], "child-1");
    // The paused child may hold messages it fetched and has not acknowledged.
    let behind = subs[0]["pending"].as_u64().unwrap() + subs[0]["unacknowledged"].as_u64().unwrap();
    assert!(behind >= 1, "{out}");
    let text = ormsync(args(&[
        "--source",
        &url(&s),
        "status",
        "--nats",
        &nats.url(),
        "--stream",
        "CLIHUB",
    ]))
    .await
    .ok()
    .stdout;
    assert!(
        text.contains("subscribers of `CLIHUB`") && text.contains("child-1"),
        "{text}"
    );
    child.resume().await.unwrap();
    rep.sync_now().await.unwrap();
    let hub = rep.status().destinations[0].clone();
    child
        .wait_for(Duration::from_secs(30), |c| c.watermark >= hub.watermark)
        .await
        .unwrap();
    assert_all_same(&s.db, &d.db).await;
    child.shutdown().await;
    rep.shutdown().await;
}

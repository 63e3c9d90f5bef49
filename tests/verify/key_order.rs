//! Verify and repair of tables whose key a side sorts otherwise than by bytes: a MariaDB
//! `_ci` collation, MariaDB and PostgreSQL native enums declared out of alphabetical
//! order, a PostgreSQL linguistic collation, SQLite's `NOCASE`. The keys are chosen so
//! that the native order and the byte order disagree, across many chunks.

use std::collections::BTreeSet;

use rand::{Rng, SeedableRng};
use sea_orm::{ActiveModelTrait, ConnectionTrait, DatabaseConnection, Set, TransactionTrait};

use super::common::{Backend, TestDb};
use super::{exec, verify};
use ormsync::value::Value;
use ormsync::verify::{RepairMode, RepairOptions, Report, VerifyOptions, repair};
use ormsync::{Destination, Replicator};

pub mod words {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, ormsync::Replicated)]
    #[sea_orm(table_name = "vk_words")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub k: String,
        pub n: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
}

pub mod tones {
    use sea_orm::entity::prelude::*;

    /// Declared out of alphabetical and byte order.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
    #[sea_orm(rs_type = "String", db_type = "Enum", enum_name = "vk_tone")]
    pub enum Tone {
        #[sea_orm(string_value = "zulu")]
        Zulu,
        #[sea_orm(string_value = "alpha")]
        Alpha,
        #[sea_orm(string_value = "Mike")]
        Mike,
        #[sea_orm(string_value = "_echo")]
        Echo,
        #[sea_orm(string_value = "émile")]
        Emile,
        #[sea_orm(string_value = "Bravo")]
        Bravo,
    }

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, ormsync::Replicated)]
    #[sea_orm(table_name = "vk_tones")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tone: Tone,
        #[sea_orm(primary_key, auto_increment = false)]
        pub n: i64,
        pub v: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
}

use tones::Tone;

const TONES: [(Tone, &str); 6] = [
    (Tone::Zulu, "zulu"),
    (Tone::Alpha, "alpha"),
    (Tone::Mike, "Mike"),
    (Tone::Echo, "_echo"),
    (Tone::Emile, "émile"),
    (Tone::Bravo, "Bravo"),
];

// ---- setup -----------------------------------------------------------------------------

async fn run_all(db: &DatabaseConnection, ddl: &[String]) {
    for sql in ddl {
        db.execute_unprepared(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

/// A source and a destination holding the tables `ddl` gives for each.
async fn setup(
    src: Backend,
    dst: Backend,
    ddl: impl Fn(Backend) -> Vec<String>,
) -> Option<(TestDb, TestDb)> {
    let s = TestDb::create(src).await?;
    let d = TestDb::create(dst).await?;
    run_all(&s.db, &ddl(src)).await;
    run_all(&d.db, &ddl(dst)).await;
    ormsync::install(&s.db).await.expect("install at source");
    Some((s, d))
}

async fn start<E: ormsync::Replicated>(s: &TestDb, d: &TestDb) -> Replicator {
    Replicator::builder(s.db.clone())
        .entity::<E>()
        .destination(Destination::new("dest", d.db.clone()))
        .poll_interval(std::time::Duration::from_millis(50))
        .start()
        .await
        .expect("start replicator")
}

/// A seed from the environment (`ORMSYNC_SEED`) or the clock, printed to replay a failure.
fn seed() -> u64 {
    let seed = std::env::var("ORMSYNC_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(7, |d| d.as_secs())
        });
    eprintln!("key order seed: {seed} (ORMSYNC_SEED={seed} replays it)");
    seed
}

/// Text keys whose byte order differs from case- and accent-insensitive orders, and which
/// stay distinct under them (a `_ci` or `NOCASE` key holds no two that fold alike): short
/// ones, then `count` more of random pieces, each with its own number.
fn text_keys(rng: &mut impl Rng, count: usize) -> Vec<String> {
    const PIECES: [&str; 14] = [
        "a", "B", "_x", "é", "Z", "ä", "ab", "0", "9", "É", "-", "z", "Ö", "~",
    ];
    let mut keys: Vec<String> = ["a", "B", "_x", "é", "Z", "ä1", "ab", "0", "9", "10"]
        .map(String::from)
        .to_vec();
    for i in 0..count {
        let mut k = String::new();
        for _ in 0..rng.random_range(1..=3) {
            k.push_str(PIECES[rng.random_range(0..PIECES.len())]);
        }
        k.push_str(&format!("{i:03}"));
        keys.push(k);
    }
    let folded: BTreeSet<String> = keys.iter().map(|k| fold(k)).collect();
    assert_eq!(folded.len(), keys.len(), "keys that fold alike");
    keys
}

/// What a case- and accent-insensitive collation compares, for the letters used here.
fn fold(k: &str) -> String {
    k.chars()
        .map(|c| match c {
            'é' | 'É' => 'e',
            'ä' => 'a',
            'Ö' => 'o',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

fn text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(Some(s))) | Some(Value::Enum { value: Some(s), .. }) => s.clone(),
        other => panic!("not a text key: {other:?}"),
    }
}

/// A report's (missing, extra, different) keys, each as its columns' text joined by `/`.
fn drift(r: &Report) -> [BTreeSet<String>; 3] {
    let key = |row: &ormsync::change::Row| {
        r.key_columns
            .iter()
            .map(|c| match row.get(c) {
                Some(Value::BigInt(Some(n))) => n.to_string(),
                v => text(v),
            })
            .collect::<Vec<_>>()
            .join("/")
    };
    [
        r.missing.iter().map(key).collect(),
        r.extra.iter().map(key).collect(),
        r.different.iter().map(|d| key(&d.key)).collect(),
    ]
}

fn set(keys: &[&str]) -> BTreeSet<String> {
    keys.iter().map(|k| k.to_string()).collect()
}

fn opts() -> VerifyOptions {
    VerifyOptions::default().chunk_size(7)
}

// ---- text keys -------------------------------------------------------------------------

fn words_ddl(backend: Backend, collation: &str) -> Vec<String> {
    vec![match backend {
        Backend::Postgres => format!(
            "CREATE TABLE vk_words (k TEXT COLLATE \"{collation}\" PRIMARY KEY, n BIGINT NOT NULL)"
        ),
        Backend::MySql => format!(
            "CREATE TABLE vk_words (k VARCHAR(64) CHARACTER SET utf8mb4 COLLATE {collation} \
             PRIMARY KEY, n BIGINT NOT NULL)"
        ),
        Backend::Sqlite => format!(
            "CREATE TABLE vk_words (k TEXT COLLATE {collation} PRIMARY KEY, n BIGINT NOT NULL)"
        ),
    }]
}

/// Replicates a few hundred text keys, checks verify finds no drift, then breaks the
/// destination (values changed, rows deleted and inserted, a key's case changed) and
/// checks verify names exactly those keys, and that `mode`'s repair clears them.
async fn text_key_drift(s: &TestDb, d: &TestDb, mode: RepairMode) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed());
    let keys = text_keys(&mut rng, 400);
    let rep = start::<words::Entity>(s, d).await;
    let txn = s.db.begin().await.unwrap();
    for (i, k) in keys.iter().enumerate() {
        words::ActiveModel {
            k: Set(k.clone()),
            n: Set(i as i64),
        }
        .insert(&txn)
        .await
        .unwrap();
    }
    txn.commit().await.unwrap();
    rep.sync_now().await.unwrap();

    let r = verify::<words::Entity>(&s.db, &d.db, &opts())
        .await
        .unwrap();
    assert!(r.is_clean(), "after replication: {r}");
    assert_eq!(r.matching, keys.len() as u64);

    let (changed, deleted) = (&keys[..5], &keys[10..14]);
    for k in changed {
        exec(
            &d.db,
            "UPDATE vk_words SET n = n + 1000 WHERE k = ?",
            vec![k.as_str().into()],
        )
        .await;
    }
    for k in deleted {
        exec(
            &d.db,
            "DELETE FROM vk_words WHERE k = ?",
            vec![k.as_str().into()],
        )
        .await;
    }
    for k in ["~extra", "Ñandú", "-1"] {
        exec(
            &d.db,
            "INSERT INTO vk_words (k, n) VALUES (?, 1)",
            vec![k.into()],
        )
        .await;
    }
    // The same key to a case-insensitive collation, another to the merge.
    exec(&d.db, "UPDATE vk_words SET k = 'AB' WHERE k = 'ab'", vec![]).await;

    let r = verify::<words::Entity>(&s.db, &d.db, &opts())
        .await
        .unwrap();
    let mut missing: BTreeSet<String> = deleted.iter().cloned().collect();
    missing.insert("ab".into());
    let extra = set(&["~extra", "Ñandú", "-1", "AB"]);
    let different: BTreeSet<String> = changed.iter().cloned().collect();
    assert_eq!(drift(&r), [missing, extra, different], "{r}");

    let done = repair::<words::Entity>(&s.db, &d.db, &r, &RepairOptions::default().mode(mode))
        .await
        .unwrap();
    assert_eq!((done.upserts, done.deletes), (10, 4), "{done}");
    rep.sync_now().await.unwrap();
    let r = verify::<words::Entity>(&s.db, &d.db, &opts())
        .await
        .unwrap();
    assert!(r.is_clean(), "after repair: {r}");
    assert_eq!(r.matching, keys.len() as u64);
    rep.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_c_to_mariadb_general_ci() {
    let Some((s, d)) = setup(Backend::Postgres, Backend::MySql, |b| {
        words_ddl(
            b,
            if b == Backend::MySql {
                "utf8mb4_general_ci"
            } else {
                "C"
            },
        )
    })
    .await
    else {
        return;
    };
    text_key_drift(&s, &d, RepairMode::Outbox).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_general_ci_to_postgres_c_repaired_directly() {
    let Some((s, d)) = setup(Backend::MySql, Backend::Postgres, |b| {
        words_ddl(
            b,
            if b == Backend::MySql {
                "utf8mb4_general_ci"
            } else {
                "C"
            },
        )
    })
    .await
    else {
        return;
    };
    text_key_drift(&s, &d, RepairMode::Direct).await;
}

/// A linguistic collation PostgreSQL has here, if any.
async fn linguistic_collation(db: &DatabaseConnection) -> Option<String> {
    let rows = db
        .query_all_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT collname::text AS c FROM pg_collation \
             WHERE collname IN ('und-x-icu', 'en-US-x-icu', 'en_US.utf8', 'en_US.UTF-8') \
             ORDER BY collname DESC",
        ))
        .await
        .unwrap();
    rows.first().map(|r| r.try_get::<String>("", "c").unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_linguistic_to_sqlite_nocase_repaired_directly() {
    let Some(probe) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    let collation = match linguistic_collation(&probe.db).await {
        Some(c) => c,
        None => {
            eprintln!(
                "no linguistic collation in this PostgreSQL: its key is \"C\" here, \
                 and only SQLite's NOCASE is exercised"
            );
            "C".into()
        }
    };
    drop(probe);
    let Some((s, d)) = setup(Backend::Postgres, Backend::Sqlite, |b| {
        words_ddl(
            b,
            if b == Backend::Sqlite {
                "NOCASE"
            } else {
                &collation
            },
        )
    })
    .await
    else {
        return;
    };
    text_key_drift(&s, &d, RepairMode::Direct).await;
}

// ---- enum keys -------------------------------------------------------------------------

fn tones_ddl(backend: Backend) -> Vec<String> {
    let labels = TONES
        .iter()
        .map(|(_, l)| format!("'{l}'"))
        .collect::<Vec<_>>()
        .join(", ");
    match backend {
        Backend::Postgres => vec![
            format!("CREATE TYPE vk_tone AS ENUM ({labels})"),
            "CREATE TABLE vk_tones (tone vk_tone NOT NULL, n BIGINT NOT NULL, v TEXT NOT NULL, \
             PRIMARY KEY (tone, n))"
                .into(),
        ],
        Backend::MySql => vec![format!(
            "CREATE TABLE vk_tones (tone ENUM({labels}) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin \
             NOT NULL, n BIGINT NOT NULL, v TEXT NOT NULL, PRIMARY KEY (tone, n))"
        )],
        Backend::Sqlite => vec![
            "CREATE TABLE vk_tones (tone TEXT NOT NULL, n BIGINT NOT NULL, v TEXT NOT NULL, \
             PRIMARY KEY (tone, n))"
                .into(),
        ],
    }
}

/// Enum keys declared out of byte order at both sides, 6 labels × 80 rows, read 7 rows a
/// chunk; the same drift and repair as for text keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_enum_to_mariadb_enum() {
    let Some((s, d)) = setup(Backend::Postgres, Backend::MySql, tones_ddl).await else {
        return;
    };
    let rep = start::<tones::Entity>(&s, &d).await;
    let txn = s.db.begin().await.unwrap();
    for (tone, _) in TONES {
        for n in 0..80 {
            tones::ActiveModel {
                tone: Set(tone),
                n: Set(n),
                v: Set(format!("v{n}")),
            }
            .insert(&txn)
            .await
            .unwrap();
        }
    }
    txn.commit().await.unwrap();
    rep.sync_now().await.unwrap();
    let r = verify::<tones::Entity>(&s.db, &d.db, &opts())
        .await
        .unwrap();
    assert!(r.is_clean(), "after replication: {r}");
    assert_eq!(r.matching, 480);

    exec(
        &d.db,
        "UPDATE vk_tones SET v = 'x' WHERE tone = 'Mike' AND n = 3",
        vec![],
    )
    .await;
    exec(
        &d.db,
        "UPDATE vk_tones SET v = 'x' WHERE tone = 'zulu' AND n = 79",
        vec![],
    )
    .await;
    exec(
        &d.db,
        "DELETE FROM vk_tones WHERE tone = '_echo' AND n = 0",
        vec![],
    )
    .await;
    exec(
        &d.db,
        "DELETE FROM vk_tones WHERE tone = 'émile' AND n = 40",
        vec![],
    )
    .await;
    exec(
        &d.db,
        "INSERT INTO vk_tones (tone, n, v) VALUES ('Bravo', 80, 'new')",
        vec![],
    )
    .await;
    exec(
        &d.db,
        "INSERT INTO vk_tones (tone, n, v) VALUES ('alpha', -1, 'new')",
        vec![],
    )
    .await;

    let r = verify::<tones::Entity>(&s.db, &d.db, &opts())
        .await
        .unwrap();
    assert_eq!(
        drift(&r),
        [
            set(&["_echo/0", "émile/40"]),
            set(&["Bravo/80", "alpha/-1"]),
            set(&["Mike/3", "zulu/79"]),
        ],
        "{r}"
    );
    // Listed in byte order of the labels, not in declaration order.
    let first: Vec<String> = r
        .different
        .iter()
        .map(|d| text(d.key.get("tone")))
        .collect();
    assert_eq!(first, ["Mike", "zulu"]);

    let done = repair::<tones::Entity>(&s.db, &d.db, &r, &RepairOptions::default())
        .await
        .unwrap();
    assert_eq!((done.upserts, done.deletes), (4, 2), "{done}");
    rep.sync_now().await.unwrap();
    let r = verify::<tones::Entity>(&s.db, &d.db, &opts())
        .await
        .unwrap();
    assert!(r.is_clean(), "after repair: {r}");
    assert_eq!(r.matching, 480);
    rep.shutdown().await;
}

// ---- the reader's check ------------------------------------------------------------------

/// MariaDB's `utf8mb4_bin` pads with spaces: `a` sorts as `a ` there, after `a\t`, though
/// its bytes come first. The catalog calls it byte order, so the check on every key read
/// is what refuses the table, naming the keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_padding_bin_collation_out_of_byte_order_is_refused() {
    let Some(db) = TestDb::create(Backend::MySql).await else {
        return;
    };
    run_all(&db.db, &words_ddl(Backend::MySql, "utf8mb4_bin")).await;
    exec(
        &db.db,
        "INSERT INTO vk_words (k, n) VALUES ('a', 1), ('a\\t', 2)",
        vec![],
    )
    .await;
    let err = verify::<words::Entity>(&db.db, &db.db, &opts())
        .await
        .expect_err("keys out of byte order");
    let msg = err.to_string();
    assert!(
        matches!(err, ormsync::Error::Config(_)) && msg.contains("out of byte order"),
        "{msg}"
    );
}

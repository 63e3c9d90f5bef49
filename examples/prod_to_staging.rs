//! Production feeding staging on a schedule: staging gets every user, with emails masked
//! and the API token column dropped (staging's table does not even have it), a few
//! seconds after each scheduled run, while production's writes never wait for it.
//!
//! ```text
//! cargo run --example prod_to_staging
//! ```
//!
//! runs on SQLite files in a temporary directory; `--prod URL --staging URL` run it on
//! servers (scratch databases: the example drops and recreates its `staging_demo_users`
//! table and ormsync's tables there). Exits non-zero if staging ever holds a real email
//! or a token.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use ormsync::redact::redact;
use ormsync::{Destination, Replicator, Schedule, Transform};
use sea_orm::{
    ActiveModelTrait, ConnectionTrait, Database, DatabaseConnection, DbErr, EntityTrait, Schema,
    Set, Statement, TransactionTrait,
};

mod users {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, ormsync::Replicated)]
    #[sea_orm(table_name = "staging_demo_users")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub name: String,
        pub email: String,
        pub plan: String,
        pub api_token: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
}

#[derive(Parser)]
#[command(about = "Scheduled sync from production to a masked staging copy")]
struct Args {
    /// Production's database URL. Default: a SQLite file in a temporary directory.
    #[arg(long, env = "ORMSYNC_PROD_URL", hide_env_values = true)]
    prod: Option<String>,
    /// Staging's database URL. Default: a SQLite file in a temporary directory.
    #[arg(long, env = "ORMSYNC_STAGING_URL", hide_env_values = true)]
    staging: Option<String>,
    /// Seconds between scheduled runs.
    #[arg(long, default_value_t = 2)]
    every: u64,
}

type Error = Box<dyn std::error::Error>;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
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
    let prod_url = args.prod.unwrap_or_else(|| sqlite("prod.sqlite"));
    let staging_url = args.staging.unwrap_or_else(|| sqlite("staging.sqlite"));
    println!("production {}", redact(&prod_url));
    println!("staging    {}", redact(&staging_url));

    let prod = Database::connect(&prod_url).await?;
    let staging = Database::connect(&staging_url).await?;
    for db in [&prod, &staging] {
        ormsync::uninstall(db).await?;
        db.execute_unprepared("DROP TABLE IF EXISTS staging_demo_users")
            .await?;
        let schema = Schema::new(db.get_database_backend());
        db.execute(&schema.create_table_from_entity(users::Entity))
            .await?;
    }
    // Staging never had the column: tokens must not exist there at all.
    staging
        .execute_unprepared("ALTER TABLE staging_demo_users DROP COLUMN api_token")
        .await?;
    ormsync::install(&prod).await?;

    let every = Duration::from_secs(args.every.max(1));
    let replicator = Replicator::builder(prod.clone())
        .entity::<users::Entity>()
        .destination(
            Destination::new("staging", staging.clone())
                .schedule(Schedule::every(every))
                .drop_column(users::Column::ApiToken)
                .transform(users::Column::Email, Transform::mask_email()),
        )
        .start()
        .await?;

    let mut ok = true;
    for round in 1..=2 {
        let started = Instant::now();
        let txn = prod.begin().await?;
        if round == 1 {
            for (name, email, plan) in [
                ("Ada", "ada@customer.example", "pro"),
                ("Grace", "grace@customer.example", "free"),
                ("Edsger", "edsger@customer.example", "pro"),
            ] {
                users::ActiveModel {
                    name: Set(name.into()),
                    email: Set(email.into()),
                    plan: Set(plan.into()),
                    api_token: Set(format!("tok_{}", uuid::Uuid::new_v4().simple())),
                    ..Default::default()
                }
                .insert(&txn)
                .await?;
            }
        } else {
            for u in users::Entity::find().all(&txn).await? {
                let mut am: users::ActiveModel = u.into();
                am.plan = Set("enterprise".into());
                am.update(&txn).await?;
            }
        }
        txn.commit().await?;
        println!(
            "\nround {round}: production committed in {:?}; staging's next run is at {}",
            started.elapsed(),
            replicator.status().destinations[0]
                .next_run
                .map(|t| t.format("%H:%M:%S").to_string())
                .unwrap_or_else(|| "-".into())
        );
        let want = users::Entity::find().all(&prod).await?;
        // Wait for the scheduled run (not `sync_now`): that is the point of a schedule.
        let deadline = Instant::now() + every * 3;
        let seen = loop {
            let seen = staging_rows(&staging).await?;
            let caught_up = seen.len() == want.len()
                && want
                    .iter()
                    .all(|u| seen.iter().any(|s| s.0 == u.id && s.3 == u.plan));
            if caught_up || Instant::now() > deadline {
                break seen;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        println!("  staging after {:?}:", started.elapsed());
        for (id, name, email, plan) in &seen {
            println!("    {id:>3} {name:<8} {email:<28} {plan}");
        }
        for u in &want {
            match seen.iter().find(|s| s.0 == u.id) {
                Some((_, name, email, plan)) => {
                    if email == &u.email || !email.contains("***") {
                        println!("  REAL EMAIL AT STAGING: {email}");
                        ok = false;
                    }
                    if name != &u.name || plan != &u.plan {
                        println!("  staging differs for user {}", u.id);
                        ok = false;
                    }
                }
                None => {
                    println!("  user {} missing at staging", u.id);
                    ok = false;
                }
            }
        }
    }
    replicator.shutdown().await;
    println!(
        "\n{}",
        if ok {
            "staging is complete and masked"
        } else {
            "CHECKS FAILED"
        }
    );
    Ok(ok)
}

async fn staging_rows(
    db: &DatabaseConnection,
) -> Result<Vec<(i64, String, String, String)>, DbErr> {
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT id, name, email, plan FROM staging_demo_users ORDER BY id",
        ))
        .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("", "id")?,
                r.try_get("", "name")?,
                r.try_get("", "email")?,
                r.try_get("", "plan")?,
            ))
        })
        .collect()
}

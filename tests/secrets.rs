//! No password reaches the command line's output, whatever shape the URL holding it has:
//! seeded, randomized URLs with a known password (raw, percent-encoded, in a query
//! parameter, in malformed URLs), given as `--source`, `--dest`, environment and config
//! file to every subcommand, with `RUST_LOG=trace`.
//!
//! `ORMSYNC_SEED=<u64>` replays a run (the seed is printed as `secrets seed = …`).

mod common;

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::entities::{accounts, line_items};
use common::{Backend, TestDb};
use ormsync::{Destination, Replicator};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The characters a generated password draws from: letters and digits, and every
/// character that means something in a URL.
const SPECIAL: &[char] = &[
    '/', '@', ':', '?', '#', '%', '+', ' ', '&', '=', ',', '!', '$', ';', '~', '\'', '"', '\\',
    '[', ']', '{', '}', '<', '>', '|', '^', '`', '*', '(', ')', '\t', 'é', '€',
];

/// Hosts: a refused port (fails at once), and the test servers, which refuse a wrong
/// password (MariaDB) or a missing database (PostgreSQL trusts any password).
const HOSTS: &[(&str, &str, &str)] = &[
    ("postgres", "127.0.0.1:1", "nowhere"),
    ("mysql", "127.0.0.1:1", "nowhere"),
    ("postgres", "127.0.0.1:5432", "ormsync_no_such_database"),
    ("mysql", "127.0.0.1:3306", "ormsync_no_such_database"),
    ("postgresql", "localhost:1", "x"),
    ("mariadb", "[::1]:1", "x"),
];

/// URLs tried per subcommand and input.
const PER_COMBINATION: usize = 4;

/// Every subcommand, with the destination `d` where one is named.
const COMMANDS: &[&[&str]] = &[
    &["status"],
    &["status", "--json"],
    &["outbox"],
    &["outbox", "--json"],
    &["dead-letters", "list"],
    &["dead-letters", "list", "d", "--json"],
    &["dead-letters", "replay", "d", "--wait", "1"],
    &["dead-letters", "replay", "d", "--direct"],
    &["dead-letters", "discard", "d", "--all"],
    &["pause", "d"],
    &["resume", "d"],
    &["verify"],
    &["verify", "d", "--json", "--show-values"],
    &["repair", "--dry-run"],
    &["repair", "d", "--direct", "--json"],
    &["resync", "d", "--wait", "1"],
];

/// How a URL reaches the command line.
#[derive(Clone, Copy, Debug)]
enum Input {
    SourceFlag,
    SourceEnv,
    SourceConfig,
    DestFlag,
    DestEnv,
    DestConfig,
}

const INPUTS: &[Input] = &[
    Input::SourceFlag,
    Input::SourceEnv,
    Input::SourceConfig,
    Input::DestFlag,
    Input::DestEnv,
    Input::DestConfig,
];

fn seed() -> u64 {
    let seed = std::env::var("ORMSYNC_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    println!("secrets seed = {seed} (replay with ORMSYNC_SEED={seed})");
    seed
}

/// A password of 10 to 20 characters, half of them or more letters and digits, always
/// holding at least two special characters.
fn password(rng: &mut StdRng) -> String {
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let len = rng.random_range(10..=20);
    let mut p: Vec<char> = (0..len)
        .map(|_| {
            if rng.random_bool(0.35) {
                SPECIAL[rng.random_range(0..SPECIAL.len())]
            } else {
                ALNUM[rng.random_range(0..ALNUM.len())] as char
            }
        })
        .collect();
    for _ in 0..2 {
        let at = rng.random_range(0..p.len());
        p[at] = SPECIAL[rng.random_range(0..SPECIAL.len())];
    }
    // Starting with letters keeps it distinct from anything else in the output.
    p.splice(0..0, ['Q', 'x', '7', 'k']);
    p.into_iter().collect()
}

/// Percent-encodes every byte but letters and digits, as a person would to be safe.
fn encode(s: &str, lower: bool) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else if lower {
                format!("%{b:02x}")
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A URL-like text holding `pw`, and whether it is malformed whatever `pw` holds (then it
/// must be refused). The others may parse or not, depending on the password.
fn url(rng: &mut StdRng, pw: &str, hosts: &[(&str, &str, &str)]) -> (String, bool) {
    let (scheme, host, db) = hosts[rng.random_range(0..hosts.len())];
    let enc = encode(pw, rng.random_bool(0.5));
    // In a query, a raw `&` or `=` would start another parameter.
    let query_pw: String = pw.replace(['&', '='], "_");
    // `true`: malformed whatever the password holds, so it must be refused.
    let shapes: Vec<(String, bool)> = vec![
        (format!("{scheme}://u:{pw}@{host}/{db}"), false),
        (format!("{scheme}://u:{enc}@{host}/{db}"), false),
        (
            format!("{scheme}://u:{pw}@{host}/{db}?sslmode=disable"),
            false,
        ),
        (format!("{scheme}://u@{host}/{db}?password={enc}"), false),
        (
            format!("{scheme}://u@{host}/{db}?application_name=x&PASSWORD={enc}"),
            false,
        ),
        (format!("{scheme}://u:{pw}@{host}/{db}?token={enc}"), false),
        (format!("{scheme}://{host}/{db}?pwd={query_pw}"), false),
        (format!("  {scheme}://u:{pw}@{host}/{db}  "), false),
        (format!("{scheme}//u:{pw}@{host}/{db}"), true),
        (format!("{scheme}:/u:{pw}@{host}/{db}"), true),
        (format!("{scheme}:u:{pw}@{host}"), true),
        (format!("u:{pw}@{host}/{db}"), true),
        (format!("//u:{pw}@{host}/{db}"), true),
        (format!("{scheme}://u:{pw}"), false),
        (format!("{scheme}://u:{pw}@"), false),
        (format!("{scheme}://u:{pw}@{host}:port/{db}"), true),
        (format!("{scheme}://u:{pw}@ho st/{db}"), true),
        (format!("{scheme}://u:{pw}@{host}/{db}#fragment"), true),
        (format!("{scheme}://u:{pw}@{host}/{db}?{query_pw}"), false),
        (format!("sqlite://u:{pw}@{host}/{db}"), true),
        (
            format!("sqlite:///tmp/ormsync-no-such-dir/x.db?key={enc}"),
            false,
        ),
        (format!("http://u:{pw}@{host}/{db}"), true),
        (pw.to_string(), true),
        (format!("{scheme}://:{pw}@{host}/{db}"), false),
        (
            format!("{scheme}://u:{pw}@{host}/{db},{scheme}://u:{pw}@{host}/{db}"),
            false,
        ),
    ];
    shapes[rng.random_range(0..shapes.len())].clone()
}

/// What a run printed.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(args: &[String], env: &[(&str, String)]) -> Run {
    let out = assert_cmd::Command::new(env!("CARGO_BIN_EXE_ormsync"))
        .args(args)
        .env_remove("ORMSYNC_SOURCE_URL")
        .env_remove("ORMSYNC_DEST_URLS")
        .env_remove("ORMSYNC_CONFIG")
        .env("RUST_LOG", "trace")
        .envs(env.iter().map(|(k, v)| (*k, v.clone())))
        .timeout(Duration::from_secs(30))
        .output()
        .expect("run ormsync");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// One case: the arguments and environment for `command` with `text` given as `input`.
fn case(
    input: Input,
    command: &[&str],
    text: &str,
    good_source: &str,
    dir: &Path,
    n: usize,
) -> (Vec<String>, Vec<(&'static str, String)>) {
    let mut args: Vec<String> = Vec::new();
    let mut env = Vec::new();
    match input {
        Input::SourceFlag => args.extend(["--source".into(), text.to_string()]),
        Input::SourceEnv => env.push(("ORMSYNC_SOURCE_URL", text.to_string())),
        Input::SourceConfig | Input::DestConfig => {
            let file = dir.join(format!("config-{n}.json"));
            let json = match input {
                Input::SourceConfig => serde_json::json!({ "source": text }),
                _ => serde_json::json!({ "source": good_source, "destinations": { "d": text } }),
            };
            std::fs::write(&file, json.to_string()).expect("write config");
            args.extend(["--config".into(), file.display().to_string()]);
        }
        Input::DestFlag => args.extend([
            "--source".into(),
            good_source.to_string(),
            "--dest".into(),
            format!("d={text}"),
        ]),
        Input::DestEnv => {
            args.extend(["--source".into(), good_source.to_string()]);
            env.push(("ORMSYNC_DEST_URLS", format!("d={text}")));
        }
    }
    args.extend(command.iter().map(|s| s.to_string()));
    (args, env)
}

/// What the refusal of a malformed URL must name, per input.
fn names_input(input: Input, stderr: &str) -> bool {
    match input {
        Input::SourceFlag => stderr.contains("--source"),
        Input::SourceEnv => stderr.contains("ORMSYNC_SOURCE_URL"),
        Input::SourceConfig => stderr.contains("the source in the config file"),
        Input::DestFlag => stderr.contains("--dest d"),
        Input::DestEnv => stderr.contains("of ORMSYNC_DEST_URLS"),
        Input::DestConfig => stderr.contains("destination `d` in the config file"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_in_any_output() {
    let seed = seed();
    // A source the commands can read, with a destination `d` registered: the commands
    // get as far as connecting to the destination.
    let source = TestDb::create(Backend::Sqlite).await.expect("sqlite");
    let dest = TestDb::create(Backend::Sqlite).await.expect("sqlite");
    source.create_tables().await;
    dest.create_tables().await;
    let rep = Replicator::builder(source.db.clone())
        .entity::<accounts::Entity>()
        .entity::<line_items::Entity>()
        .destination(Destination::new("d", dest.db.clone()))
        .start()
        .await
        .expect("start");
    rep.sync_now().await.expect("sync");
    rep.shutdown().await;
    let good_source = source.url.clone();
    let dir = tempfile::tempdir().expect("temp dir");

    // A database that exists, where PostgreSQL (trust) accepts any password: the commands
    // connect and get as far as they can with the password in their options.
    let existing = TestDb::create(Backend::Postgres).await;
    let mut hosts = HOSTS.to_vec();
    let existing_name = existing
        .as_ref()
        .and_then(|db| db.url.rsplit_once('/').map(|(_, name)| name.to_string()));
    if let Some(name) = &existing_name {
        hosts.push(("postgres", "127.0.0.1:5432", name.as_str()));
        hosts.push(("postgresql", "localhost:5432", name.as_str()));
    }

    let mut rng = StdRng::seed_from_u64(seed);
    let mut cases = Vec::new();
    for (c, command) in COMMANDS.iter().enumerate() {
        for (i, input) in INPUTS.iter().enumerate() {
            for k in 0..PER_COMBINATION {
                let pw = password(&mut rng);
                let (text, must_refuse) = url(&mut rng, &pw, &hosts);
                let n = (c * INPUTS.len() + i) * PER_COMBINATION + k;
                let (args, env) = case(*input, command, &text, &good_source, dir.path(), n);
                cases.push((pw, text, must_refuse, *input, args, env));
            }
        }
    }

    let started = Instant::now();
    let failures = Mutex::new(Vec::new());
    let next = Mutex::new(0usize);
    let cases = &cases;
    tokio::task::block_in_place(|| {
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    loop {
                        let i = {
                            let mut next = next.lock().unwrap();
                            *next += 1;
                            *next - 1
                        };
                        let Some((pw, text, must_refuse, input, args, env)) = cases.get(i) else {
                            return;
                        };
                        let out = run(args, env);
                        let mut forms = vec![pw.clone(), encode(pw, false), encode(pw, true)];
                        forms.push(pw.replace(' ', "+"));
                        let what = format!(
                            "case {i} ({input:?}, `{}`): URL {text:?}, password {pw:?}",
                            args.iter()
                                .skip_while(|a| a.starts_with("--") || a.contains("://"))
                                .cloned()
                                .collect::<Vec<_>>()
                                .join(" ")
                        );
                        for (name, text) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
                            for form in &forms {
                                if text.contains(form.as_str()) {
                                    failures
                                        .lock()
                                        .unwrap()
                                        .push(format!("{what}: {name} shows {form:?}:\n{text}"));
                                }
                            }
                        }
                        if *must_refuse {
                            let refused = out.code == 2
                                && out.stderr.contains("is not a database URL")
                                && out.stderr.contains("expected postgres://")
                                && names_input(*input, &out.stderr);
                            if !refused {
                                failures.lock().unwrap().push(format!(
                                    "{what}: not refused as malformed (exit {}):\n{}",
                                    out.code, out.stderr
                                ));
                            }
                        }
                    }
                });
            }
        });
    });
    let failures = failures.into_inner().unwrap();
    println!("{} cases in {:.1?}", cases.len(), started.elapsed());
    assert!(
        failures.is_empty(),
        "seed {seed}: {} failures, the first:\n{}",
        failures.len(),
        failures
            .iter()
            .take(3)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n\n")
    );
}

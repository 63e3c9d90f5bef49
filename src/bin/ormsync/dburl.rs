//! Database URLs as a person types them: parsed once, shown only rebuilt without their
//! secrets, and turned into driver options without the text ever reaching a driver's
//! parser or a log.
//!
//! The parser is deliberately lenient where a password lives and strict everywhere else:
//! the credentials run up to the *last* `@`, so a password may hold `/ @ : ? # %` and
//! spaces unencoded, and every other part must look like what it is. Whatever does not
//! fit is refused with the reason, never quoted: a malformed URL may hold its password
//! anywhere.

use std::fmt;

/// The engines the command line connects to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Postgres,
    MySql,
    Sqlite,
}

/// The forms a URL should take, for messages about one that does not.
pub const EXPECTED: &str = "postgres://user:password@host:port/database, \
                            mysql://user:password@host:port/database or sqlite://path?mode=rwc";

/// Why a URL was refused; never quotes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    Empty,
    NoScheme,
    UnknownScheme,
    User,
    Host,
    Port,
    Database,
    Query,
    SqliteCredentials,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Malformed::Empty => "it is empty",
            Malformed::NoScheme => "it does not start with `postgres://`, `mysql://` or `sqlite:`",
            Malformed::UnknownScheme => {
                "its scheme is none of postgres, postgresql, mysql, mariadb, sqlite"
            }
            Malformed::User => {
                "the user name holds a character a user name cannot (/ ? # @ or a space)"
            }
            Malformed::Host => "the host is not a host name or an address",
            Malformed::Port => "the port is not a number from 1 to 65535",
            Malformed::Database => "the database name holds a space or `#`",
            Malformed::Query => "a query parameter is not of the form name=value",
            Malformed::SqliteCredentials => "a SQLite path takes no user, password or `@`",
        })
    }
}

/// A parsed database URL. Its `Display` is the only way it is ever shown: rebuilt, with
/// `***` for the password and without the parameters named like secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct DbUrl {
    engine: Engine,
    /// Percent-decoded.
    user: Option<String>,
    /// Percent-decoded; from the credentials, else from a `password` parameter.
    password: Option<String>,
    host: String,
    port: Option<u16>,
    /// For a server: the database, as typed, without the leading `/`. For SQLite: the
    /// path as typed.
    path: String,
    /// Parameters kept for the driver and shown, as typed.
    params: Vec<(String, String)>,
    /// Parameters named like secrets that the driver still needs (key file paths):
    /// passed on, never shown.
    hidden_params: Vec<(String, String)>,
    /// Every form in which a secret of this URL might show up in a message.
    secrets: Vec<String>,
}

/// Debug shows what Display shows: a `{:?}` must not be a way around it.
impl fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DbUrl({self})")
    }
}

/// Parameters the drivers read that are paths, not secrets, although named like keys.
const DRIVER_KEY_PATHS: &[&str] = &["sslkey", "ssl-key"];

/// Whether a query parameter's name says it holds a secret.
pub fn is_secret_name(name: &str) -> bool {
    let flat: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase();
    ["pass", "pwd", "secret", "token", "key", "auth", "cred"]
        .iter()
        .any(|word| flat.contains(word))
}

impl DbUrl {
    /// Parses `text`; the error says why without quoting it.
    pub fn parse(text: &str) -> Result<DbUrl, Malformed> {
        let text = text.trim();
        if text.is_empty() {
            return Err(Malformed::Empty);
        }
        let colon = text.find(':').ok_or(Malformed::NoScheme)?;
        let scheme = text[..colon].to_ascii_lowercase();
        let after = &text[colon + 1..];
        let engine = match scheme.as_str() {
            "postgres" | "postgresql" => Engine::Postgres,
            "mysql" | "mariadb" => Engine::MySql,
            "sqlite" => Engine::Sqlite,
            s if s.is_empty() || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '+') => {
                return Err(Malformed::NoScheme);
            }
            _ => return Err(Malformed::UnknownScheme),
        };
        match engine {
            Engine::Sqlite => Self::parse_sqlite(after.strip_prefix("//").unwrap_or(after)),
            _ => {
                let rest = after.strip_prefix("//").ok_or(Malformed::NoScheme)?;
                Self::parse_server(engine, rest)
            }
        }
    }

    fn parse_server(engine: Engine, rest: &str) -> Result<DbUrl, Malformed> {
        let mut secrets = Vec::new();
        // The credentials end at the last `@`: everything before it may be password.
        let (userinfo, hostpart) = match rest.rfind('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        let (mut user, mut password) = (None, None);
        if let Some(userinfo) = userinfo {
            let (u, p) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            // A user name with these characters means the `@` was not the credentials'
            // end (one in a query, say); the password might be anywhere then.
            if u.chars()
                .any(|c| matches!(c, '/' | '?' | '#' | '@') || c.is_whitespace())
            {
                if let Some(p) = p {
                    add_secret(&mut secrets, p);
                }
                return Err(Malformed::User);
            }
            if !u.is_empty() {
                user = Some(decode(u));
            }
            if let Some(p) = p {
                add_secret(&mut secrets, p);
                password = Some(decode(p));
            }
        }
        if hostpart.contains('#') || hostpart.chars().any(char::is_whitespace) {
            return Err(if hostpart.contains('?') {
                Malformed::Query
            } else {
                Malformed::Host
            });
        }
        let (before_query, query) = match hostpart.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (hostpart, None),
        };
        let (authority, path) = match before_query.split_once('/') {
            Some((a, p)) => (a, p),
            None => (before_query, ""),
        };
        let (host, port) = split_host_port(authority)?;
        if path.contains(['/', '@']) {
            return Err(Malformed::Database);
        }
        let mut url = DbUrl {
            engine,
            user,
            password,
            host: host.to_string(),
            port,
            path: path.to_string(),
            params: Vec::new(),
            hidden_params: Vec::new(),
            secrets,
        };
        if let Some(query) = query {
            url.parse_query(query)?;
        }
        Ok(url)
    }

    fn parse_sqlite(rest: &str) -> Result<DbUrl, Malformed> {
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        if path.contains('@') {
            return Err(Malformed::SqliteCredentials);
        }
        if path.contains('#') {
            return Err(Malformed::Database);
        }
        let mut url = DbUrl {
            engine: Engine::Sqlite,
            user: None,
            password: None,
            host: String::new(),
            port: None,
            path: path.to_string(),
            params: Vec::new(),
            hidden_params: Vec::new(),
            secrets: Vec::new(),
        };
        if let Some(query) = query {
            url.parse_query(query)?;
        }
        Ok(url)
    }

    fn parse_query(&mut self, query: &str) -> Result<(), Malformed> {
        if query.contains('@') || query.contains('#') {
            return Err(Malformed::Query);
        }
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let Some((name, value)) = pair.split_once('=') else {
                return Err(Malformed::Query);
            };
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            {
                add_secret(&mut self.secrets, value);
                return Err(Malformed::Query);
            }
            let lower = name.to_ascii_lowercase();
            if DRIVER_KEY_PATHS.contains(&lower.as_str()) {
                self.hidden_params
                    .push((name.to_string(), value.to_string()));
            } else if is_secret_name(name) {
                add_secret(&mut self.secrets, value);
                if lower == "password" && self.engine != Engine::Sqlite {
                    // The password of the credentials, when both are given, as sqlx does not:
                    // the one a person sees first in the URL is the one used.
                    if self.password.is_none() {
                        self.password = Some(decode(value));
                    }
                } else {
                    // Passed on, the driver would log it with its value as unknown.
                    tracing::warn!(
                        parameter = name,
                        "ignoring a parameter named like a secret, which the driver does not read"
                    );
                }
            } else {
                self.params.push((name.to_string(), value.to_string()));
            }
        }
        Ok(())
    }

    /// The engine.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// The user, percent-decoded.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The password, percent-decoded.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The URL the driver's own parser gets: no user, no password, no parameter named like
    /// a secret (the drivers log unknown parameters with their values), so nothing it can
    /// log or quote is secret. User and password are set on the options afterwards.
    pub fn driver_url(&self) -> String {
        let params = self.params.iter().chain(&self.hidden_params);
        match self.engine {
            Engine::Sqlite => {
                let mut s = format!("sqlite://{}", self.path);
                push_query(&mut s, params);
                s
            }
            engine => {
                let scheme = if engine == Engine::Postgres {
                    "postgres"
                } else {
                    "mysql"
                };
                let mut s = format!("{scheme}://{}", self.host);
                if let Some(port) = self.port {
                    s.push_str(&format!(":{port}"));
                }
                if !self.path.is_empty() {
                    s.push('/');
                    s.push_str(&self.path);
                }
                push_query(&mut s, params);
                s
            }
        }
    }

    /// Replaces every form of this URL's secrets in `text` with `***`: for driver
    /// messages, which may quote what they were given.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        // Longest first, so a secret that holds another is replaced whole.
        let mut secrets: Vec<&String> = self.secrets.iter().collect();
        if let Some(p) = &self.password {
            secrets.push(p);
        }
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        for secret in secrets {
            if !secret.is_empty() {
                out = out.replace(secret.as_str(), "***");
            }
        }
        out
    }

    /// Every form of the secrets, for tests.
    #[cfg(test)]
    fn secrets(&self) -> &[String] {
        &self.secrets
    }
}

impl fmt::Display for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.engine {
            Engine::Sqlite => write!(f, "sqlite://{}", self.path)?,
            engine => {
                let scheme = match engine {
                    Engine::Postgres => "postgres",
                    _ => "mysql",
                };
                write!(f, "{scheme}://")?;
                if let Some(user) = &self.user {
                    write!(f, "{}", encode(user))?;
                }
                if self.password.is_some() {
                    f.write_str(":***")?;
                }
                if self.user.is_some() || self.password.is_some() {
                    f.write_str("@")?;
                }
                f.write_str(&self.host)?;
                if let Some(port) = self.port {
                    write!(f, ":{port}")?;
                }
                if !self.path.is_empty() {
                    write!(f, "/{}", self.path)?;
                }
            }
        }
        let mut query = String::new();
        push_query(&mut query, self.params.iter());
        f.write_str(&query)
    }
}

fn push_query<'a>(s: &mut String, params: impl Iterator<Item = &'a (String, String)>) {
    for (i, (name, value)) in params.enumerate() {
        s.push(if i == 0 { '?' } else { '&' });
        s.push_str(name);
        s.push('=');
        s.push_str(value);
    }
}

fn split_host_port(authority: &str) -> Result<(&str, Option<u16>), Malformed> {
    let (host, port) = if let Some(inner) = authority.strip_prefix('[') {
        let end = inner.find(']').ok_or(Malformed::Host)?;
        let host = &authority[..end + 2];
        match &inner[end + 1..] {
            "" => (host, None),
            rest => (host, Some(rest.strip_prefix(':').ok_or(Malformed::Host)?)),
        }
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let valid_host = if host.starts_with('[') {
        host[1..host.len() - 1]
            .chars()
            .all(|c| c.is_ascii_hexdigit() || matches!(c, ':' | '.'))
    } else {
        host.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    };
    if !valid_host {
        return Err(Malformed::Host);
    }
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.chars().all(|c| c.is_ascii_digit()) => Some(n),
            _ => return Err(Malformed::Port),
        },
    };
    Ok((host, port))
}

/// Records `raw` and the forms it may take in a message: decoded, and encoded as a URL
/// would (either case of hex digits).
fn add_secret(secrets: &mut Vec<String>, raw: &str) {
    remember(raw);
    let decoded = decode(raw);
    let forms = [
        raw.to_string(),
        encode(&decoded),
        encode(&decoded).to_ascii_lowercase(),
        encode_all(&decoded),
        form_decode(raw),
        decoded,
    ];
    for form in forms {
        if !form.is_empty() && !secrets.contains(&form) {
            secrets.push(form);
        }
    }
}

/// Every secret seen in any URL of this process, parsed or refused.
static SEEN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

fn remember(raw: &str) {
    let decoded = decode(raw);
    let mut forms = vec![
        raw.to_string(),
        encode(&decoded),
        encode(&decoded).to_ascii_lowercase(),
        encode_all(&decoded),
        form_decode(raw),
        decoded,
    ];
    forms.retain(|f| !f.is_empty());
    if let Ok(mut seen) = SEEN.lock() {
        for form in forms {
            if !seen.contains(&form) {
                seen.push(form);
            }
        }
        seen.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }
}

/// Replaces every secret of every URL this process has read with `***`: the last line of
/// defence for whatever reaches the terminal (errors and logs).
pub fn scrub_all(text: &str) -> String {
    let Ok(seen) = SEEN.lock() else {
        return text.to_string();
    };
    let mut out = text.to_string();
    for secret in seen.iter() {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), "***");
        }
    }
    out
}

/// Writes log lines to stderr through [`scrub_all`], a line at a time.
#[derive(Default)]
pub struct ScrubbedStderr(Vec<u8>);

impl ScrubbedStderr {
    /// A writer for one log event.
    pub fn new() -> Self {
        ScrubbedStderr(Vec::new())
    }
}

impl std::io::Write for ScrubbedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.0.is_empty() {
            let text = scrub_all(&String::from_utf8_lossy(&self.0));
            self.0.clear();
            std::io::stderr().write_all(text.as_bytes())?;
        }
        Ok(())
    }
}

impl Drop for ScrubbedStderr {
    fn drop(&mut self) {
        let _ = std::io::Write::flush(self);
    }
}

/// Percent-decodes `s`; a `%` not followed by two hex digits stays as it is.
pub fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && bytes[i + 1].is_ascii_hexdigit()
            && bytes[i + 2].is_ascii_hexdigit()
        {
            let hex = &s[i + 1..i + 3];
            if let Ok(b) = u8::from_str_radix(hex, 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// As a form field is decoded: `+` is a space.
fn form_decode(s: &str) -> String {
    decode(&s.replace('+', " "))
}

/// Percent-encodes what is not unreserved in a URL (RFC 3986).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-encodes every byte but letters and digits, as sqlx does for passwords.
fn encode_all(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(text: &str) -> String {
        DbUrl::parse(text).expect("parses").to_string()
    }

    #[test]
    fn shows_a_url_rebuilt_without_its_password() {
        assert_eq!(
            shown("postgres://app:hunter2@db:5432/prod"),
            "postgres://app:***@db:5432/prod"
        );
        assert_eq!(
            shown("postgresql://app@db/prod?sslmode=require"),
            "postgres://app@db/prod?sslmode=require"
        );
        assert_eq!(
            shown("mysql://root@127.0.0.1:3306"),
            "mysql://root@127.0.0.1:3306"
        );
        assert_eq!(
            shown("sqlite:///tmp/a.db?mode=rwc"),
            "sqlite:///tmp/a.db?mode=rwc"
        );
        assert_eq!(shown("sqlite::memory:"), "sqlite://:memory:");
        assert_eq!(shown("postgres://[::1]:5432/x"), "postgres://[::1]:5432/x");
    }

    #[test]
    fn a_password_may_hold_any_character() {
        let url = DbUrl::parse("postgres://u:a/b@c:d?e#f %g+h@host:5432/db").unwrap();
        assert_eq!(url.password(), Some("a/b@c:d?e#f %g+h"));
        assert_eq!(url.user(), Some("u"));
        assert_eq!(url.to_string(), "postgres://u:***@host:5432/db");
        let url = DbUrl::parse("mysql://u:p%40ss%2Fw@h/db").unwrap();
        assert_eq!(url.password(), Some("p@ss/w"));
        assert!(url.secrets().contains(&"p%40ss%2Fw".to_string()));
    }

    #[test]
    fn parameters_named_like_secrets_are_stripped() {
        let url =
            DbUrl::parse("postgres://u@h/db?sslmode=require&password=pw1&Api_Token=t&sslkey=/k")
                .unwrap();
        assert_eq!(url.to_string(), "postgres://u:***@h/db?sslmode=require");
        assert_eq!(url.password(), Some("pw1"));
        assert_eq!(
            url.driver_url(),
            "postgres://h/db?sslmode=require&sslkey=/k"
        );
        for name in [
            "password",
            "PASS",
            "pwd",
            "secret",
            "token",
            "key",
            "sslpassword",
        ] {
            assert!(is_secret_name(name), "{name}");
        }
        assert!(!is_secret_name("sslmode"));
        assert!(!is_secret_name("application_name"));
    }

    #[test]
    fn the_driver_gets_no_credentials() {
        let url = DbUrl::parse("mysql://root:pw@127.0.0.1:3306/app").unwrap();
        assert_eq!(url.driver_url(), "mysql://127.0.0.1:3306/app");
        assert!(!format!("{url:?}").contains("pw@"));
    }

    #[test]
    fn malformed_urls_are_refused_with_a_reason() {
        for (text, why) in [
            ("", Malformed::Empty),
            ("postgres//u:S3cret@h/db", Malformed::NoScheme),
            ("postgres:/u:PW@h/db", Malformed::NoScheme),
            ("mysql:u:PW@h", Malformed::NoScheme),
            ("u:PW@h/db", Malformed::UnknownScheme),
            ("http://u:PW@h/db", Malformed::UnknownScheme),
            ("//u:PW@h/db", Malformed::NoScheme),
            ("postgres://u@h/db?password=a@b", Malformed::User),
            ("postgres://u:PW@h:port/db", Malformed::Port),
            ("postgres://u:PW@h x/db", Malformed::Host),
            ("postgres://u:P:W", Malformed::Port),
            ("postgres://h/db?PW", Malformed::Query),
            ("sqlite://u:PW@h/db", Malformed::SqliteCredentials),
        ] {
            assert_eq!(DbUrl::parse(text), Err(why), "{text}");
        }
    }

    #[test]
    fn random_passwords_come_back_whole_raw_or_encoded() {
        use rand::{Rng, SeedableRng};
        let seed = std::env::var("ORMSYNC_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| rand::rng().random());
        println!("dburl seed = {seed}");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let chars: Vec<char> = "abcXYZ019/@:?#%+ &=,!$;~'\"\\[]{}<>|^`*()é€"
            .chars()
            .collect();
        for _ in 0..2000 {
            let len = rng.random_range(1..24);
            // A prefix found nowhere else in the URL, so that finding it means a leak.
            let pw: String = "Qz"
                .chars()
                .chain((0..len).map(|_| chars[rng.random_range(0..chars.len())]))
                .collect();
            // Typed raw, a `%` with two hex digits after it is an escape, as in any URL.
            for (text, expected) in [
                (format!("postgres://u:{pw}@h:5432/db"), decode(&pw)),
                (format!("mysql://u:{}@h:5432/db", encode(&pw)), pw.clone()),
                (
                    format!("postgres://u@h:5432/db?x=1&password={}", encode(&pw)),
                    pw.clone(),
                ),
            ] {
                let url = DbUrl::parse(&text).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
                assert_eq!(url.password(), Some(expected.as_str()), "seed {seed}");
                assert!(
                    url.to_string().ends_with("u:***@h:5432/db")
                        || url.to_string().contains("u:***@h:5432/db?x=1"),
                    "seed {seed}: {url}"
                );
                assert!(!url.driver_url().contains(&pw), "seed {seed}");
                assert!(!url.scrub(&format!("<{pw}>")).contains(&pw), "seed {seed}");
            }
        }
    }

    #[test]
    fn scrub_removes_every_form_of_the_password() {
        let url = DbUrl::parse("postgres://u:p%2Fw d@h/db").unwrap();
        assert_eq!(url.password(), Some("p/w d"));
        for form in ["p/w d", "p%2Fw d", "p%2Fw%20d", "p%2fw%20d"] {
            assert_eq!(url.scrub(&format!("x {form} y")), "x *** y", "{form}");
        }
    }
}

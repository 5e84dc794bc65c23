//! The console's settings and its operators.

use std::net::SocketAddr;

use jobs::redis_conn::RedisSettings;
use jobs::settings::{Env, SettingError};
use service::auth::{BearerSecrets, MIN_SECRET_LEN, SecretDigest};

/// What an operator may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Sees and acts: replay, edit, delete, purge.
    Admin,
    /// Sees only.
    ReadOnly,
}

#[derive(Debug, Clone)]
pub struct Operator {
    pub name: String,
    pub role: Role,
    /// The token's digest (the token itself is not kept); session cookies are signed over it,
    /// so a rotated token ends the sessions it opened.
    pub digest: SecretDigest,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// `CONSOLE_ADDR`, default `127.0.0.1:8081`.
    pub addr: SocketAddr,
    pub redis: RedisSettings,
    /// `CONSOLE_TOKEN` (the operator `admin`) and `CONSOLE_OPERATORS=name:token[:readonly],...`.
    pub operators: BearerSecrets<Operator>,
    /// `CONSOLE_REPLAY_RATE` (default 500): most letters replayed per second by a bulk replay.
    pub replay_rate: u32,
    /// How long a cancelled job stays readable, per kind (`JOB_RETENTION_SECONDS[_<KIND>]`).
    pub retention: std::collections::BTreeMap<jobs::Kind, std::time::Duration>,
    /// `CONSOLE_SESSION_KEY` (32+ characters): signs session cookies, so several consoles share
    /// sessions; random at start when absent (sessions end with the process).
    pub session_key: SessionKey,
    /// `CONSOLE_SECURE_COOKIES` (default false): mark cookies `Secure` (behind HTTPS).
    pub secure_cookies: bool,
    pub json_logs: bool,
    /// `HTTP_HEADER_READ_TIMEOUT_MS`, `HTTP_IDLE_TIMEOUT_SECONDS`, `HTTP_MAX_CONNECTIONS`.
    pub http: service::HttpLimits,
    /// `SUPPRESSION_CAP` (default 100000): most addresses on the email suppression list.
    pub suppression_cap: u64,
}

/// The key that signs session cookies: a secret, so its `Debug` does not show it.
#[derive(Clone)]
pub struct SessionKey(Vec<u8>);

impl std::ops::Deref for SessionKey {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey([redacted])")
    }
}

/// `n` bytes from the operating system's random source (not a seeded generator: these sign
/// sessions).
pub fn random_bytes(n: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = vec![0; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes)
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, SettingError> {
        let mut operators = Vec::new();
        if let Some(token) = env.get("CONSOLE_TOKEN") {
            if token.len() < MIN_SECRET_LEN {
                return Err(SettingError::new(
                    "CONSOLE_TOKEN",
                    format!("must be at least {MIN_SECRET_LEN} characters"),
                ));
            }
            operators.push(Operator { name: "admin".into(), role: Role::Admin, digest: SecretDigest::of(token) });
        }
        if let Some(list) = env.get("CONSOLE_OPERATORS").filter(|l| !l.trim().is_empty()) {
            for entry in list.split(',') {
                let mut parts = entry.trim().splitn(3, ':');
                let (name, token, role) = (parts.next().unwrap_or(""), parts.next(), parts.next());
                let Some(token) = token else {
                    return Err(SettingError::new(
                        "CONSOLE_OPERATORS",
                        "each entry must be name:token or name:token:readonly",
                    ));
                };
                let role = match role {
                    None | Some("admin") => Role::Admin,
                    Some("readonly") => Role::ReadOnly,
                    Some(other) => {
                        return Err(SettingError::new(
                            "CONSOLE_OPERATORS",
                            format!("entry `{name}`: role `{other}` is not admin or readonly"),
                        ));
                    }
                };
                let valid_name =
                    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                if !valid_name || token.len() < MIN_SECRET_LEN {
                    return Err(SettingError::new(
                        "CONSOLE_OPERATORS",
                        format!(
                            "entry `{name}`: a name of letters, digits, _ or - and a token of at least {MIN_SECRET_LEN} characters"
                        ),
                    ));
                }
                if operators.iter().any(|o: &Operator| o.name == name) {
                    return Err(SettingError::new("CONSOLE_OPERATORS", format!("operator `{name}` is named twice")));
                }
                operators.push(Operator { name: name.to_owned(), role, digest: SecretDigest::of(token) });
            }
        }
        if operators.is_empty() {
            return Err(SettingError::new("CONSOLE_TOKEN", "is required (or CONSOLE_OPERATORS=name:token,...)"));
        }
        let replay_rate: u32 = env.parse("CONSOLE_REPLAY_RATE", 500)?;
        if replay_rate == 0 {
            return Err(SettingError::new("CONSOLE_REPLAY_RATE", "must be at least 1 (letters per second)"));
        }
        let session_key = match env.get("CONSOLE_SESSION_KEY") {
            Some(key) if key.len() >= 32 => SessionKey(key.as_bytes().to_vec()),
            Some(_) => return Err(SettingError::new("CONSOLE_SESSION_KEY", "must be at least 32 characters")),
            None => SessionKey(random_bytes(32).map_err(|e| {
                SettingError::new("CONSOLE_SESSION_KEY", format!("unset, and no random key could be made: {e}"))
            })?),
        };
        Ok(Self {
            addr: env.parse("CONSOLE_ADDR", SocketAddr::from(([127, 0, 0, 1], 8081)))?,
            redis: RedisSettings::from_env(env)?,
            operators: BearerSecrets::new(operators.into_iter().map(|op| (op.digest, op)).collect()),
            replay_rate,
            retention: jobs::settings::finished_retention(env)?,
            session_key,
            secure_cookies: env.flag("CONSOLE_SECURE_COOKIES", false)?,
            json_logs: env.get("LOG_FORMAT") == Some("json"),
            http: service::HttpLimits::from_env(env)?,
            suppression_cap: jobs::suppression::cap_from_env(env)?,
        })
    }

    /// The operator holding `token`, compared in constant time with every digest.
    pub fn operator(&self, token: &str) -> Option<&Operator> {
        self.operators.authenticate(token)
    }

    pub fn operator_named(&self, name: &str) -> Option<&Operator> {
        self.operators.iter().map(|(_, op)| op).find(|o| o.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operators_come_from_the_token_and_the_list() {
        let err = Config::from_env(&Env::default()).unwrap_err();
        assert!(err.to_string().starts_with("CONSOLE_TOKEN: is required"));
        let err = Config::from_env(&Env::from_pairs(&[("CONSOLE_OPERATORS", "ana")])).unwrap_err();
        assert!(err.to_string().starts_with("CONSOLE_OPERATORS: "));
        let err = Config::from_env(&Env::from_pairs(&[("CONSOLE_OPERATORS", "ana:0123456789abcdef:god")])).unwrap_err();
        assert!(err.to_string().contains("role `god`"), "{err}");
        let ok = Config::from_env(&Env::from_pairs(&[
            ("CONSOLE_TOKEN", "root-token-0123456789"),
            ("CONSOLE_OPERATORS", "ana:0123456789abcdef,bo:0123456789abcdeg:readonly"),
        ]))
        .unwrap();
        let names: Vec<(&str, Role)> = ok.operators.iter().map(|(_, o)| (o.name.as_str(), o.role)).collect();
        assert_eq!(names, [("admin", Role::Admin), ("ana", Role::Admin), ("bo", Role::ReadOnly)]);
        assert_eq!(ok.operator("0123456789abcdeg").map(|o| o.name.as_str()), Some("bo"));
        assert!(ok.operator("nope").is_none());
    }

    #[test]
    fn debug_never_shows_a_secret_setting() {
        let config = Config::from_env(&Env::from_pairs(&[
            ("CONSOLE_TOKEN", "s3cretpw-0123456789"),
            ("CONSOLE_SESSION_KEY", "s3cretpw-session-key-0123456789abcdef"),
            ("REDIS_URL", "redis://:s3cretpw@redis:6379"),
        ]))
        .unwrap();
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cretpw") && !shown.contains("115, 51, 99"), "{shown}");
    }
}

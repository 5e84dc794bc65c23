//! Re-running issue 13's reproductions against the built binaries, as an outsider would:
//! what the re-run found still open.

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{binary, namespace, redis_url};

/// A binary, its arguments and its environment.
type Run<'a> = (&'a str, &'a [&'a str], Vec<(&'a str, &'a str)>);

/// Runs a binary with `env` for at most 10 s; its exit code (None: still running, killed) and stderr.
fn run_briefly(name: &str, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut child = Command::new(binary(name))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    (code, stderr)
}

/// A malformed `DATABASE_URL` stopped neither the same way as every other bad setting: the API
/// logged a line, then printed `Error: DATABASE_URL: ...` (and, with `RUST_BACKTRACE=1`, some 70
/// lines of backtrace), exit 1; `producer-api migrate` printed an anyhow chain over four lines;
/// a worker that consumes neither `audit_log` nor `otp_sms` did not stop at all, and warned
/// "migrations not applied yet" every 5 s for ever. Each now stops at start with one line naming
/// the variable, exit 2, without the URL's password.
#[test]
fn a_malformed_database_url_stops_every_process_with_one_line_naming_it() {
    let redis = redis_url();
    let ns = namespace();
    for bad in ["postgres://u:SECRETPW@:bad", "postgres://u:SECRETPW@127.0.0.1:notaport/db"] {
        let common = [
            ("DATABASE_URL", bad),
            ("REDIS_URL", redis.as_str()),
            ("REDIS_NAMESPACE", ns.as_str()),
            ("RUST_BACKTRACE", "1"),
            ("RUST_LOG", "info"),
        ];
        let api = [("PRODUCER_API_KEYS", "shop:0123456789abcdef"), ("PRODUCER_ADDR", "127.0.0.1:0")];
        let worker = [("WORKER_KINDS", "email"), ("WORKER_METRICS_ADDR", "0"), ("WORKER_SCHEDULER", "false")];
        let runs: [Run; 3] = [
            ("producer-api", &[], [&common[..], &api[..]].concat()),
            ("producer-api", &["migrate"], common.to_vec()),
            ("worker", &[], [&common[..], &worker[..]].concat()),
        ];
        for (name, args, env) in runs {
            let (code, stderr) = run_briefly(name, args, &env);
            assert_eq!(code, Some(2), "{name} {args:?} with DATABASE_URL={bad}: {stderr}");
            assert_eq!(stderr.lines().count(), 1, "{name} {args:?}: {stderr}");
            assert!(stderr.starts_with(&format!("{name}: DATABASE_URL: ")), "{name} {args:?}: {stderr}");
            assert!(!stderr.contains("SECRETPW"), "{name} {args:?}: {stderr}");
        }
    }
}

//! R13 / R14: the store goes away under a running gateway while events stream in.
//!
//! - R13: a throwaway PostgreSQL cluster (made here with `initdb` + `pg_ctl` on a spare loopback
//!   port, so the shared test database is not touched) is restarted mid-stream.
//! - R14: the SQLite store lives on a small tmpfs that is filled up mid-stream (root ignores
//!   file permissions, so a full filesystem is what makes writes fail here), then freed.
//!
//! Every HTTP attempt is recorded (when it was sent and answered, its status, whether a 503 had
//! `Retry-After`), so the outage window can be judged: no 2xx may be answered while the store
//! cannot commit, callers get 503 + `Retry-After`, and intake works again soon after the store
//! returns. Afterwards every acknowledged event must be delivered exactly once.

use crate::common::*;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// One HTTP attempt of the recording sender.
#[derive(Debug, Clone)]
struct Attempt {
    sent: Instant,
    answered: Instant,
    /// None: no answer (connection error or client timeout).
    status: Option<u16>,
    retry_after: bool,
}

impl Attempt {
    fn ok(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

#[derive(Default)]
struct Record {
    attempts: Mutex<Vec<Attempt>>,
    acked: Mutex<Vec<u64>>,
}

/// Like [`produce`], but every attempt is recorded. A sender retries any non-2xx answer or
/// connection error with the same webhook-id (re-signed), backing off 100 ms doubling to 1 s,
/// for up to 120 s. Conversation c is sent by producer c % producers, one event at a time.
async fn stream(port: u16, conversations: u64, ids: Range<u64>, rate: u64, producers: u64) -> Arc<Record> {
    assert_eq!(conversations % producers, 0);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
    let url = format!("http://127.0.0.1:{port}/hooks/e2e");
    let secret = connect::webhook::WebhookSecret::parse(SECRET).unwrap();
    let record = Arc::new(Record::default());
    let start = Instant::now();
    let first = ids.start;
    let mut tasks = tokio::task::JoinSet::new();
    for p in 0..producers {
        let (http, url, secret, record, ids) = (http.clone(), url.clone(), secret.clone(), record.clone(), ids.clone());
        tasks.spawn(async move {
            for id in ids.filter(|id| id % producers == p) {
                tokio::time::sleep_until(start + Duration::from_secs_f64((id - first) as f64 / rate as f64)).await;
                let body = testkit::sender::envelope(
                    "item.created",
                    jiff::Timestamp::now(),
                    testkit::oracle::payload_for(id, conversations),
                );
                let bytes = serde_json::to_vec(&body).unwrap();
                let began = Instant::now();
                let mut backoff = Duration::from_millis(100);
                loop {
                    let headers = testkit::sender::signed_headers(
                        &secret,
                        &format!("evt-{id}"),
                        jiff::Timestamp::now().as_second(),
                        &bytes,
                    );
                    let sent = Instant::now();
                    let answer = http
                        .post(&url)
                        .headers(headers)
                        .header("content-type", "application/json")
                        .body(bytes.clone())
                        .send()
                        .await;
                    let (status, retry_after) = match &answer {
                        Ok(resp) => (Some(resp.status().as_u16()), resp.headers().contains_key("retry-after")),
                        Err(_) => (None, false),
                    };
                    let attempt = Attempt { sent, answered: Instant::now(), status, retry_after };
                    let ok = attempt.ok();
                    record.attempts.lock().unwrap().push(attempt);
                    if ok {
                        record.acked.lock().unwrap().push(id);
                        break;
                    }
                    if began.elapsed() > Duration::from_secs(120) {
                        eprintln!("producer {p}: gave up on evt-{id}, last answer {status:?}");
                        break;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    record.acked.lock().unwrap().sort_unstable();
    record
}

/// What the recording sender saw around one outage.
struct Summary {
    attempts: usize,
    /// Attempts both sent and answered inside the outage window, and how many got a 2xx.
    in_outage: usize,
    outage_2xx: usize,
    /// 503s answered from 1 s into the outage to the store's return. (Requests cut off by the
    /// failure itself are refused at once; these show that the gateway keeps answering.)
    outage_503: usize,
    /// The longest any attempt waited for its answer.
    slowest: Duration,
    refused_503: usize,
    without_retry_after: usize,
    /// Answers other than 2xx / 503, and attempts without an answer.
    other: usize,
    /// From the store's return to the first 2xx for a request sent after it.
    first_ok_after: Option<Duration>,
    /// From the store's return to the last refusal of all.
    last_refusal_after: Duration,
}

impl Summary {
    /// `from..until` is the window in which the store could not commit; `back` is when it could again.
    fn of(record: &Record, from: Instant, until: Instant, back: Instant) -> Summary {
        let attempts = record.attempts.lock().unwrap();
        let in_outage: Vec<&Attempt> = attempts.iter().filter(|a| a.sent >= from && a.answered <= until).collect();
        Summary {
            attempts: attempts.len(),
            in_outage: in_outage.len(),
            outage_2xx: in_outage.iter().filter(|a| a.ok()).count(),
            outage_503: attempts
                .iter()
                .filter(|a| a.status == Some(503) && a.answered >= from + Duration::from_secs(1) && a.answered <= back)
                .count(),
            slowest: attempts.iter().map(|a| a.answered - a.sent).max().unwrap_or_default(),
            refused_503: attempts.iter().filter(|a| a.status == Some(503)).count(),
            without_retry_after: attempts.iter().filter(|a| a.status == Some(503) && !a.retry_after).count(),
            other: attempts.iter().filter(|a| !a.ok() && a.status != Some(503)).count(),
            first_ok_after: attempts
                .iter()
                .filter(|a| a.sent >= back && a.ok())
                .map(|a| a.answered.saturating_duration_since(back))
                .min(),
            last_refusal_after: attempts
                .iter()
                .filter(|a| !a.ok())
                .map(|a| a.answered.saturating_duration_since(back))
                .max()
                .unwrap_or_default(),
        }
    }

    fn describe(&self) -> String {
        format!(
            "{} attempts; {} answered 503 during the outage; {} attempts sent and answered in it, {} of them 2xx; \
             {} 503s in all ({} without Retry-After); {} other answers or errors; slowest answer {:.2} s; first 2xx \
             {:.2} s after the store was back, last refusal {:.2} s after",
            self.attempts,
            self.outage_503,
            self.in_outage,
            self.outage_2xx,
            self.refused_503,
            self.without_retry_after,
            self.other,
            self.slowest.as_secs_f64(),
            self.first_ok_after.map(|d| d.as_secs_f64()).unwrap_or(f64::NAN),
            self.last_refusal_after.as_secs_f64(),
        )
    }

    /// Callers were refused with 503 + Retry-After while the store was gone, and intake worked
    /// again (and refusals stopped) within 10 s of its return.
    fn assert_refused_then_recovered(&self) {
        assert!(self.outage_503 > 0, "no caller got 503 while the store was gone");
        assert_eq!(self.without_retry_after, 0, "a 503 without Retry-After");
        assert_eq!(self.other, 0, "answers other than 2xx / 503, or no answer");
        assert!(self.slowest <= Duration::from_secs(5), "a caller waited {:?} for an answer", self.slowest);
        let recovered = self.first_ok_after.expect("no 2xx after the store returned");
        assert!(recovered <= Duration::from_secs(10), "intake recovered {recovered:?} after the store returned");
        assert!(
            self.last_refusal_after <= Duration::from_secs(10),
            "refusals went on {:?} after the store returned",
            self.last_refusal_after
        );
    }
}

/// Whether this process runs as root (the owner of `/proc/self` is the effective user).
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

/// `(uid, gid)` of a local user, from `/etc/passwd`.
fn local_user(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let line = passwd.lines().find(|line| line.split(':').next() == Some(name))?;
    let fields: Vec<&str> = line.split(':').collect();
    Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?))
}

/// The directory holding `initdb` and `pg_ctl`: `$DINGBRIDGE_PG_BIN`, the newest
/// `/usr/lib/postgresql/*/bin` (Debian), or a `PATH` entry.
fn postgres_bin_dir() -> Option<PathBuf> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Ok(dir) = std::env::var("DINGBRIDGE_PG_BIN") {
        return Some(PathBuf::from(dir)).filter(|d| has_tools(d));
    }
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, dir)| has_tools(dir))
        .collect();
    debian.sort();
    if let Some((_, dir)) = debian.pop() {
        return Some(dir);
    }
    std::env::split_paths(&std::env::var_os("PATH")?).find(|d| has_tools(d))
}

/// A throwaway PostgreSQL cluster with trust auth on a loopback port. As root, the tools run as
/// the `postgres` user (initdb refuses root). Stopped (by `pg_ctl`) when dropped.
struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    running: bool,
}

impl PgCluster {
    /// None (skip) when the tools are missing outside CI; panics in CI.
    fn create() -> Option<PgCluster> {
        let Some(bin) = postgres_bin_dir() else {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("initdb/pg_ctl not found and CI=true: R13 must run (set DINGBRIDGE_PG_BIN)");
            }
            eprintln!("skipping: initdb/pg_ctl not found (set DINGBRIDGE_PG_BIN)");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        if is_root() {
            let (uid, gid) = local_user("postgres").expect("running as root, but there is no `postgres` user");
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        let cluster = PgCluster { dir, bin, port: testkit::process::free_port().unwrap(), running: false };
        let data = cluster.data();
        let out = cluster
            .command("initdb")
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data)
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        Some(cluster)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn url(&self, schema: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres?schema={schema}", self.port)
    }

    /// A command for one of the cluster's tools, as `postgres` when we are root.
    fn command(&self, tool: &str) -> std::process::Command {
        let program = self.bin.join(tool);
        if is_root() {
            let mut cmd = std::process::Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(program);
            cmd
        } else {
            std::process::Command::new(program)
        }
    }

    fn pg_ctl(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = self.command("pg_ctl");
        cmd.arg("-D").arg(self.data()).args(args);
        cmd
    }

    /// `pg_ctl start -w`: returns once the server accepts connections.
    async fn start(&mut self) {
        let options = format!("-p {} -k {} -c listen_addresses=127.0.0.1", self.port, self.dir.path().display());
        let log = self.dir.path().join("postgres.log");
        let mut cmd = self.pg_ctl(&["-w", "-t", "60", "-o", &options, "-l"]);
        cmd.arg(&log).arg("start");
        let out = tokio::task::spawn_blocking(move || cmd.output()).await.unwrap().unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        self.running = true;
    }

    /// `pg_ctl stop -m <mode> -w`.
    async fn stop(&mut self, mode: &str) {
        let mut cmd = self.pg_ctl(&["-w", "-t", "60", "-m", mode, "stop"]);
        let out = tokio::task::spawn_blocking(move || cmd.output()).await.unwrap().unwrap();
        assert!(out.status.success(), "pg_ctl stop failed: {}", String::from_utf8_lossy(&out.stderr));
        self.running = false;
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.running {
            let _ = self.pg_ctl(&["-w", "-m", "immediate", "stop"]).output();
        }
    }
}

const R13_EVENTS: u64 = 5_000;
const R13_RATE: u64 = 250;
const R13_CONVERSATIONS: u64 = 1_000;
const R13_PRODUCERS: u64 = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r13_postgres_restart_mid_stream() {
    let Some(mut cluster) = PgCluster::create() else { return };
    let _serial = SERIAL.lock().await;
    cluster.start().await;
    let env = Env::new().await;
    let port = testkit::process::free_port().unwrap();
    let config = write_config(env.dir.path(), port, &Settings::default());
    let mut gateway = env.spawn(&config, &cluster.url("r13"));
    gateway.wait_healthy(&format!("http://127.0.0.1:{port}"), Duration::from_secs(30)).await.unwrap();

    // 5 000 events over 20 s; the database goes down 5 s in, for ~3 s.
    let streaming = tokio::spawn(stream(port, R13_CONVERSATIONS, 0..R13_EVENTS, R13_RATE, R13_PRODUCERS));
    tokio::time::sleep(Duration::from_secs(5)).await;
    cluster.stop("fast").await;
    let down = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let starting = Instant::now();
    cluster.start().await;
    let up = Instant::now();
    let record = streaming.await.unwrap();
    assert!(gateway.is_running(), "the gateway exited during the database outage:\n{}", gateway.stderr());

    let acked = record.acked.lock().unwrap().clone();
    let summary = Summary::of(&record, down, starting, up);
    eprintln!(
        "R13: {} acked of {R13_EVENTS}; outage {:.1} s (stop returned -> start called), pg_ctl start took {:.1} s; {}",
        acked.len(),
        (starting - down).as_secs_f64(),
        (up - starting).as_secs_f64(),
        summary.describe(),
    );
    assert_eq!(summary.outage_2xx, 0, "a 2xx while the database was down");
    summary.assert_refused_then_recovered();
    assert_eq!(acked.len() as u64, R13_EVENTS, "the sender gave up on some events");

    let issued: Vec<u64> = (0..R13_EVENTS).collect();
    let report = env.wait_delivered(R13_CONVERSATIONS, &issued, &acked, Duration::from_secs(120)).await;
    eprintln!("R13: {report:?}");
    assert_clean_except_duplicates(&report, 0);
    assert!(gateway.is_running(), "the gateway exited:\n{}", gateway.stderr());
    gateway.sigterm().unwrap();
    gateway.wait_exit(Duration::from_secs(15)).await;
    cluster.stop("fast").await;
}

/// A small tmpfs mounted on a temporary directory; lazily unmounted when dropped.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    /// None (skip) when this sandbox cannot mount outside CI; panics in CI.
    fn mount(size: &str) -> Option<SmallFs> {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "dingbridge-r14"])
            .arg(dir.path())
            .output();
        match out {
            Ok(out) if out.status.success() => Some(SmallFs { dir }),
            other => {
                let why = match other {
                    Ok(out) => String::from_utf8_lossy(&out.stderr).into_owned(),
                    Err(err) => err.to_string(),
                };
                if std::env::var("CI").as_deref() == Ok("true") {
                    panic!("cannot mount a small tmpfs and CI=true (R14 must run; it needs CAP_SYS_ADMIN): {why}");
                }
                eprintln!("skipping: cannot mount a small tmpfs (needs CAP_SYS_ADMIN): {why}");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Writes `filler` until its filesystem is full; returns the bytes written.
fn fill_until_full(filler: &Path) -> u64 {
    use std::io::Write;
    let mut file = std::fs::File::create(filler).unwrap();
    let mut written = 0u64;
    for chunk in [1 << 20, 4 << 10, 512] {
        let block = vec![0xA5u8; chunk];
        loop {
            match file.write(&block) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(err) if err.raw_os_error() == Some(28) => break, // ENOSPC
                Err(err) => panic!("filling {}: {err}", filler.display()),
            }
        }
    }
    let _ = file.sync_all();
    written
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

const R14_EVENTS: u64 = 5_000;
const R14_RATE: u64 = 250;
const R14_CONVERSATIONS: u64 = 1_000;
const R14_PRODUCERS: u64 = 50;
/// How long the filesystem stays full.
const R14_FULL_FOR: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r14_sqlite_disk_full_mid_stream() {
    let Some(fs) = SmallFs::mount("128m") else { return };
    let _serial = SERIAL.lock().await;
    let env = Env::new().await;
    let port = testkit::process::free_port().unwrap();
    let config = write_config(env.dir.path(), port, &Settings::default());
    let mut gateway = env.spawn(&config, &format!("sqlite://{}/r14.db", fs.path().display()));
    gateway.wait_healthy(&format!("http://127.0.0.1:{port}"), Duration::from_secs(30)).await.unwrap();

    // 5 000 events over 20 s; the filesystem is full from 5 s in, for 5 s.
    let streaming = tokio::spawn(stream(port, R14_CONVERSATIONS, 0..R14_EVENTS, R14_RATE, R14_PRODUCERS));
    tokio::time::sleep(Duration::from_secs(5)).await;
    let filler = fs.path().join("filler");
    let filler_path = filler.clone();
    let filled = tokio::task::spawn_blocking(move || fill_until_full(&filler_path)).await.unwrap();
    let full = Instant::now();
    tokio::time::sleep(R14_FULL_FOR).await;
    let freeing = Instant::now();
    std::fs::remove_file(&filler).unwrap();
    let freed = Instant::now();
    let record = streaming.await.unwrap();
    assert!(gateway.is_running(), "the gateway exited while the disk was full:\n{}", gateway.stderr());

    let acked = record.acked.lock().unwrap().clone();
    let summary = Summary::of(&record, full, freeing, freed);
    eprintln!(
        "R14: {} acked of {R14_EVENTS}; filler {} MB, full for {:.1} s; {}",
        acked.len(),
        filled >> 20,
        (freeing - full).as_secs_f64(),
        summary.describe(),
    );
    // SQLite may still commit while the disk is full, into WAL pages it already owns: a 2xx
    // then is a real commit, so here the oracle (every 2xx delivered) is the judge of "no 2xx
    // without a commit", not the time window.
    summary.assert_refused_then_recovered();
    assert_eq!(acked.len() as u64, R14_EVENTS, "the sender gave up on some events");
    // Failed closed and said so: the operator's alert (the error log beside the counter
    // `dingbridge_intake_commit_failures_total`).
    assert!(gateway.stderr().contains("Intake commit failed"), "no alert was raised:\n{}", gateway.stderr());

    let issued: Vec<u64> = (0..R14_EVENTS).collect();
    let report = env.wait_delivered(R14_CONVERSATIONS, &issued, &acked, Duration::from_secs(120)).await;
    eprintln!("R14: {report:?}");
    assert_clean_except_duplicates(&report, 0);
    assert!(gateway.is_running(), "the gateway exited:\n{}", gateway.stderr());
    gateway.sigterm().unwrap();
    gateway.wait_exit(Duration::from_secs(15)).await;
}

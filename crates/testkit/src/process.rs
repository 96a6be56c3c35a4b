//! Process supervisor for tests that drive the real binary (RELIABILITY.md §0): spawn with args
//! and env, capture stdout/stderr to files, wait for `/healthz`, SIGKILL/SIGTERM by pid, wait for
//! exit, restart with the same command line, and read peak RSS.
//!
//! The child is SIGKILLed and reaped on drop so a failing test never leaks a gateway holding a port
//! or a database. When the drop happens during a panic, the log directory is kept and its path
//! printed, because those logs are what explains the failure.

use connect::http::{HttpClient, HttpSettings};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;
use tokio::time::Instant;

/// How often exit and health are polled.
const POLL: Duration = Duration::from_millis(25);
/// Bytes of stderr quoted in errors.
const TAIL: usize = 4000;

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("could not start {program}: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("could not create the log file {path}: {source}")]
    Log { path: PathBuf, source: std::io::Error },
    #[error("could not send {signal} to pid {pid}: {source}")]
    Signal { pid: u32, signal: Signal, source: nix::Error },
    #[error("the process is not running (it exited with {status:?})")]
    NotRunning { status: Option<ExitStatus> },
    #[error("{url} did not answer 2xx within {after:?} (last: {last}); stderr tail:\n{stderr_tail}")]
    NotHealthy { url: String, after: Duration, last: String, stderr_tail: String },
    #[error("the process exited with {status} before becoming healthy; stderr tail:\n{stderr_tail}")]
    ExitedEarly { status: ExitStatus, stderr_tail: String },
    #[error("could not build the health-check client: {0}")]
    Client(#[from] connect::http::HttpClientError),
}

/// What to run; kept so [`Gateway::restart`] uses the same command line.
#[derive(Debug, Clone)]
pub struct GatewayCommand {
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    current_dir: Option<PathBuf>,
}

impl GatewayCommand {
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self { program: program.into(), args: Vec::new(), env: Vec::new(), current_dir: None }
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.current_dir = Some(dir.into());
        self
    }

    /// Starts the first run.
    pub fn spawn(self) -> Result<Gateway, ProcessError> {
        let logs = tempfile::Builder::new()
            .prefix("dingbridge-proc-")
            .tempdir()
            .map_err(|source| ProcessError::Log { path: std::env::temp_dir(), source })?;
        let mut gw = Gateway { command: self, logs: Some(logs), run: 0, child: None, last_status: None };
        gw.start()?;
        Ok(gw)
    }
}

/// A supervised child process.
#[derive(Debug)]
pub struct Gateway {
    command: GatewayCommand,
    logs: Option<tempfile::TempDir>,
    /// 1 for the first run, incremented by each restart; names the log files.
    run: u32,
    child: Option<Child>,
    last_status: Option<ExitStatus>,
}

impl Gateway {
    /// Shorthand for `GatewayCommand::new(program).args(args).spawn()`.
    pub fn spawn<I, S>(program: impl Into<PathBuf>, args: I) -> Result<Self, ProcessError>
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        GatewayCommand::new(program).args(args).spawn()
    }

    fn start(&mut self) -> Result<(), ProcessError> {
        self.run += 1;
        let stdout = self.create_log(&self.stdout_path())?;
        let stderr = self.create_log(&self.stderr_path())?;
        let c = &self.command;
        let mut cmd = Command::new(&c.program);
        cmd.args(&c.args).envs(c.env.iter().map(|(k, v)| (k, v))).stdin(Stdio::null()).stdout(stdout).stderr(stderr);
        if let Some(dir) = &c.current_dir {
            cmd.current_dir(dir);
        }
        let child =
            cmd.spawn().map_err(|source| ProcessError::Spawn { program: c.program.display().to_string(), source })?;
        self.child = Some(child);
        self.last_status = None;
        Ok(())
    }

    fn create_log(&self, path: &Path) -> Result<File, ProcessError> {
        File::create(path).map_err(|source| ProcessError::Log { path: path.to_owned(), source })
    }

    /// The directory holding every run's `stdout.<run>.log` / `stderr.<run>.log`.
    pub fn log_dir(&self) -> &Path {
        self.logs.as_ref().map_or_else(|| Path::new(""), |d| d.path())
    }

    /// Which run this is (1 = first start).
    pub fn run(&self) -> u32 {
        self.run
    }

    pub fn stdout_path(&self) -> PathBuf {
        self.log_dir().join(format!("stdout.{}.log", self.run))
    }

    pub fn stderr_path(&self) -> PathBuf {
        self.log_dir().join(format!("stderr.{}.log", self.run))
    }

    /// The current run's stdout so far (empty if unreadable).
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.stdout_path()).unwrap_or_default()
    }

    /// The current run's stderr so far (empty if unreadable).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.stderr_path()).unwrap_or_default()
    }

    fn stderr_tail(&self) -> String {
        let text = self.stderr();
        let start = text.len().saturating_sub(TAIL);
        // Step forward to a char boundary so slicing cannot panic on multi-byte text.
        let start = (start..=text.len()).find(|&i| text.is_char_boundary(i)).unwrap_or(text.len());
        text[start..].to_owned()
    }

    /// The pid of the current run, while it has not been reaped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the current run is still alive (reaps it if it has exited).
    pub fn is_running(&mut self) -> bool {
        self.poll_exit().is_none() && self.child.is_some()
    }

    /// The exit status if the current run has exited; reaps it.
    fn poll_exit(&mut self) -> Option<ExitStatus> {
        if let Some(status) = self.last_status {
            return Some(status);
        }
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                self.last_status = Some(status);
                Some(status)
            }
            _ => None,
        }
    }

    pub fn sigkill(&mut self) -> Result<(), ProcessError> {
        self.signal(Signal::SIGKILL)
    }

    pub fn sigterm(&mut self) -> Result<(), ProcessError> {
        self.signal(Signal::SIGTERM)
    }

    /// Sends `signal` to the current run by pid.
    pub fn signal(&mut self, signal: Signal) -> Result<(), ProcessError> {
        if let Some(status) = self.poll_exit() {
            return Err(ProcessError::NotRunning { status: Some(status) });
        }
        let pid = self.pid().ok_or(ProcessError::NotRunning { status: None })?;
        let raw = i32::try_from(pid).map_err(|_| ProcessError::Signal { pid, signal, source: nix::Error::EINVAL })?;
        kill(Pid::from_raw(raw), signal).map_err(|source| ProcessError::Signal { pid, signal, source })
    }

    /// Waits up to `timeout` for the current run to exit; `None` if it is still running.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.poll_exit() {
                return Some(status);
            }
            if self.child.is_none() || Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Polls `GET {base_url}/healthz` until it answers 2xx, failing fast if the process exits.
    /// `base_url` is the gateway's root, e.g. `http://127.0.0.1:8080`.
    pub async fn wait_healthy(&mut self, base_url: &str, timeout: Duration) -> Result<(), ProcessError> {
        let url = format!("{}/healthz", base_url.trim_end_matches('/'));
        // The shared client (no redirects), with a short timeout so one hung probe cannot eat the
        // whole wait.
        let client = HttpClient::new(HttpSettings {
            timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            user_agent: "dingbridge-testkit-probe".to_owned(),
            // The gateway under test runs on this machine.
            ..HttpSettings::loopback()
        })?;
        let started = Instant::now();
        loop {
            if let Some(status) = self.poll_exit() {
                return Err(ProcessError::ExitedEarly { status, stderr_tail: self.stderr_tail() });
            }
            let last = match url::Url::parse(&url) {
                Ok(probe) => match client.send(client.get(probe)).await {
                    Ok(resp) if resp.status().is_success() => return Ok(()),
                    Ok(resp) => format!("HTTP {}", resp.status().as_u16()),
                    Err(e) => e.to_string(),
                },
                Err(e) => format!("`{url}` is not a URL: {e}"),
            };
            if started.elapsed() >= timeout {
                return Err(ProcessError::NotHealthy { url, after: timeout, last, stderr_tail: self.stderr_tail() });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Starts a new run with the same command line. A run still alive is SIGKILLed and reaped
    /// first, so two instances never compete for the same port or store.
    pub fn restart(&mut self) -> Result<(), ProcessError> {
        self.kill_and_reap();
        self.start()
    }

    /// Peak resident set of the current run in KiB.
    pub fn peak_rss_kb(&self) -> Option<u64> {
        peak_rss_kb(self.pid()?)
    }

    fn kill_and_reap(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.last_status.is_none() {
                // Errors mean it already exited; wait() below reaps it either way.
                let _ = child.kill();
                if let Ok(status) = child.wait() {
                    self.last_status = Some(status);
                }
            }
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill_and_reap();
        if std::thread::panicking() {
            if let Some(dir) = self.logs.take() {
                let path = dir.keep();
                eprintln!("testkit: process logs kept in {}", path.display());
            }
        }
    }
}

/// `VmHWM` (peak resident set) of `pid` from `/proc/<pid>/status`, in KiB.
pub fn peak_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// A port that was free a moment ago on 127.0.0.1. Another process can take it before the caller
/// binds it; acceptable for tests, which then fail loudly on bind.
pub fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn sleeper() -> Gateway {
        Gateway::spawn("sleep", ["30"]).unwrap()
    }

    fn alive(pid: u32) -> bool {
        kill(Pid::from_raw(pid as i32), None).is_ok()
    }

    #[tokio::test]
    async fn sigterm_stops_the_process() {
        let mut gw = sleeper();
        assert!(gw.is_running());
        assert_eq!(gw.wait_exit(Duration::from_millis(100)).await, None, "sleep 30 is still running");
        gw.sigterm().unwrap();
        let status = gw.wait_exit(Duration::from_secs(5)).await.unwrap();
        assert_eq!(status.signal(), Some(Signal::SIGTERM as i32));
        assert!(!gw.is_running());
        assert!(matches!(gw.sigterm(), Err(ProcessError::NotRunning { .. })));
    }

    #[tokio::test]
    async fn sigkill_stops_the_process_and_restart_runs_it_again() {
        let mut gw = sleeper();
        let first = gw.pid().unwrap();
        gw.sigkill().unwrap();
        let status = gw.wait_exit(Duration::from_secs(5)).await.unwrap();
        assert_eq!(status.signal(), Some(Signal::SIGKILL as i32));
        gw.restart().unwrap();
        assert_eq!(gw.run(), 2);
        let second = gw.pid().unwrap();
        assert_ne!(first, second);
        assert!(gw.is_running());
        assert!(gw.stderr_path().ends_with("stderr.2.log"));
    }

    #[tokio::test]
    async fn restart_kills_a_live_run_first() {
        let mut gw = sleeper();
        let first = gw.pid().unwrap();
        gw.restart().unwrap();
        assert!(!alive(first), "the previous run must be gone");
        assert!(gw.is_running());
    }

    #[test]
    fn drop_kills_the_child() {
        let gw = sleeper();
        let pid = gw.pid().unwrap();
        assert!(alive(pid));
        drop(gw);
        assert!(!alive(pid), "pid {pid} survived drop");
    }

    #[tokio::test]
    async fn output_is_captured_and_env_and_args_are_passed() {
        let mut gw = GatewayCommand::new("sh")
            .args(["-c", "echo out:$GREETING; echo err:$1 >&2", "sh", "first-arg"])
            .env("GREETING", "hello")
            .spawn()
            .unwrap();
        let status = gw.wait_exit(Duration::from_secs(5)).await.unwrap();
        assert!(status.success());
        assert_eq!(gw.stdout(), "out:hello\n");
        assert_eq!(gw.stderr(), "err:first-arg\n");
    }

    #[tokio::test]
    async fn wait_healthy_fails_fast_when_the_process_exits() {
        let mut gw = Gateway::spawn("sh", ["-c", "echo boom >&2; exit 3"]).unwrap();
        let port = free_port().unwrap();
        let started = std::time::Instant::now();
        let err = gw.wait_healthy(&format!("http://127.0.0.1:{port}"), Duration::from_secs(10)).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        match err {
            ProcessError::ExitedEarly { status, stderr_tail } => {
                assert_eq!(status.code(), Some(3));
                assert!(stderr_tail.contains("boom"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn wait_healthy_polls_until_2xx() {
        use axum::routing::get;
        let port = free_port().unwrap();
        let mut gw = sleeper();
        let base = format!("http://127.0.0.1:{port}");
        // Start answering only after a delay, as a booting gateway would.
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
            let app = axum::Router::new().route("/healthz", get(|| async { "ok" }));
            axum::serve(listener, app).await.unwrap();
        });
        gw.wait_healthy(&base, Duration::from_secs(5)).await.unwrap();
    }

    #[tokio::test]
    async fn wait_healthy_times_out() {
        let mut gw = sleeper();
        let port = free_port().unwrap();
        let err = gw.wait_healthy(&format!("http://127.0.0.1:{port}/"), Duration::from_millis(200)).await.unwrap_err();
        assert!(matches!(err, ProcessError::NotHealthy { .. }), "{err:?}");
    }

    #[test]
    fn spawn_error_names_the_program() {
        let err = Gateway::spawn("/no/such/binary", Vec::<String>::new()).unwrap_err();
        assert!(err.to_string().contains("/no/such/binary"));
    }

    #[test]
    fn peak_rss_of_this_process_is_positive() {
        assert!(peak_rss_kb(std::process::id()).unwrap() > 0);
        assert!(sleeper().peak_rss_kb().unwrap() > 0);
        assert_eq!(peak_rss_kb(u32::MAX), None);
    }

    #[test]
    fn free_port_is_bindable() {
        let port = free_port().unwrap();
        assert!(port > 0);
        std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    }
}

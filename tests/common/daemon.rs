//! Running daemons in the background: their operations endpoint, waiting for a state, stopping them.

use std::io::{Read, Write};
use std::process::Child;
use std::time::{Duration, Instant};

use super::Env;

/// A daemon of `env` under its own instance name (its own copy of the configuration), its log in
/// `NAME.log` of the environment's directory.
pub fn start_instance(env: &Env, name: &str) -> Child {
    let text = std::fs::read_to_string(&env.config).expect("config");
    let config = env.write(&format!("{name}.yaml"), &format!("{text}instance: {name}\n"));
    std::process::Command::new(super::BIN)
        .arg("--config")
        .arg(&config)
        .arg("run")
        .env_remove("SMART_TASK_DATABASE_URL")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(env.path(&format!("{name}.log"))).expect("log file"))
        .spawn()
        .expect("spawn smart-taskd")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// Turns the endpoint of `env`'s daemon on, on `port` (the harness turns it off by default).
pub fn with_api(env: &Env, port: u16) {
    let text = std::fs::read_to_string(&env.config).expect("config");
    assert!(text.contains("  listen: null"));
    std::fs::write(&env.config, text.replace("  listen: null", &format!("  listen: \"127.0.0.1:{port}\"")))
        .expect("write config");
}

/// A GET on the endpoint: (status, body); status 0 when nothing answers.
pub fn get(port: u16, path: &str) -> (u16, String) {
    let (status, _, body) = request(port, path, "");
    (status, body)
}

/// A GET with extra header lines (each ending in `\r\n`): (status, head, body); status 0 when nothing answers.
pub fn request(port: u16, path: &str, headers: &str) -> (u16, String, String) {
    http(port, "GET", path, headers, "")
}

/// An HTTP/1.1 request with extra header lines (each ending in `\r\n`) and a body: (status, head, body);
/// status 0 when nothing answers.
pub fn http(port: u16, method: &str, path: &str, headers: &str, body: &str) -> (u16, String, String) {
    let (status, head, body) = http_bytes(port, method, path, headers, body.as_bytes());
    (status, head, String::from_utf8_lossy(&body).into_owned())
}

/// As [`http`], with a body of bytes each way (files, PDFs); (0, "", []) when nothing answers.
pub fn http_bytes(port: u16, method: &str, path: &str, headers: &str, body: &[u8]) -> (u16, String, Vec<u8>) {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return (0, String::new(), Vec::new()) };
    let _ = s.set_read_timeout(Some(Duration::from_secs(20)));
    let length =
        if body.is_empty() && method == "GET" { String::new() } else { format!("Content-Length: {}\r\n", body.len()) };
    let head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{length}{headers}\r\n");
    let _ = s.write_all(&[head.as_bytes(), body].concat());
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(out.len());
    let head = String::from_utf8_lossy(&out[..split]).into_owned();
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, head, out.get(split + 4..).unwrap_or_default().to_vec())
}

pub fn wait_for(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGTERM, then SIGKILL if the daemon has not stopped within 20 s.
pub fn stop(mut child: Child) {
    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
}

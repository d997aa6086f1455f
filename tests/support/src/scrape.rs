//! Reading a telemetry listener the way an operator's tools do: `curl`, and the
//! samples of the Prometheus text it returns.

use std::process::Command;
use std::time::{Duration, Instant};

/// `curl` `http://ADDR/PATH`: (status code, body). 0 when nothing answered.
pub fn curl(addr: &str, path: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-m", "5", "-w", "\n%{http_code}"])
        .arg(format!("http://{addr}{path}"))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// The value of one sample (`name{labels}` exactly as exposed), 0 when absent.
pub fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap_or(f64::NAN))
}

/// Scrapes `/metrics` until `series` is `want` (counters settle a moment after
/// the traffic), within 20 s; returns that scrape.
pub fn scrape_until(addr: &str, series: &str, want: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, text) = curl(addr, "/metrics");
        if code == 200 && sample(&text, series) == want {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never reached {want}; last:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

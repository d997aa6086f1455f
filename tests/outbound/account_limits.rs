//! Per-account limits end to end, with real relays and destination servers: an
//! account's `send_rate` spaces all its campaigns together (measured at the
//! destination), its `daily_quota` stops expansion at exactly the quota (the
//! rest waits, visible in `GET /api/v1/account`), and complaints past
//! `accounts.max_complaint_rate` (ARF reports through `smtpd`) pause the account
//! and its campaigns until `outbound account resume`. Also the config check that
//! `bounces.complaint_address` is not a VERP address.

use std::time::Duration;

use serde_json::{Value, json};

use crate::complaints::{FBL, arf};
use crate::support::{Dest, FAST, Relay, Smtpd, Store, Web, account, outbound, wait_for};

fn run(store: &Store, args: &[&str]) -> String {
    let out = outbound(store, args, None);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A single opt-in list of `n` subscribers `{prefix}{i}@a.test`, over the API.
fn list_of(web: &Web, token: &str, name: &str, prefix: &str, n: usize) -> i64 {
    let a = web.call(
        "POST",
        "/api/v1/lists",
        Some(token),
        Some(&json!({ "name": name })),
    );
    assert_eq!(a.status, 201, "{}", a.body);
    let id = a.json["id"].as_i64().unwrap();
    let subs: Vec<Value> = (0..n)
        .map(|i| json!({ "email": format!("{prefix}{i}@a.test") }))
        .collect();
    let a = web.call(
        "POST",
        &format!("/api/v1/lists/{id}/subscribers"),
        Some(token),
        Some(&Value::Array(subs)),
    );
    assert_eq!(a.json["added"], n, "{}", a.body);
    id
}

/// Creates and starts a campaign to `list`; its id.
fn campaign(web: &Web, token: &str, list: i64, extra: Value) -> i64 {
    let mut body = json!({
        "name": format!("c{list}"), "from": "news@press.test", "subject": "s",
        "text": "Hi", "lists": [list],
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    let a = web.call("POST", "/api/v1/campaigns", Some(token), Some(&body));
    assert_eq!(a.status, 201, "{}", a.body);
    let id = a.json["id"].as_i64().unwrap();
    let a = web.call(
        "POST",
        &format!("/api/v1/campaigns/{id}/start"),
        Some(token),
        None,
    );
    assert_eq!(a.status, 200, "{}", a.body);
    id
}

fn get(web: &Web, token: &str, path: &str) -> Value {
    let a = web.call("GET", path, Some(token), None);
    assert_eq!(a.status, 200, "{path}: {}", a.body);
    a.json
}

fn relay_config(extra: &str) -> String {
    format!("{FAST}\n[campaigns]\ninterval_ms = 100\n{extra}")
}

#[test]
fn the_account_rate_spaces_all_its_campaigns_together() {
    let store = Store::sqlite();
    let token = account(&store, "ann");
    let shown = run(&store, &["account", "limits", "ann", "--send-rate", "5"]);
    assert!(shown.contains("send_rate 5"), "{shown}");
    let web = Web::start(&store, "");
    assert_eq!(get(&web, &token, "/api/v1/account")["send_rate"], 5.0);
    let dest = Dest::start(&[]);
    let one = list_of(&web, &token, "one", "x", 8);
    let two = list_of(&web, &token, "two", "y", 8);
    // Each campaign alone would send all at once (no rate of its own).
    campaign(&web, &token, one, json!({}));
    campaign(&web, &token, two, json!({}));
    let _relay = Relay::start(
        &store,
        &relay_config(""),
        &["--transport", &format!("a.test={}", dest.addr)],
    );
    wait_for("16 delivered", Duration::from_secs(40), || {
        dest.recipients().len() >= 16
    });
    let mut times: Vec<f64> = dest
        .messages()
        .iter()
        .map(|m| m["time"].as_f64().unwrap())
        .collect();
    times.sort_by(f64::total_cmp);
    // 16 messages at 5/s: 15 intervals of 0.2 s (less claim jitter).
    let span = times[times.len() - 1] - times[0];
    assert!(span >= 2.6, "16 messages in {span:.2} s");
    // No second holds more than the rate (plus one for the poll's jitter).
    let most = times
        .iter()
        .map(|t| times.iter().filter(|u| **u >= *t && **u < *t + 1.0).count())
        .max()
        .unwrap();
    assert!(most <= 6, "{most} messages within one second: {times:?}");
    eprintln!("account rate 5/s: 16 messages in {span:.2} s, at most {most} in any second");
    assert_eq!(dest.recipients().len(), 16);
}

#[test]
fn the_daily_quota_sends_exactly_the_quota_and_the_rest_waits() {
    daily_quota(Store::sqlite());
}

#[test]
fn the_daily_quota_sends_exactly_the_quota_and_the_rest_waits_on_mariadb() {
    daily_quota(Store::mariadb());
}

fn daily_quota(store: Store) {
    let token = account(&store, "ann");
    run(&store, &["account", "limits", "ann", "--daily-quota", "5"]);
    let web = Web::start(&store, "");
    let dest = Dest::start(&[]);
    let list = list_of(&web, &token, "news", "q", 9);
    let id = campaign(&web, &token, list, json!({}));
    let _relay = Relay::start(
        &store,
        &relay_config(""),
        &["--transport", &format!("a.test={}", dest.addr)],
    );
    wait_for("5 delivered", Duration::from_secs(30), || {
        dest.recipients().len() >= 5
    });
    // Many runner ticks later: still exactly the quota.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(dest.recipients().len(), 5);
    let acc = get(&web, &token, "/api/v1/account");
    assert_eq!(acc["daily_quota"], 5, "{acc}");
    assert_eq!(acc["sent_today"], 5, "{acc}");
    assert_eq!(acc["quota_left"], 0, "{acc}");
    assert_eq!(acc["state"], "active");
    // Slowed, not failed: the campaign runs on, 5 of 9 queued.
    let c = get(&web, &token, &format!("/api/v1/campaigns/{id}"));
    assert_eq!(c["state"], "running", "{c}");
    assert_eq!(c["recipients"], 5, "{c}");
    // A higher quota lets the rest go the same day.
    run(
        &store,
        &["account", "limits", "ann", "--daily-quota", "none"],
    );
    wait_for("all 9", Duration::from_secs(30), || {
        dest.recipients().len() >= 9
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(dest.recipients().len(), 9);
}

const VERP_KEY: &str = "0123456789abcdef-limits-key";

#[test]
fn complaints_past_the_threshold_pause_the_account_until_an_admin_resumes_it() {
    let store = Store::sqlite();
    let token = account(&store, "ann");
    let smtpd = Smtpd::start(&store, &["bounce.test"]);
    let dest = Dest::start(&[]);
    let web = Web::start(&store, "");
    let list = list_of(&web, &token, "news", "r", 16);
    let id = campaign(&web, &token, list, json!({ "messages_per_second": 3 }));
    let fast = FAST.replace("[bounces]\ndsn = false\n", "");
    let cfg = format!(
        "{fast}\n[campaigns]\ninterval_ms = 100\n\
         [bounces]\ndsn = false\ndomain = \"bounce.test\"\nkey = \"{VERP_KEY}\"\n\
         intake_interval_ms = 200\nintake_settle_ms = 300\ncomplaint_address = \"{FBL}\"\n\
         [accounts]\nmin_sample = 4\nmax_complaint_rate = 0.2\ncheck_interval_ms = 100\n"
    );
    let _relay = Relay::start(
        &store,
        &cfg,
        &["--transport", &format!("a.test={}", dest.addr)],
    );
    wait_for("4 delivered", Duration::from_secs(30), || {
        dest.recipients().len() >= 4
    });
    assert_eq!(get(&web, &token, "/api/v1/account")["state"], "active");
    // Two recipients complain: 2 of at least 4 is over 20 %.
    for m in dest.messages().iter().take(2) {
        let path = m["mail_from"].as_str().unwrap();
        let rcpt = m["rcpt_tos"][0].as_str().unwrap();
        smtpd.send("fbl@isp.test", FBL, &arf(path, rcpt));
    }
    let mut c = Value::Null;
    wait_for("the campaign paused", Duration::from_secs(20), || {
        c = get(&web, &token, &format!("/api/v1/campaigns/{id}"));
        c["state"] == "paused"
    });
    let reason = c["paused_reason"].as_str().unwrap().to_owned();
    assert!(reason.starts_with("complaint rate "), "{reason}");
    assert!(
        reason.contains("over 0.2%") || reason.contains("over 20%"),
        "{reason}"
    );
    let acc = get(&web, &token, "/api/v1/account");
    assert_eq!(acc["state"], "paused", "{acc}");
    assert_eq!(acc["paused_reason"], reason.as_str());
    assert!(acc["paused_at"].is_string(), "{acc}");
    // The first complaint may be enough (1 of 4 is 25 %); both count.
    let mut acc = acc;
    wait_for("both complaints counted", Duration::from_secs(10), || {
        acc = get(&web, &token, "/api/v1/account");
        acc["complaints"] == 2
    });
    assert_eq!(acc["window"]["complained"], 2, "{acc}");
    assert!(
        acc["window"]["complaint_rate"].as_f64().unwrap() > 0.2,
        "{acc}"
    );
    // Sending stops (what was in flight at the pause finishes).
    std::thread::sleep(Duration::from_millis(800));
    let at_pause = dest.recipients().len();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(dest.recipients().len(), at_pause, "sent while paused");
    assert!(at_pause < 16);
    // A resume by the account itself is undone by the runner while the account
    // is paused.
    let a = web.call(
        "POST",
        &format!("/api/v1/campaigns/{id}/resume"),
        Some(&token),
        None,
    );
    assert_eq!(a.status, 200, "{}", a.body);
    wait_for("paused again", Duration::from_secs(10), || {
        get(&web, &token, &format!("/api/v1/campaigns/{id}"))["state"] == "paused"
    });
    // Not an admin: the API refuses to lift it.
    let a = web.call("POST", "/api/v1/accounts/ann/resume", Some(&token), None);
    assert_eq!(a.status, 403, "{}", a.body);
    // The operator lifts it; the sample starts again, and the campaign finishes.
    let out = run(&store, &["account", "resume", "ann"]);
    assert!(out.contains("resumed"), "{out}");
    let acc = get(&web, &token, "/api/v1/account");
    assert_eq!(acc["state"], "active", "{acc}");
    assert_eq!(acc["paused_reason"], Value::Null);
    wait_for("all 16", Duration::from_secs(30), || {
        dest.recipients().len() >= 16
    });
    let c = get(&web, &token, &format!("/api/v1/campaigns/{id}"));
    assert_eq!(c["paused_reason"], Value::Null, "{c}");
    let again = outbound(&store, &["account", "resume", "ann"], None);
    assert!(!again.status.success(), "resume of an active account");
}

#[test]
fn a_complaint_address_equal_to_a_verp_address_is_a_config_error() {
    let store = Store::sqlite();
    let dir = tempfile::tempdir().unwrap();
    for (address, ok) in [
        ("bounces@bounce.test", false),
        ("Bounces+x@BOUNCE.test", false),
        ("unsubscribe@bounce.test", false),
        ("fbl@bounce.test", true),
        ("bounces@other.test", true),
    ] {
        let cfg = dir.path().join("c.toml");
        std::fs::write(
            &cfg,
            format!(
                "[bounces]\ndomain = \"bounce.test\"\nkey = \"{VERP_KEY}\"\ncomplaint_address = \"{address}\"\n"
            ),
        )
        .unwrap();
        let out = outbound(&store, &["-c", cfg.to_str().unwrap(), "stats"], None);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.success(), ok, "{address}: {err}");
        if !ok {
            assert!(
                err.contains("bounces.complaint_address"),
                "{address}: {err}"
            );
        }
    }
}

#[test]
fn the_console_shows_a_pause_and_only_an_admin_lifts_it() {
    use crate::console::{Client, csrf, passwd};
    let store = Store::sqlite();
    account(&store, "ann");
    let out = outbound(&store, &["account", "add", "root", "--admin"], None);
    assert!(out.status.success());
    for name in ["ann", "root"] {
        assert!(
            passwd(&store, name, "a long enough password")
                .status
                .success()
        );
    }
    store.exec(
        "UPDATE accounts SET paused_reason = 'complaint rate 1% over 0.3% (10 of 1000) at <now>', \
         paused_at = '2026-12-02 16:00:00.000' WHERE name = 'ann'",
    );
    let web = Web::start(&store, "");
    let dir = tempfile::tempdir().unwrap();
    let ann = Client::new(&web, dir.path(), "ann");
    assert_eq!(ann.login("ann", "a long enough password").status, 303);
    let dash = ann.get("/");
    assert!(dash.body.contains("id=\"account-paused\""), "{}", dash.body);
    // Escaped like every user-visible text.
    assert!(dash.body.contains("at &lt;now&gt;"), "{}", dash.body);
    let token = csrf(&dash.body);
    assert_eq!(ann.post("/accounts/1/resume", &token, &[]).status, 403);
    let root = Client::new(&web, dir.path(), "root");
    assert_eq!(root.login("root", "a long enough password").status, 303);
    let page = root.get("/accounts");
    assert!(
        page.body.contains("paused: complaint rate 1%"),
        "{}",
        page.body
    );
    let ann_id = store.count("SELECT id FROM accounts WHERE name = 'ann'");
    let done = root.post(
        &format!("/accounts/{ann_id}/resume"),
        &csrf(&page.body),
        &[],
    );
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(done.body.contains("resumed"), "{}", done.body);
    assert_eq!(
        store.count("SELECT COUNT(*) FROM accounts WHERE paused_reason IS NOT NULL"),
        0
    );
}

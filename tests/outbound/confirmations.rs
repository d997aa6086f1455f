//! Double opt-in confirmations end to end: subscribers added over the HTTP API to
//! a `double` list get a confirmation message, delivered by a real relay to a
//! real destination server; its `/c/<token>` link is opened with curl (GET shows
//! a button and confirms nothing, POST confirms); the throttles (per address,
//! per client IP, per recipient domain) answer 429 past their limit and the
//! destination receives exactly the allowed number; the counts hold across two
//! `outbound web` processes sharing the database.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Dest, FAST, Relay, Store, Web, account, outbound, wait_for};

const KEY: &str = "0123456789abcdef-confirm-key";
/// Recipient domains the relay sends to the destination.
const DOMAINS: &[&str] = &["a.test", "b.test", "c.test", "d.test", "e.test", "f.test"];

/// The web's config: a tracking key, http links, a sender, `limits` (TOML lines).
fn web_config(limits: &str) -> String {
    format!(
        "[tracking]\nkey = \"{KEY}\"\nscheme = \"http\"\n\
         [confirmations]\nsender = \"lists@press.test\"\n{limits}\n"
    )
}

struct Setup {
    store: Store,
    dest: Dest,
    _relay: Relay,
    token: String,
    list: i64,
}

/// A store, an account with a tracking domain and a double opt-in list, a
/// destination and a relay sending every test domain there.
fn setup() -> Setup {
    setup_on(Store::sqlite())
}

fn setup_on(store: Store) -> Setup {
    let token = account(&store, "ann");
    let out = outbound(
        &store,
        &["account", "domain", "add", "ann", "links.press.test"],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dest = Dest::start(&[]);
    let mut args: Vec<String> = Vec::new();
    for d in DOMAINS {
        args.push("--transport".into());
        args.push(format!("{d}={}", dest.addr));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let relay = Relay::start(&store, FAST, &args);
    Setup {
        store,
        dest,
        _relay: relay,
        token,
        list: 0,
    }
}

fn create_list(web: &Web, token: &str) -> i64 {
    let a = web.call(
        "POST",
        "/api/v1/lists",
        Some(token),
        Some(&json!({ "name": "news", "opt_in": "double" })),
    );
    assert_eq!(a.status, 201, "{}", a.body);
    a.json["id"].as_i64().unwrap()
}

fn add(web: &Web, token: &str, list: i64, emails: &[&str]) -> crate::support::Answer {
    let body: Vec<Value> = emails.iter().map(|e| json!({ "email": e })).collect();
    web.call(
        "POST",
        &format!("/api/v1/lists/{list}/subscribers"),
        Some(token),
        Some(&Value::Array(body)),
    )
}

/// The confirm token of the message delivered to `rcpt` (the n-th one).
fn token_in(dest: &Dest, rcpt: &str, n: usize) -> String {
    let msgs: Vec<Value> = dest
        .messages()
        .into_iter()
        .filter(|m| m["rcpt_tos"][0] == rcpt)
        .collect();
    let data = msgs[n]["data"].as_str().unwrap().to_owned();
    let at =
        data.find("http://links.press.test/c/").expect(&data) + "http://links.press.test/c/".len();
    data[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

fn member_status(store: &Store, email: &str) -> String {
    store.column(&format!(
        "SELECT m.status FROM list_members m JOIN subscribers s ON s.id = m.subscriber_id \
         WHERE s.email_key = '{email}'"
    ))[0]
        .clone()
}

/// curl with the response headers: (status, headers and body).
fn curl_headers(web: &Web, method: &str, path: &str, token: &str, body: &str) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30", "-i", "-X", method])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            body,
        ])
        .arg(web.url(path))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn delivered_to(dest: &Dest, rcpt: &str) -> usize {
    dest.recipients().iter().filter(|r| *r == rcpt).count()
}

#[test]
fn a_confirmation_arrives_and_only_its_post_confirms() {
    let mut s = setup();
    let web = Web::start(&s.store, &web_config(""));
    s.list = create_list(&web, &s.token);
    let a = add(&web, &s.token, s.list, &["Ann@a.test"]);
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json["added"], 1);
    assert_eq!(a.json["confirmations"], 1);
    wait_for("the confirmation", Duration::from_secs(20), || {
        delivered_to(&s.dest, "Ann@a.test") == 1
    });
    let m = &s.dest.messages()[0];
    assert_eq!(m["mail_from"], "lists@press.test");
    let data = m["data"].as_str().unwrap();
    assert!(
        data.contains("From: <lists@press.test>") || data.contains("From: lists@press.test"),
        "{data}"
    );
    assert!(
        data.contains("Subject: Please confirm your subscription to news"),
        "{data}"
    );
    let token = token_in(&s.dest, "Ann@a.test", 0);
    assert!(token.len() > 10, "{token}");
    assert_eq!(member_status(&s.store, "ann@a.test"), "unconfirmed");

    // GET shows the button and confirms nothing (a scanner's prefetch).
    let page = web.call("GET", &format!("/c/{token}"), None, None);
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<button"), "{}", page.body);
    assert!(page.body.contains("Ann@a.test"));
    let page = web.call("GET", &format!("/c/{token}"), None, None);
    assert_eq!(page.status, 200);
    assert_eq!(member_status(&s.store, "ann@a.test"), "unconfirmed");

    // A tampered token is a 404, and changes nothing.
    let mut bad = token.clone().into_bytes();
    let last = bad.len() - 2;
    bad[last] = if bad[last] == b'A' { b'B' } else { b'A' };
    let bad = String::from_utf8(bad).unwrap();
    for method in ["GET", "POST"] {
        let a = web.call(method, &format!("/c/{bad}"), None, None);
        assert_eq!(a.status, 404, "{method} {bad}");
    }
    assert_eq!(web.call("POST", "/c/garbage!", None, None).status, 404);
    assert_eq!(member_status(&s.store, "ann@a.test"), "unconfirmed");

    // POST confirms, with the time; a second POST or GET says it is done.
    let a = web.call("POST", &format!("/c/{token}"), None, None);
    assert_eq!(a.status, 200);
    assert!(a.body.contains("confirmed"), "{}", a.body);
    assert_eq!(member_status(&s.store, "ann@a.test"), "confirmed");
    assert_eq!(
        s.store
            .count("SELECT COUNT(*) FROM list_members WHERE confirmed_at IS NOT NULL"),
        1
    );
    for method in ["GET", "POST"] {
        let a = web.call(method, &format!("/c/{token}"), None, None);
        assert_eq!(a.status, 200);
        assert!(a.body.contains("Already confirmed"), "{method}: {}", a.body);
    }

    // A confirmed member added again gets no second message.
    let a = add(&web, &s.token, s.list, &["ann@a.test"]);
    assert_eq!(a.json["confirmations"], 0, "{}", a.body);

    // An unsubscribed member is never confirmed again by its old link, nor re-sent.
    let b = add(&web, &s.token, s.list, &["bob@b.test"]);
    assert_eq!(b.json["confirmations"], 1);
    wait_for("bob's confirmation", Duration::from_secs(20), || {
        delivered_to(&s.dest, "bob@b.test") == 1
    });
    let bob = token_in(&s.dest, "bob@b.test", 0);
    s.store.exec(
        "UPDATE list_members SET status = 'unsubscribed' WHERE subscriber_id = \
                  (SELECT id FROM subscribers WHERE email_key = 'bob@b.test')",
    );
    let a = web.call("POST", &format!("/c/{bob}"), None, None);
    assert_eq!(a.status, 200);
    assert!(a.body.contains("Not confirmed"), "{}", a.body);
    assert_eq!(member_status(&s.store, "bob@b.test"), "unsubscribed");
    assert_eq!(
        add(&web, &s.token, s.list, &["bob@b.test"]).json["confirmations"],
        0
    );

    // Re-adding an unconfirmed address sends again.
    let c = add(&web, &s.token, s.list, &["cy@c.test"]);
    assert_eq!(c.json["confirmations"], 1);
    let c = add(&web, &s.token, s.list, &["cy@c.test"]);
    assert_eq!(c.json["confirmations"], 1);
    wait_for("two for cy", Duration::from_secs(20), || {
        delivered_to(&s.dest, "cy@c.test") == 2
    });
    // Single opt-in lists send nothing.
    let single = web.call(
        "POST",
        "/api/v1/lists",
        Some(&s.token),
        Some(&json!({ "name": "open", "opt_in": "single" })),
    );
    let single = single.json["id"].as_i64().unwrap();
    assert_eq!(
        add(&web, &s.token, single, &["dee@d.test"]).json["confirmations"],
        0
    );
}

#[test]
fn without_a_sender_members_are_added_and_the_answer_says_why_none_was_sent() {
    let store = Store::sqlite();
    let token = account(&store, "ann");
    let web = Web::start(&store, &format!("[tracking]\nkey = \"{KEY}\"\n"));
    let list = create_list(&web, &token);
    let a = add(&web, &token, list, &["ann@a.test"]);
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json["confirmations"], 0);
    assert!(
        a.json["confirmations_skipped"]
            .as_str()
            .unwrap()
            .contains("sender"),
        "{}",
        a.body
    );
    assert_eq!(store.count("SELECT COUNT(*) FROM outbound_queue"), 0);
}

/// N allowed, N+1 a 429 naming the limit with Retry-After, exactly N delivered.
#[test]
fn the_per_address_throttle_allows_n_a_day() {
    let mut s = setup();
    let web = Web::start(&s.store, &web_config("per_address_per_day = 2"));
    s.list = create_list(&web, &s.token);
    for _ in 0..2 {
        assert_eq!(add(&web, &s.token, s.list, &["ann@a.test"]).status, 200);
    }
    let raw = curl_headers(
        &web,
        "POST",
        &format!("/api/v1/lists/{}/subscribers", s.list),
        &s.token,
        r#"[{"email":"ANN@a.test"}]"#,
    );
    assert!(raw.starts_with("HTTP/1.1 429"), "{raw}");
    assert!(raw.to_ascii_lowercase().contains("retry-after: "), "{raw}");
    assert!(raw.contains("confirmations.per_address_per_day"), "{raw}");
    // Another address is not throttled by ann's count.
    assert_eq!(add(&web, &s.token, s.list, &["bob@a.test"]).status, 200);
    wait_for("three delivered", Duration::from_secs(20), || {
        s.dest.recipients().len() >= 3
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(delivered_to(&s.dest, "ann@a.test"), 2);
    assert_eq!(s.dest.recipients().len(), 3);
}

#[test]
fn the_per_domain_throttle_allows_n_a_minute_and_a_429_stores_nothing() {
    let mut s = setup();
    let web = Web::start(&s.store, &web_config("per_domain_per_minute = 3"));
    s.list = create_list(&web, &s.token);
    for u in ["u1", "u2", "u3"] {
        assert_eq!(
            add(&web, &s.token, s.list, &[&format!("{u}@b.test")]).status,
            200
        );
    }
    let a = add(&web, &s.token, s.list, &["u4@b.test"]);
    assert_eq!(a.status, 429, "{}", a.body);
    assert!(
        a.json["error"]
            .as_str()
            .unwrap()
            .contains("confirmations.per_domain_per_minute")
    );
    // Nothing of the refused request stays: no member, no queue row.
    assert_eq!(
        s.store
            .count("SELECT COUNT(*) FROM subscribers WHERE email_key = 'u4@b.test'"),
        0
    );
    assert_eq!(s.store.count("SELECT COUNT(*) FROM outbound_queue"), 3);
    // Another domain is not held back.
    assert_eq!(add(&web, &s.token, s.list, &["u4@c.test"]).status, 200);
    wait_for("four delivered", Duration::from_secs(20), || {
        s.dest.recipients().len() >= 4
    });
    std::thread::sleep(Duration::from_secs(2));
    let to_b = s
        .dest
        .recipients()
        .iter()
        .filter(|r| r.ends_with("@b.test"))
        .count();
    assert_eq!(to_b, 3);
}

#[test]
fn the_per_ip_throttle_is_shared_by_two_web_processes() {
    per_ip_shared(setup());
}

#[test]
fn the_per_ip_throttle_is_shared_by_two_web_processes_on_mariadb() {
    per_ip_shared(setup_on(Store::mariadb()));
}

fn per_ip_shared(mut s: Setup) {
    let cfg = web_config("per_ip_per_hour = 4");
    let one = Web::start(&s.store, &cfg);
    let two = Web::start(&s.store, &cfg);
    s.list = create_list(&one, &s.token);
    let mut statuses = Vec::new();
    for (i, d) in DOMAINS.iter().enumerate() {
        let web = if i % 2 == 0 { &one } else { &two };
        statuses.push(add(web, &s.token, s.list, &[&format!("p{i}@{d}")]).status);
    }
    assert_eq!(statuses, [200, 200, 200, 200, 429, 429]);
    let a = add(&two, &s.token, s.list, &["late@a.test"]);
    assert!(
        a.json["error"]
            .as_str()
            .unwrap()
            .contains("confirmations.per_ip_per_hour"),
        "{}",
        a.body
    );
    wait_for("four delivered", Duration::from_secs(20), || {
        s.dest.recipients().len() >= 4
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(s.dest.recipients().len(), 4);
    assert_eq!(s.store.count("SELECT COUNT(*) FROM outbound_queue"), 4);
}

#[test]
fn the_console_form_sends_a_confirmation_and_shows_a_throttle() {
    use crate::console::{Client, csrf, passwd};
    let mut s = setup();
    assert!(
        passwd(&s.store, "ann", "a long enough password")
            .status
            .success()
    );
    let web = Web::start(&s.store, &web_config("per_ip_per_hour = 1"));
    s.list = create_list(&web, &s.token);
    let dir = tempfile::tempdir().unwrap();
    let browser = Client::new(&web, dir.path(), "ann");
    assert_eq!(browser.login("ann", "a long enough password").status, 303);
    let path = format!("/lists/{}", s.list);
    let token = csrf(&browser.get(&path).body);
    let sub = format!("/lists/{}/subscribers", s.list);
    let first = browser.post(&sub, &token, &[("email", "one@a.test")]);
    assert_eq!(first.status, 303, "{}", first.body);
    let second = browser.post(&sub, &token, &[("email", "two@a.test")]);
    assert_eq!(second.status, 429, "{}", second.body);
    assert!(
        second.body.contains("confirmations.per_ip_per_hour"),
        "{}",
        second.body
    );
    wait_for("the confirmation", Duration::from_secs(20), || {
        delivered_to(&s.dest, "one@a.test") == 1
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(s.dest.recipients(), ["one@a.test"]);
    assert_eq!(member_status(&s.store, "one@a.test"), "unconfirmed");
}

/// A list made without a sender gets one later (PATCH), and its next
/// confirmation goes out from it; the CLI sets and clears it too.
#[test]
fn a_lists_sender_can_be_set_after_creation_over_the_api_and_the_cli() {
    let mut s = setup();
    let web = Web::start(
        &s.store,
        &format!("[tracking]\nkey = \"{KEY}\"\nscheme = \"http\"\n"),
    );
    s.list = create_list(&web, &s.token);
    let a = add(&web, &s.token, s.list, &["ann@a.test"]);
    assert_eq!(a.json["confirmations"], 0, "{}", a.body);
    let path = format!("/api/v1/lists/{}", s.list);
    let patch = |body: Value, token: &str| web.call("PATCH", &path, Some(token), Some(&body));

    // Field errors name the field; nothing changes.
    let bad = patch(json!({ "sender": "not an address" }), &s.token);
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.body.contains("sender"), "{}", bad.body);
    let bad = patch(json!({ "sendr": "x@press.test" }), &s.token);
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.body.contains("sendr"), "{}", bad.body);
    assert_eq!(patch(json!({}), &s.token).status, 400);
    // Another account's list is a 404, like none at all.
    let other = account(&s.store, "bob");
    assert_eq!(
        patch(json!({ "sender": "x@press.test" }), &other).status,
        404
    );
    // A name another list of the account has is a 409.
    let second = web.call(
        "POST",
        "/api/v1/lists",
        Some(&s.token),
        Some(&json!({ "name": "digest" })),
    );
    assert_eq!(second.status, 201, "{}", second.body);
    assert_eq!(patch(json!({ "name": "digest" }), &s.token).status, 409);

    let ok = patch(
        json!({ "sender": "news@press.test", "name": "News" }),
        &s.token,
    );
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.json["sender"], "news@press.test");
    assert_eq!(ok.json["name"], "News");
    let a = add(&web, &s.token, s.list, &["bea@b.test"]);
    assert_eq!(a.json["confirmations"], 1, "{}", a.body);
    wait_for("the confirmation", Duration::from_secs(20), || {
        delivered_to(&s.dest, "bea@b.test") == 1
    });
    let m = s
        .dest
        .messages()
        .into_iter()
        .find(|m| m["rcpt_tos"].to_string().contains("bea@b.test"))
        .unwrap();
    assert_eq!(m["mail_from"], "news@press.test", "{m}");

    // The CLI: a bad address is exit 2 naming the flag; set, then clear.
    let list = s.list.to_string();
    let out = outbound(
        &s.store,
        &["list", "update", &list, "--sender", "nope"],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--sender"));
    let out = outbound(&s.store, &["list", "update", &list], None);
    assert_eq!(out.status.code(), Some(2));
    let out = outbound(&s.store, &["list", "update", &list, "--no-sender"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = web.call("GET", &path, Some(&s.token), None);
    assert_eq!(shown.json["sender"], Value::Null, "{}", shown.body);
    let out = outbound(
        &s.store,
        &[
            "list",
            "create",
            "--account",
            "ann",
            "--sender",
            "x@press.test",
            "weekly",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let shown = web.call("GET", &format!("/api/v1/lists/{id}"), Some(&s.token), None);
    assert_eq!(shown.json["sender"], "x@press.test", "{}", shown.body);
}

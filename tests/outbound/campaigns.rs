//! Campaigns end to end: created and driven over the HTTP API (`outbound web`)
//! and the CLI, expanded and delivered by real relays to real destination
//! servers. Lists and subscribers are made with SQL here, so these tests do not
//! depend on the lists API.

use std::collections::HashMap;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{
    Dest, FAST, Relay, Store, Web, account, enqueue, message, outbound, wait_for,
};

/// FAST plus a quick campaign runner.
fn config(extra: &str) -> String {
    format!("{FAST}\n[campaigns]\ninterval_ms = 100\n{extra}")
}

fn account_id(store: &Store, name: &str) -> i64 {
    store.count(&format!("SELECT id FROM accounts WHERE name = '{name}'"))
}

fn list(store: &Store, account: i64, name: &str, opt_in: &str) -> i64 {
    store.exec(&format!(
        "INSERT INTO lists (account_id, name, opt_in) VALUES ({account}, '{name}', '{opt_in}')"
    ));
    store.count(&format!(
        "SELECT id FROM lists WHERE account_id = {account} AND name = '{name}'"
    ))
}

fn subscriber(
    store: &Store,
    account: i64,
    email: &str,
    name: &str,
    attrs: &str,
    status: &str,
) -> i64 {
    store.exec(&format!(
        "INSERT INTO subscribers (account_id, email, email_key, name, attributes, status) \
         VALUES ({account}, '{email}', '{}', '{name}', '{attrs}', '{status}')",
        email.to_ascii_lowercase()
    ));
    store.count(&format!(
        "SELECT id FROM subscribers WHERE account_id = {account} AND email_key = '{}'",
        email.to_ascii_lowercase()
    ))
}

fn member(store: &Store, list: i64, subscriber: i64, status: &str) {
    store.exec(&format!(
        "INSERT INTO list_members (list_id, subscriber_id, status) VALUES ({list}, {subscriber}, '{status}')"
    ));
}

/// `POST /api/v1/campaigns`; the new id.
fn create(web: &Web, token: &str, body: &Value) -> i64 {
    let a = web.call("POST", "/api/v1/campaigns", Some(token), Some(body));
    assert_eq!(a.status, 201, "{}", a.body);
    a.json["id"].as_i64().unwrap()
}

fn act(web: &Web, token: &str, id: i64, action: &str) -> Value {
    let a = web.call(
        "POST",
        &format!("/api/v1/campaigns/{id}/{action}"),
        Some(token),
        None,
    );
    assert_eq!(a.status, 200, "{action}: {}", a.body);
    a.json
}

fn show(web: &Web, token: &str, id: i64) -> Value {
    let a = web.call("GET", &format!("/api/v1/campaigns/{id}"), Some(token), None);
    assert_eq!(a.status, 200, "{}", a.body);
    a.json
}

fn wait_state(web: &Web, token: &str, id: i64, state: &str, limit: Duration) -> Value {
    let mut last = Value::Null;
    wait_for(&format!("campaign {id} to be {state}"), limit, || {
        last = show(web, token, id);
        last["state"] == state
    });
    last
}

/// How many messages each recipient got.
fn per_recipient(dest: &Dest) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for r in dest.recipients() {
        *seen.entry(r).or_default() += 1;
    }
    seen
}

#[test]
fn a_campaign_reaches_exactly_its_recipients_once_with_tags_filled() {
    let store = Store::sqlite();
    let token = account(&store, "press");
    let other = account(&store, "other");
    let acc = account_id(&store, "press");
    let web = Web::start(&store, "");
    let dest = Dest::start(&[]);
    let news = list(&store, acc, "news", "single");
    let vip = list(&store, acc, "vip", "double");
    let staff = list(&store, acc, "staff", "single");
    let city = |c: &str| format!("{{\"city\": \"{c}\"}}");
    // Who gets it: ann (single opt-in, unconfirmed is enough), bob (on both
    // include lists: once), hal (double opt-in, confirmed; his `Name` attribute
    // loses to his name).
    let ann = subscriber(&store, acc, "Ann@A.test", "Ann", &city("Oslo"), "enabled");
    member(&store, news, ann, "unconfirmed");
    let bob = subscriber(&store, acc, "bob@a.test", "Bob", &city("Rome"), "enabled");
    member(&store, news, bob, "confirmed");
    member(&store, vip, bob, "confirmed");
    let hal = subscriber(
        &store,
        acc,
        "hal@a.test",
        "Hal",
        r#"{"city": "Lima", "Name": "spoof"}"#,
        "enabled",
    );
    member(&store, vip, hal, "confirmed");
    // Who does not: cy (double opt-in, unconfirmed), dee (unsubscribed), eve
    // (blocklisted), fay (suppressed), gus (on the exclude list).
    let cy = subscriber(&store, acc, "cy@a.test", "Cy", &city("x"), "enabled");
    member(&store, vip, cy, "unconfirmed");
    let dee = subscriber(&store, acc, "dee@a.test", "Dee", &city("x"), "enabled");
    member(&store, news, dee, "unsubscribed");
    let eve = subscriber(&store, acc, "eve@a.test", "Eve", &city("x"), "blocklisted");
    member(&store, news, eve, "confirmed");
    let fay = subscriber(&store, acc, "Fay@a.test", "Fay", &city("x"), "enabled");
    member(&store, news, fay, "confirmed");
    store.exec(
        "INSERT INTO suppression (address, reason, source, created_at) \
         VALUES ('fay@a.test', 'test', 'manual', '2026-01-01 00:00:00.000')",
    );
    let gus = subscriber(&store, acc, "gus@a.test", "Gus", &city("x"), "enabled");
    member(&store, news, gus, "confirmed");
    member(&store, staff, gus, "unconfirmed");
    // Another account's subscriber with the same address as one of ours.
    let other_acc = account_id(&store, "other");
    let theirs = list(&store, other_acc, "theirs", "single");
    let zed = subscriber(
        &store,
        other_acc,
        "zed@a.test",
        "Zed",
        &city("x"),
        "enabled",
    );
    member(&store, theirs, zed, "confirmed");
    let _ = other;

    let id = create(
        &web,
        &token,
        &json!({
            "name": "Spring news",
            "from": "News <news@press.test>",
            "subject": "News for [Name]",
            "text": "Hi [Name] <[Email]> in [city]",
            "lists": [news, vip],
            "exclude_lists": [staff],
        }),
    );
    let draft = show(&web, &token, id);
    assert_eq!(draft["state"], "draft");
    assert_eq!(draft["lists"], json!([news, vip]));
    assert_eq!(draft["exclude_lists"], json!([staff]));
    assert_eq!(draft["from"], "News <news@press.test>");
    let _relay = Relay::start(
        &store,
        &config(""),
        &["--transport", &format!("a.test={}", dest.addr)],
    );
    assert_eq!(act(&web, &token, id, "start")["state"], "running");
    let done = wait_state(&web, &token, id, "finished", Duration::from_secs(30));

    let seen = per_recipient(&dest);
    let mut got: Vec<&str> = seen.keys().map(String::as_str).collect();
    got.sort_unstable();
    assert_eq!(got, ["Ann@A.test", "bob@a.test", "hal@a.test"], "{seen:?}");
    assert!(seen.values().all(|&n| n == 1), "{seen:?}");
    let texts: Vec<String> = dest
        .messages()
        .iter()
        .map(|m| m["data"].as_str().unwrap().to_owned())
        .collect();
    for want in [
        "Hi Ann <Ann@A.test> in Oslo",
        "Hi Bob <bob@a.test> in Rome",
        "Hi Hal <hal@a.test> in Lima",
    ] {
        assert!(texts.iter().any(|t| t.contains(want)), "{want}: {texts:?}");
    }
    assert!(texts.iter().any(|t| t.contains("Subject: News for Hal")));
    assert!(
        dest.messages()
            .iter()
            .all(|m| m["mail_from"] == "news@press.test")
    );
    for (field, want) in [
        ("recipients", 3),
        ("queued", 0),
        ("delivered", 3),
        ("deferred", 0),
        ("bounced", 0),
        ("failed", 0),
        ("suppressed", 0),
        ("unsubscribed", 0),
    ] {
        assert_eq!(done[field], want, "{field}: {done}");
    }
    assert!(done["started_at"].is_string() && done["finished_at"].is_string());
    // The message is stored once; each row points at it and at its campaign.
    assert_eq!(store.count("SELECT COUNT(*) FROM outbound_templates"), 1);
    assert_eq!(
        store.count(&format!(
            "SELECT COUNT(*) FROM outbound_log WHERE campaign_id = {id} AND outcome = 'delivered'"
        )),
        3
    );
    let timeline = web.call(
        "GET",
        &format!("/api/v1/campaigns/{id}/timeline?step=3600"),
        Some(&token),
        None,
    );
    assert_eq!(timeline.status, 200, "{}", timeline.body);
    assert_eq!(timeline.json["step"], 3600);
    let points = timeline.json["points"].as_array().unwrap();
    let delivered: i64 = points
        .iter()
        .map(|p| p["delivered"].as_i64().unwrap())
        .sum();
    assert_eq!(delivered, 3, "{points:?}");
    assert!(points[0]["at"].as_str().unwrap().ends_with(":00:00Z"));
    let listed = web.call("GET", "/api/v1/campaigns", Some(&token), None);
    assert_eq!(listed.json["campaigns"][0]["id"], id);
    assert_eq!(listed.json["campaigns"][0]["state"], "finished");
    // The operator's view.
    let stats = outbound(&store, &["campaign", "stats", &id.to_string()], None);
    assert!(stats.status.success());
    let stats = String::from_utf8_lossy(&stats.stdout);
    assert!(
        stats.contains("state finished\n") && stats.contains("delivered 3\n"),
        "{stats}"
    );
}

#[test]
fn pause_stops_deliveries_resume_goes_on_and_cancel_leaves_nothing_queued() {
    let store = Store::sqlite();
    let token = account(&store, "press");
    let acc = account_id(&store, "press");
    let web = Web::start(&store, "");
    let dest = Dest::start(&[]);
    let news = list(&store, acc, "news", "single");
    store.exec(&format!(
        "INSERT INTO subscribers (account_id, email, email_key, name) \
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300) \
         SELECT {acc}, 'u' || i || '@a.test', 'u' || i || '@a.test', 'U' || i FROM n;
         INSERT INTO list_members (list_id, subscriber_id, status) \
         SELECT {news}, id, 'confirmed' FROM subscribers WHERE account_id = {acc};"
    ));
    let id = create(
        &web,
        &token,
        &json!({
            "name": "Slow", "from": "news@press.test", "subject": "s", "text": "Hi [Name]",
            "lists": [news], "messages_per_second": 20,
        }),
    );
    let _relay = Relay::start(
        &store,
        &config(""),
        &["--transport", &format!("a.test={}", dest.addr)],
    );
    act(&web, &token, id, "start");
    wait_for("some deliveries", Duration::from_secs(20), || {
        dest.recipients().len() >= 10
    });
    assert_eq!(act(&web, &token, id, "pause")["state"], "paused");
    let at_pause = dest.recipients().len();
    // Deliveries under way at the pause finish; none starts after it.
    std::thread::sleep(Duration::from_secs(2));
    let settled = dest.recipients().len();
    assert!(settled - at_pause <= 5, "{at_pause} → {settled}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        dest.recipients().len(),
        settled,
        "a delivery after the pause"
    );
    assert!(settled < 300);
    let paused = store.count(&format!(
        "SELECT COUNT(*) FROM outbound_queue WHERE campaign_id = {id} AND state = 'paused'"
    ));
    assert!(paused > 0);
    assert_eq!(
        store.count(&format!(
            "SELECT COUNT(*) FROM outbound_queue WHERE campaign_id = {id} \
             AND state IN ('queued', 'deferred', 'sending')"
        )),
        0
    );
    // Pausing twice is a conflict naming the state.
    let again = web.call(
        "POST",
        &format!("/api/v1/campaigns/{id}/pause"),
        Some(&token),
        None,
    );
    assert_eq!(again.status, 409, "{}", again.body);
    assert!(again.json["error"].as_str().unwrap().contains("paused"));

    assert_eq!(act(&web, &token, id, "resume")["state"], "running");
    wait_for("deliveries after resume", Duration::from_secs(10), || {
        dest.recipients().len() >= settled + 10
    });
    // At the campaign's rate (20/s, plus the one-second burst a resume may bring).
    let resumed_at = Instant::now();
    let before = dest.recipients().len();
    std::thread::sleep(Duration::from_secs(2));
    let rate = (dest.recipients().len() - before) as f64 / resumed_at.elapsed().as_secs_f64();
    assert!(rate < 35.0, "{rate}/s");

    assert_eq!(act(&web, &token, id, "cancel")["state"], "cancelled");
    assert_eq!(
        store.count(&format!(
            "SELECT COUNT(*) FROM outbound_queue WHERE campaign_id = {id} \
             AND state IN ('queued', 'deferred', 'paused')"
        )),
        0
    );
    wait_for("rows under way to finish", Duration::from_secs(10), || {
        store.count(&format!(
            "SELECT COUNT(*) FROM outbound_queue WHERE campaign_id = {id} AND state = 'sending'"
        )) == 0
    });
    let after_cancel = dest.recipients().len();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(dest.recipients().len(), after_cancel);
    assert!(after_cancel < 300);
    // Nothing of it is expanded any more, and it stays cancelled.
    let c = show(&web, &token, id);
    assert_eq!(c["state"], "cancelled");
    assert_eq!(c["queued"], 0);
    assert!(per_recipient(&dest).values().all(|&n| n == 1));
}

#[test]
fn a_notification_is_not_starved_by_a_big_campaign() {
    let store = Store::sqlite();
    let token = account(&store, "press");
    let acc = account_id(&store, "press");
    let web = Web::start(&store, "");
    let bulk = Dest::start(&[]);
    let app = Dest::start(&[]);
    let news = list(&store, acc, "news", "single");
    store.exec(&format!(
        "INSERT INTO subscribers (account_id, email, email_key, name) \
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000) \
         SELECT {acc}, 'u' || i || '@a.test', 'u' || i || '@a.test', 'U' || i FROM n;
         INSERT INTO list_members (list_id, subscriber_id, status) \
         SELECT {news}, id, 'confirmed' FROM subscribers WHERE account_id = {acc};"
    ));
    let id = create(
        &web,
        &token,
        &json!({
            "name": "Big", "from": "news@press.test", "subject": "s", "text": "Hi [Name]",
            "lists": [news], "messages_per_second": 500,
        }),
    );
    let _relay = Relay::start(
        &store,
        &config(""),
        &[
            "--transport",
            &format!("a.test={}", bulk.addr),
            "--transport",
            &format!("b.test={}", app.addr),
        ],
    );
    act(&web, &token, id, "start");
    wait_for(
        "the campaign to be expanded and sending",
        Duration::from_secs(20),
        || {
            show(&web, &token, id)["recipients"].as_i64().unwrap() >= 10_000
                && bulk.recipients().len() >= 200
        },
    );
    let queued_at = Instant::now();
    enqueue(
        &store,
        "app@sender.test",
        &["user@b.test"],
        &message("reset"),
    );
    wait_for("the notification", Duration::from_secs(5), || {
        app.recipients().len() == 1
    });
    let took = queued_at.elapsed();
    // The campaign was still going: the notification did not wait for it.
    assert!(
        store.count(&format!(
            "SELECT COUNT(*) FROM outbound_queue WHERE campaign_id = {id} AND state = 'queued'"
        )) > 1_000
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    eprintln!("notification delivered {took:?} after it was queued");
}

#[test]
fn every_api_error_names_its_cause() {
    let store = Store::sqlite();
    let token = account(&store, "press");
    let other = account(&store, "other");
    let acc = account_id(&store, "press");
    let other_acc = account_id(&store, "other");
    let web = Web::start(&store, "[web]\nmax_body_bytes = 4096\n");
    let news = list(&store, acc, "news", "single");
    let theirs = list(&store, other_acc, "theirs", "single");
    let good = json!({"name": "n", "from": "news@press.test", "subject": "s", "text": "t", "lists": [news]});
    let post = |body: &Value| web.call("POST", "/api/v1/campaigns", Some(&token), Some(body));
    let error = |a: &crate::support::Answer| a.json["error"].as_str().unwrap_or("").to_owned();

    let none = web.call("POST", "/api/v1/campaigns", None, Some(&good));
    assert_eq!(none.status, 401, "{}", none.body);
    let none = web.call("GET", "/api/v1/campaigns/1", None, None);
    assert_eq!(none.status, 401);

    let with = |key: &str, value: Value| {
        let mut b = good.clone();
        b[key] = value;
        b
    };
    let without = |key: &str| {
        let mut b = good.clone();
        b.as_object_mut().unwrap().remove(key);
        b
    };
    for (body, field) in [
        (without("name"), "name"),
        (with("name", json!("x".repeat(256))), "name"),
        (without("from"), "from"),
        (with("from", json!("not an address")), "from"),
        (without("subject"), "subject"),
        (without("text"), "text"),
        (without("lists"), "lists"),
        (with("lists", json!([])), "lists"),
        (with("lists", json!([theirs])), "lists"),
        (with("lists", json!([news + 1000])), "lists"),
        (with("exclude_lists", json!([theirs])), "exclude_lists"),
        (with("messages_per_second", json!(0)), "messages_per_second"),
        (
            with("messages_per_second", json!(2_000_000)),
            "messages_per_second",
        ),
        (with("send_at", json!("next week")), "send_at"),
        (with("lists", json!("one")), "lists"),
        (with("colour", json!("red")), "colour"),
    ] {
        let a = post(&body);
        assert_eq!(a.status, 400, "{body}: {}", a.body);
        assert!(error(&a).contains(field), "{field}: {}", a.body);
    }
    let theirs_named = post(&with("lists", json!([news, theirs])));
    assert!(
        error(&theirs_named).contains(&format!("list {theirs}")),
        "{}",
        theirs_named.body
    );
    let bad_json = web.send(
        "POST",
        "/api/v1/campaigns",
        Some(&token),
        Some(b"{"),
        "application/json",
    );
    assert_eq!(bad_json.status, 400, "{}", bad_json.body);
    let plain = web.send(
        "POST",
        "/api/v1/campaigns",
        Some(&token),
        Some(b"{}"),
        "text/plain",
    );
    assert_eq!(plain.status, 415, "{}", plain.body);
    assert!(plain.json["error"].is_string());
    let big = post(&with("text", json!("x".repeat(5000))));
    assert_eq!(big.status, 413, "{}", big.body);
    assert!(big.json["error"].is_string());
    assert_eq!(store.count("SELECT COUNT(*) FROM campaigns"), 0);
    assert_eq!(store.count("SELECT COUNT(*) FROM outbound_templates"), 0);

    let id = create(&web, &token, &good);
    // Another account sees nothing of it.
    for (method, path) in [
        ("GET", format!("/api/v1/campaigns/{id}")),
        ("POST", format!("/api/v1/campaigns/{id}/start")),
        ("POST", format!("/api/v1/campaigns/{id}/cancel")),
        ("GET", format!("/api/v1/campaigns/{id}/timeline")),
    ] {
        let a = web.call(method, &path, Some(&other), None);
        assert_eq!(a.status, 404, "{path}: {}", a.body);
        assert!(error(&a).contains("not found"));
    }
    let listed = web.call("GET", "/api/v1/campaigns", Some(&other), None);
    assert_eq!(listed.json["campaigns"], json!([]));
    let unknown = web.call("GET", "/api/v1/campaigns/999999", Some(&token), None);
    assert_eq!(unknown.status, 404);
    let not_a_number = web.call("GET", "/api/v1/campaigns/abc", Some(&token), None);
    assert_eq!(not_a_number.status, 400, "{}", not_a_number.body);
    for step in ["0", "86401", "x"] {
        let a = web.call(
            "GET",
            &format!("/api/v1/campaigns/{id}/timeline?step={step}"),
            Some(&token),
            None,
        );
        assert_eq!(a.status, 400, "{step}: {}", a.body);
        assert!(error(&a).starts_with("step"), "{}", a.body);
    }
    let empty = web.call(
        "GET",
        &format!("/api/v1/campaigns/{id}/timeline"),
        Some(&token),
        None,
    );
    assert_eq!(empty.json, json!({"step": 60, "points": []}));

    // Transitions the state does not allow: 409 naming it.
    let resume = web.call(
        "POST",
        &format!("/api/v1/campaigns/{id}/resume"),
        Some(&token),
        None,
    );
    assert_eq!(resume.status, 409, "{}", resume.body);
    assert!(error(&resume).contains("draft"), "{}", resume.body);
    assert_eq!(act(&web, &token, id, "cancel")["state"], "cancelled");
    let start = web.call(
        "POST",
        &format!("/api/v1/campaigns/{id}/start"),
        Some(&token),
        None,
    );
    assert_eq!(start.status, 409);
    assert!(error(&start).contains("cancelled"), "{}", start.body);

    // A send_at ahead schedules; the CLI acts on it like the API.
    let later = create(
        &web,
        &token,
        &with("send_at", json!("2099-01-01T00:00:00Z")),
    );
    let cli = |args: &[&str]| outbound(&store, args, None);
    let started = cli(&["campaign", "start", &later.to_string()]);
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    assert_eq!(show(&web, &token, later)["state"], "scheduled");
    assert_eq!(
        show(&web, &token, later)["send_at"],
        "2099-01-01T00:00:00.000Z"
    );
    let twice = cli(&["campaign", "resume", &later.to_string()]);
    assert_eq!(twice.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&twice.stderr).contains("scheduled"));
    let unknown = cli(&["campaign", "pause", "424242"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("id: campaign 424242 not found"),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );
    let stats = cli(&["campaign", "stats", "424242"]);
    assert_eq!(stats.status.code(), Some(2));
    assert!(
        cli(&["campaign", "pause", &later.to_string()])
            .status
            .success()
    );
    assert_eq!(show(&web, &token, later)["state"], "paused");
}

/// Two relays on MariaDB; the one expanding the campaign is killed mid-way.
///
/// Exactly once needs the killed node's own deliveries not to complete: a node
/// killed after the destination accepted a message but before it recorded that
/// would have the row sent again by the other (at-least-once is what SMTP
/// relaying gives). So node-a's route for the domain is a black hole (a socket
/// that accepts and never answers): its claimed rows stay `sending` until it is
/// killed, then its leases lapse and node-b sends them. Only node-b ever reaches
/// the destination.
#[test]
fn a_killed_node_loses_its_campaign_expansion_to_another() {
    let store = Store::mariadb();
    let token = account(&store, "press");
    let acc = account_id(&store, "press");
    let web = Web::start(&store, "");
    let dest = Dest::start(&[]);
    let hole = TcpListener::bind("127.0.0.1:0").unwrap();
    let news = list(&store, acc, "news", "single");
    let values: Vec<String> = (0..120)
        .map(|i| format!("({acc}, 'u{i}@a.test', 'u{i}@a.test', 'U{i}', '{{}}')"))
        .collect();
    store.exec(&format!(
        "INSERT INTO subscribers (account_id, email, email_key, name, attributes) VALUES {}",
        values.join(", ")
    ));
    store.exec(&format!(
        "INSERT INTO list_members (list_id, subscriber_id, status) \
         SELECT {news}, id, 'confirmed' FROM subscribers WHERE account_id = {acc}"
    ));
    // A small backlog and batch: the expansion takes many windows; a short lease.
    let cfg = config("backlog = 20\nexpand_batch = 10\nlease_secs = 2\n")
        .replace("[relay]\n", "[relay]\nmax_in_flight = 5\n");
    let id = create(
        &web,
        &token,
        &json!({
            "name": "Ha", "from": "news@press.test", "subject": "s", "text": "Hi [Name]",
            "lists": [news], "messages_per_second": 20,
        }),
    );
    let mut node_a = Relay::start(
        &store,
        &cfg,
        &[
            "--node-id",
            "node-a",
            "--transport",
            &format!("a.test={}", hole.local_addr().unwrap()),
        ],
    );
    act(&web, &token, id, "start");
    wait_for("node-a to expand", Duration::from_secs(20), || {
        store.column(&format!(
            "SELECT expand_node FROM campaigns WHERE id = {id}"
        ))[0]
            == "node-a"
            && store.count(&format!("SELECT recipients FROM campaigns WHERE id = {id}")) > 0
    });
    let _node_b = Relay::start(
        &store,
        &cfg,
        &[
            "--node-id",
            "node-b",
            "--transport",
            &format!("a.test={}", dest.addr),
        ],
    );
    wait_for("node-b to deliver", Duration::from_secs(20), || {
        dest.recipients().len() >= 5
    });
    // node-a still holds the expansion (it renews its lease every tick).
    assert_eq!(
        store.column(&format!(
            "SELECT expand_node FROM campaigns WHERE id = {id}"
        ))[0],
        "node-a"
    );
    let recipients = store.count(&format!("SELECT recipients FROM campaigns WHERE id = {id}"));
    assert!(recipients < 120, "expanded already: {recipients}");
    node_a.kill();
    wait_state(&web, &token, id, "finished", Duration::from_secs(60));

    assert_eq!(
        store.column(&format!(
            "SELECT expand_node FROM campaigns WHERE id = {id}"
        ))[0],
        "node-b"
    );
    let seen = per_recipient(&dest);
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    assert_eq!(seen.len(), 120);
    assert_eq!(
        store.count(&format!(
            "SELECT COUNT(*) FROM outbound_queue WHERE campaign_id = {id}"
        )),
        120
    );
    let c = show(&web, &token, id);
    assert_eq!(
        (c["recipients"].as_i64(), c["delivered"].as_i64()),
        (Some(120), Some(120))
    );
}

/// A feedback-loop report about a campaign's message counts as `complained` in
/// the campaign's counts (GET /api/v1/campaigns/{id}) and suppresses the address.
#[test]
fn a_complaint_about_a_campaign_message_counts_as_complained() {
    let store = Store::sqlite();
    let token = account(&store, "press");
    let acc = account_id(&store, "press");
    let web = Web::start(&store, "");
    let dest = Dest::start(&[]);
    let smtpd = crate::support::Smtpd::start(&store, &["bounce.test"]);
    let news = list(&store, acc, "news", "single");
    let ann = subscriber(&store, acc, "ann@a.test", "Ann", "{}", "enabled");
    member(&store, news, ann, "confirmed");
    let id = create(
        &web,
        &token,
        &json!({"name": "n", "from": "news@press.test", "subject": "s", "text": "Hi [Name]",
                "lists": [news]}),
    );
    let cfg = FAST.replace("[bounces]\ndsn = false\n", "")
        + &format!(
            "\n[bounces]\ndsn = false\ndomain = \"bounce.test\"\nkey = \"0123456789abcdef-test-key\"\n\
             intake_interval_ms = 200\nintake_settle_ms = 300\ncomplaint_address = \"{}\"\n[campaigns]\ninterval_ms = 100\n",
            crate::complaints::FBL
        );
    let _relay = Relay::start(
        &store,
        &cfg,
        &["--transport", &format!("a.test={}", dest.addr)],
    );
    act(&web, &token, id, "start");
    wait_state(&web, &token, id, "finished", Duration::from_secs(30));
    assert_eq!(show(&web, &token, id)["complained"], 0);
    let path = dest.messages()[0]["mail_from"].as_str().unwrap().to_owned();
    smtpd.send(
        "",
        crate::complaints::FBL,
        &crate::complaints::arf(&path, "ann@a.test"),
    );
    wait_for("the complaint", Duration::from_secs(20), || {
        show(&web, &token, id)["complained"] == 1
    });
    assert_eq!(
        store.column("SELECT address || ' ' || source FROM suppression"),
        ["ann@a.test complaint"]
    );
}

/// An unsubscribe request (mail to the List-Unsubscribe address, through
/// `smtpd`) about a campaign's message ends the subscriber's membership of that
/// campaign's lists, and nothing else: the address is not suppressed, so the
/// application's own mail still reaches it, and its other lists keep it.
#[test]
fn a_campaign_unsubscribe_ends_list_memberships_not_transactional_mail() {
    let store = Store::sqlite();
    let token = account(&store, "press");
    let acc = account_id(&store, "press");
    let web = Web::start(&store, "");
    let dest = Dest::start(&[]);
    let smtpd = crate::support::Smtpd::start(&store, &["bounce.test"]);
    let news = list(&store, acc, "news", "single");
    let vip = list(&store, acc, "vip", "single");
    let other = list(&store, acc, "other", "single");
    let ann = subscriber(&store, acc, "ann@a.test", "Ann", "{}", "enabled");
    for l in [news, vip, other] {
        member(&store, l, ann, "confirmed");
    }
    let id = create(
        &web,
        &token,
        &json!({"name": "n", "from": "news@press.test", "subject": "s", "text": "Hi [Name]",
                "lists": [news, vip]}),
    );
    let cfg = FAST.replace("[bounces]\ndsn = false\n", "")
        + "\n[bounces]\ndsn = false\ndomain = \"bounce.test\"\nkey = \"0123456789abcdef-test-key\"\n\
           intake_interval_ms = 200\nintake_settle_ms = 300\n[campaigns]\ninterval_ms = 100\n";
    let _relay = Relay::start(
        &store,
        &cfg,
        &["--transport", &format!("a.test={}", dest.addr)],
    );
    act(&web, &token, id, "start");
    wait_state(&web, &token, id, "finished", Duration::from_secs(30));
    let data = dest.messages()[0]["data"].as_str().unwrap().to_owned();
    let address = data
        .split("<mailto:")
        .nth(1)
        .and_then(|a| a.split('?').next())
        .unwrap_or_else(|| panic!("no List-Unsubscribe: {data}"))
        .to_owned();
    smtpd.send(
        "ann@a.test",
        &address,
        "Subject: unsubscribe\r\n\r\nunsubscribe\r\n",
    );
    wait_for("the unsubscribe", Duration::from_secs(20), || {
        store.count(&format!(
            "SELECT COUNT(*) FROM list_members WHERE unsubscribed_by = {id} AND status = 'unsubscribed'"
        )) == 2
    });
    assert_eq!(
        store.column(&format!(
            "SELECT status FROM list_members WHERE list_id = {other}"
        )),
        ["confirmed"]
    );
    assert_eq!(store.count("SELECT COUNT(*) FROM suppression"), 0);
    assert_eq!(show(&web, &token, id)["unsubscribed"], 2);
    enqueue(
        &store,
        "app@sender.test",
        &["ann@a.test"],
        &message("receipt"),
    );
    wait_for("the receipt", Duration::from_secs(10), || {
        dest.recipients().len() == 2
    });
    // The destination has it before the relay's commit: wait for the record too
    // (under load, e.g. beside the console's browser test, the gap is visible).
    wait_for("the receipt recorded", Duration::from_secs(10), || {
        store.state("ann@a.test") == "delivered"
    });
}

/// The MySQL dialect of what the SQLite tests cover: pause (CLI), resume with the
/// rows re-spaced (`UPDATE … JOIN` over a window), the timeline's buckets (`DIV`)
/// and the counts.
#[test]
fn pause_resume_timeline_and_counts_on_mariadb() {
    let store = Store::mariadb();
    let token = account(&store, "press");
    let acc = account_id(&store, "press");
    let web = Web::start(&store, "");
    let dest = Dest::start(&["--rule", "u7@a.test=550 5.1.1 No such user"]);
    let news = list(&store, acc, "news", "single");
    let values: Vec<String> = (0..30)
        .map(|i| format!("({acc}, 'u{i}@a.test', 'u{i}@a.test', 'U{i}', '{{\"n\": {i}}}')"))
        .collect();
    store.exec(&format!(
        "INSERT INTO subscribers (account_id, email, email_key, name, attributes) VALUES {}",
        values.join(", ")
    ));
    store.exec(&format!(
        "INSERT INTO list_members (list_id, subscriber_id, status) \
         SELECT {news}, id, 'confirmed' FROM subscribers WHERE account_id = {acc}"
    ));
    let id = create(
        &web,
        &token,
        &json!({"name": "m", "from": "News <news@press.test>", "subject": "s [n]",
                "text": "Hi [Name], number [n]", "lists": [news], "messages_per_second": 10}),
    );
    let _relay = Relay::start(
        &store,
        &config(""),
        &["--transport", &format!("a.test={}", dest.addr)],
    );
    act(&web, &token, id, "start");
    wait_for("some deliveries", Duration::from_secs(20), || {
        dest.recipients().len() >= 3
    });
    let paused = outbound(&store, &["campaign", "pause", &id.to_string()], None);
    assert!(
        paused.status.success(),
        "{}",
        String::from_utf8_lossy(&paused.stderr)
    );
    assert!(
        store.count(&format!(
            "SELECT COUNT(*) FROM outbound_queue WHERE campaign_id = {id} AND state = 'paused'"
        )) > 0
    );
    assert_eq!(act(&web, &token, id, "resume")["state"], "running");
    // Re-spaced at 10/s from the resume: the last row is due ≥ 1 s after the first.
    let spread = store.count(&format!(
        "SELECT TIMESTAMPDIFF(MICROSECOND, MIN(next_attempt_at), MAX(next_attempt_at)) \
         FROM outbound_queue WHERE campaign_id = {id} AND state IN ('queued', 'sending', 'paused')"
    ));
    assert!(spread >= 900_000, "{spread} µs");
    let done = wait_state(&web, &token, id, "finished", Duration::from_secs(30));
    assert_eq!(
        (done["recipients"].as_i64(), done["delivered"].as_i64()),
        (Some(30), Some(29))
    );
    assert_eq!(
        (done["failed"].as_i64(), done["bounced"].as_i64()),
        (Some(1), Some(0))
    );
    assert_eq!(per_recipient(&dest).len(), 29);
    let text = dest
        .messages()
        .iter()
        .map(|m| m["data"].as_str().unwrap().to_owned())
        .find(|d| d.contains("U12"))
        .unwrap();
    assert!(text.contains("Hi U12, number 12"), "{text}");
    let timeline = web.call(
        "GET",
        &format!("/api/v1/campaigns/{id}/timeline?step=1"),
        Some(&token),
        None,
    );
    assert_eq!(timeline.status, 200, "{}", timeline.body);
    let points = timeline.json["points"].as_array().unwrap();
    let sum = |k: &str| -> i64 { points.iter().map(|p| p[k].as_i64().unwrap()).sum() };
    assert_eq!((sum("delivered"), sum("failed")), (29, 1), "{points:?}");
    assert!(points.len() >= 2, "spread over seconds at 10/s: {points:?}");
    assert!(points[0]["at"].as_str().unwrap().ends_with('Z'));
    let stats = outbound(&store, &["campaign", "stats", &id.to_string()], None);
    let stats = String::from_utf8_lossy(&stats.stdout);
    assert!(
        stats.contains("delivered 29\n") && stats.contains("failed 1\n"),
        "{stats}"
    );
}

#[test]
fn a_campaigns_pool_is_copied_to_its_rows_and_sends_from_that_address() {
    let store = Store::sqlite();
    let token = account(&store, "pooled");
    let acc = account_id(&store, "pooled");
    let web = Web::start(&store, "");
    let dest = Dest::start(&[]);
    let news = list(&store, acc, "news", "single");
    for who in ["ann", "bob"] {
        let s = subscriber(&store, acc, &format!("{who}@a.test"), who, "{}", "enabled");
        member(&store, news, s, "confirmed");
    }
    let id = create(
        &web,
        &token,
        &json!({
            "name": "Pooled",
            "from": "News <news@press.test>",
            "subject": "Hi",
            "text": "Hi [Name]",
            "lists": [news],
            "pool": "p",
        }),
    );
    assert_eq!(show(&web, &token, id)["pool"], "p");
    let _relay = Relay::start(
        &store,
        &config(
            "[pools.p]\naddresses = [{ address = \"127.0.0.4\", helo = \"mta4.relay.test\" }]\n",
        ),
        &["--transport", &format!("a.test={}", dest.addr)],
    );
    act(&web, &token, id, "start");
    wait_state(&web, &token, id, "finished", Duration::from_secs(30));
    assert_eq!(
        store.column("SELECT DISTINCT pool FROM outbound_queue"),
        ["p"]
    );
    let msgs = dest.messages();
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    assert!(
        msgs.iter()
            .all(|m| m["peer"] == "127.0.0.4" && m["helo"] == "mta4.relay.test"),
        "{msgs:?}"
    );
}

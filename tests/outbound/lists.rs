//! `/api/v1/lists`: lists, subscribers and memberships through the real
//! `outbound web`, driven with curl, on SQLite and (one test) MariaDB. Who sees what
//! (another account's list is a 404), every error a client can cause, and the
//! upsert's rules (added/updated/rejected, case-insensitive addresses, unsubscribed
//! and blocklisted subscribers left alone, duplicates merged).

use serde_json::{Value, json};

use crate::support::{Store, Web, account};

fn create_list(web: &Web, token: &str, name: &str, opt_in: &str) -> i64 {
    let a = web.call(
        "POST",
        "/api/v1/lists",
        Some(token),
        Some(&json!({ "name": name, "opt_in": opt_in })),
    );
    assert_eq!(a.status, 201, "{}", a.body);
    a.json["id"].as_i64().unwrap()
}

fn add(web: &Web, token: &str, list: i64, items: &Value) -> Value {
    let a = web.call(
        "POST",
        &format!("/api/v1/lists/{list}/subscribers"),
        Some(token),
        Some(items),
    );
    assert_eq!(a.status, 200, "{}", a.body);
    a.json
}

fn error_of(a: &crate::support::Answer) -> String {
    a.json["error"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn accounts_cannot_see_each_others_lists() {
    let store = Store::sqlite();
    let ann = account(&store, "ann");
    let bob = account(&store, "bob");
    let web = Web::start(&store, "");
    let list = create_list(&web, &ann, "news", "single");
    let bobs = create_list(&web, &bob, "news", "double"); // same name, other account
    add(&web, &ann, list, &json!([{ "email": "x@a.test" }]));

    let mine = web.call("GET", "/api/v1/lists", Some(&bob), None);
    assert_eq!(mine.status, 200);
    let ids: Vec<i64> = mine.json["lists"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![bobs]);

    // Every way of touching Ann's list is a 404 for Bob, and tells him nothing.
    for (method, path, body) in [
        ("GET", format!("/api/v1/lists/{list}"), None),
        (
            "POST",
            format!("/api/v1/lists/{list}/subscribers"),
            Some(json!([{ "email": "y@b.test" }])),
        ),
        (
            "DELETE",
            format!("/api/v1/lists/{list}/subscribers/x@a.test"),
            None,
        ),
    ] {
        let a = web.call(method, &path, Some(&bob), body.as_ref());
        assert_eq!(a.status, 404, "{method} {path}: {}", a.body);
        assert_eq!(error_of(&a), format!("list {list} not found"));
    }
    assert_eq!(
        store.count("SELECT COUNT(*) FROM subscribers WHERE email = 'y@b.test'"),
        0
    );
    let shown = web.call("GET", &format!("/api/v1/lists/{list}"), Some(&ann), None);
    assert_eq!(shown.json["subscribers"], 1);
}

#[test]
fn list_requests_are_checked_and_errors_name_the_field() {
    let store = Store::sqlite();
    let token = account(&store, "press");
    let web = Web::start(&store, "");
    let t = Some(token.as_str());

    let none = web.call("POST", "/api/v1/lists", None, Some(&json!({ "name": "x" })));
    assert_eq!(none.status, 401);
    let bad = web.call("GET", "/api/v1/lists/1", Some("ob_nope"), None);
    assert_eq!(bad.status, 401);
    assert_eq!(error_of(&bad), "Authorization: unknown token");

    let not_json = web.send(
        "POST",
        "/api/v1/lists",
        t,
        Some(b"{name"),
        "application/json",
    );
    assert_eq!(not_json.status, 400, "{}", not_json.body);
    assert!(
        error_of(&not_json).starts_with("body:"),
        "{}",
        not_json.body
    );

    for (body, status, error) in [
        (json!({}), 400, "name: missing"),
        (json!({ "name": 7 }), 400, "name: expected a string"),
        (json!({ "name": "" }), 400, "name: must not be empty"),
        (
            json!({ "name": "x".repeat(256) }),
            400,
            "name: longer than 255 characters",
        ),
        (
            json!({ "name": "n", "opt_in": "triple" }),
            400,
            "opt_in: must be \"single\" or \"double\"",
        ),
        (
            json!({ "name": "n", "opt_in": true }),
            400,
            "opt_in: must be \"single\" or \"double\"",
        ),
        (
            json!({ "name": "n", "colour": 1 }),
            400,
            "colour: unknown field",
        ),
        (json!(["n"]), 400, "body: expected a JSON object"),
    ] {
        let a = web.call("POST", "/api/v1/lists", t, Some(&body));
        assert_eq!(a.status, status, "{body}: {}", a.body);
        assert_eq!(error_of(&a), error, "{body}");
    }
    assert_eq!(store.count("SELECT COUNT(*) FROM lists"), 0);

    // opt_in defaults to single; 255 characters (not bytes) is the limit.
    let a = web.call(
        "POST",
        "/api/v1/lists",
        t,
        Some(&json!({ "name": "é".repeat(255) })),
    );
    assert_eq!(a.status, 201, "{}", a.body);
    let id = a.json["id"].as_i64().unwrap();
    let shown = web.call("GET", &format!("/api/v1/lists/{id}"), t, None);
    assert_eq!(shown.status, 200);
    assert_eq!(shown.json["opt_in"], "single");
    assert_eq!(shown.json["name"], "é".repeat(255));
    assert!(shown.json["created_at"].as_str().unwrap().starts_with("20"));
    assert_eq!(
        shown.json["members"],
        json!({ "unconfirmed": 0, "confirmed": 0, "unsubscribed": 0 })
    );
    assert_eq!(shown.json["subscribers"], 0);

    let again = web.call(
        "POST",
        "/api/v1/lists",
        t,
        Some(&json!({ "name": "é".repeat(255) })),
    );
    assert_eq!(again.status, 409, "{}", again.body);
    assert!(error_of(&again).starts_with("name: a list called"));

    let path_id = web.call("GET", "/api/v1/lists/abc", t, None);
    assert_eq!(path_id.status, 400, "{}", path_id.body);
    assert!(error_of(&path_id).starts_with("path:"));
    let missing = web.call("GET", "/api/v1/lists/999", t, None);
    assert_eq!(missing.status, 404);
    assert_eq!(error_of(&missing), "list 999 not found");
}

#[test]
fn subscribers_are_added_updated_or_rejected_one_by_one() {
    let store = Store::sqlite();
    let token = account(&store, "press");
    let web = Web::start(&store, "");
    let list = create_list(&web, &token, "news", "single");

    let out = add(
        &web,
        &token,
        list,
        &json!([
            { "email": "ann@example.test", "name": "Ann", "attributes": { "city": "Oslo" } },
            { "email": "Bob@Example.TEST" },
            { "email": "not-an-address" },
            { "name": "no address" },
            { "email": "long@example.test", "name": "x".repeat(256) },
            { "email": "num@example.test", "name": 5 },
            { "email": "arr@example.test", "attributes": [1] },
            { "email": "big@example.test", "attributes": { "k": "v".repeat(17 * 1024) } },
            { "email": "odd@example.test", "colour": "red" },
            "just a string",
            { "email": format!("{}@example.test", "a".repeat(320)) },
        ]),
    );
    assert_eq!(out["added"], 2, "{out}");
    assert_eq!(out["updated"], 0);
    let rejected = out["rejected"].as_array().unwrap();
    let errors: Vec<(&str, &str)> = rejected
        .iter()
        .map(|r| (r["email"].as_str().unwrap(), r["error"].as_str().unwrap()))
        .collect();
    assert_eq!(
        errors[..9],
        [
            (
                "not-an-address",
                "email: not an email address (local@domain)"
            ),
            ("", "email: missing"),
            ("long@example.test", "name: longer than 255 characters"),
            ("num@example.test", "name: expected a string"),
            ("arr@example.test", "attributes: expected a JSON object"),
            (
                "big@example.test",
                "attributes: larger than 16 KiB serialized"
            ),
            ("odd@example.test", "colour: unknown field"),
            ("", "expected a JSON object"),
            (errors[8].0, "email: longer than 320 bytes"),
        ]
    );
    assert_eq!(errors.len(), 9);

    // Case-insensitively one subscriber per account: an update, not an add, and
    // the address keeps its first spelling. A given name replaces; absent
    // attributes keep the stored ones.
    let out = add(
        &web,
        &token,
        list,
        &json!([{ "email": "ANN@example.test", "name": "Ann B." }]),
    );
    assert_eq!(
        (out["added"].clone(), out["updated"].clone()),
        (json!(0), json!(1))
    );
    assert_eq!(
        store.column("SELECT email || '|' || name || '|' || attributes FROM subscribers WHERE email_key = 'ann@example.test'"),
        vec!["ann@example.test|Ann B.|{\"city\":\"Oslo\"}"]
    );
    // A given attributes object replaces the stored one; absent name is kept.
    add(
        &web,
        &token,
        list,
        &json!([{ "email": "ann@example.test", "attributes": { "plan": "pro" } }]),
    );
    assert_eq!(
        store.column(
            "SELECT name || '|' || attributes FROM subscribers WHERE email_key = 'ann@example.test'"
        ),
        vec!["Ann B.|{\"plan\":\"pro\"}"]
    );

    // Duplicates within one request are merged, later fields winning.
    let out = add(
        &web,
        &token,
        list,
        &json!([
            { "email": "cat@example.test", "name": "first", "attributes": { "a": "1" } },
            { "email": "CAT@example.test", "name": "second" },
        ]),
    );
    assert_eq!(
        (out["added"].clone(), out["updated"].clone()),
        (json!(1), json!(0))
    );
    assert_eq!(
        store.column("SELECT email || '|' || name || '|' || attributes FROM subscribers WHERE email_key = 'cat@example.test'"),
        vec!["CAT@example.test|second|{\"a\":\"1\"}"]
    );

    // An unsubscribed member is not resubscribed; a blocklisted subscriber stays so.
    store.exec("UPDATE list_members SET status = 'unsubscribed' WHERE subscriber_id = (SELECT id FROM subscribers WHERE email_key = 'bob@example.test')");
    store
        .exec("UPDATE subscribers SET status = 'blocklisted' WHERE email_key = 'cat@example.test'");
    let out = add(
        &web,
        &token,
        list,
        &json!([{ "email": "bob@example.test", "name": "Bob" }, { "email": "cat@example.test" }]),
    );
    assert_eq!(
        (out["added"].clone(), out["updated"].clone()),
        (json!(0), json!(2))
    );
    assert_eq!(
        store.column("SELECT m.status FROM list_members m JOIN subscribers s ON s.id = m.subscriber_id WHERE s.email_key = 'bob@example.test'"),
        vec!["unsubscribed"]
    );
    assert_eq!(
        store.column("SELECT status FROM subscribers WHERE email_key = 'cat@example.test'"),
        vec!["blocklisted"]
    );
    let shown = web.call("GET", &format!("/api/v1/lists/{list}"), Some(&token), None);
    assert_eq!(
        shown.json["members"],
        json!({ "unconfirmed": 0, "confirmed": 2, "unsubscribed": 1 })
    );
    assert_eq!(shown.json["subscribers"], 3);

    // A double opt-in list: new members are unconfirmed; the subscriber row is shared.
    let double = create_list(&web, &token, "digest", "double");
    let out = add(
        &web,
        &token,
        double,
        &json!([{ "email": "Ann@Example.test" }, { "email": "new@example.test" }]),
    );
    assert_eq!(
        (out["added"].clone(), out["updated"].clone()),
        (json!(2), json!(0))
    );
    let shown = web.call(
        "GET",
        &format!("/api/v1/lists/{double}"),
        Some(&token),
        None,
    );
    assert_eq!(
        shown.json["members"],
        json!({ "unconfirmed": 2, "confirmed": 0, "unsubscribed": 0 })
    );
    assert_eq!(store.count("SELECT COUNT(*) FROM subscribers"), 4);

    // Another account's subscriber with the same address is its own row.
    let other = account(&store, "other");
    let theirs = create_list(&web, &other, "news", "single");
    let out = add(
        &web,
        &other,
        theirs,
        &json!([{ "email": "ann@example.test" }]),
    );
    assert_eq!(out["added"], 1);
    assert_eq!(
        store.count("SELECT COUNT(*) FROM subscribers WHERE email_key = 'ann@example.test'"),
        2
    );
}

#[test]
fn a_subscribers_request_must_be_an_array_of_at_most_10000() {
    let store = Store::sqlite();
    let token = account(&store, "press");
    let web = Web::start(&store, "");
    let list = create_list(&web, &token, "news", "single");
    let path = format!("/api/v1/lists/{list}/subscribers");
    let items: Vec<Value> = (0..10_001)
        .map(|i| json!({ "email": format!("u{i}@example.test") }))
        .collect();
    let a = web.call(
        "POST",
        &path,
        Some(&token),
        Some(&Value::Array(items.clone())),
    );
    assert_eq!(a.status, 413, "{}", a.body);
    assert!(error_of(&a).contains("10001 subscribers"), "{}", a.body);
    assert_eq!(store.count("SELECT COUNT(*) FROM subscribers"), 0);

    let a = web.call(
        "POST",
        &path,
        Some(&token),
        Some(&json!({ "email": "a@b.test" })),
    );
    assert_eq!(a.status, 400, "{}", a.body);
    assert_eq!(error_of(&a), "body: expected a JSON array of subscribers");

    // Exactly 10,000 is fine, in one go.
    let out = add(&web, &token, list, &Value::Array(items[..10_000].to_vec()));
    assert_eq!(out["added"], 10_000);
    assert_eq!(store.count("SELECT COUNT(*) FROM list_members"), 10_000);
}

#[test]
fn removing_a_member_keeps_the_subscriber() {
    let store = Store::sqlite();
    let token = account(&store, "press");
    let web = Web::start(&store, "");
    let list = create_list(&web, &token, "news", "single");
    add(
        &web,
        &token,
        list,
        &json!([{ "email": "Ann@Example.test" }]),
    );
    let path = format!("/api/v1/lists/{list}/subscribers/ann@example.TEST");
    let a = web.call("DELETE", &path, Some(&token), None);
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json, json!({ "removed": true }));
    let again = web.call("DELETE", &path, Some(&token), None);
    assert_eq!(again.status, 404, "{}", again.body);
    assert!(error_of(&again).contains("not found"));
    assert_eq!(store.count("SELECT COUNT(*) FROM list_members"), 0);
    assert_eq!(store.count("SELECT COUNT(*) FROM subscribers"), 1);
    let bad = web.call(
        "DELETE",
        "/api/v1/lists/x/subscribers/a@b.test",
        Some(&token),
        None,
    );
    assert_eq!(bad.status, 400);
}

#[test]
fn the_same_rules_hold_on_mariadb() {
    let store = Store::mariadb();
    let token = account(&store, "press");
    let web = Web::start(&store, "");
    let list = create_list(&web, &token, "news", "single");
    let dup = web.call(
        "POST",
        "/api/v1/lists",
        Some(&token),
        Some(&json!({ "name": "news" })),
    );
    assert_eq!(dup.status, 409, "{}", dup.body);
    let out = add(
        &web,
        &token,
        list,
        &json!([
            { "email": "ann@example.test", "name": "Ann", "attributes": { "city": "Oslo" } },
            { "email": "ANN@example.test", "name": "Ann 2" },
            { "email": "bob@example.test" },
            { "email": "bad" },
        ]),
    );
    assert_eq!(
        (out["added"].clone(), out["updated"].clone()),
        (json!(2), json!(0)),
        "{out}"
    );
    assert_eq!(out["rejected"].as_array().unwrap().len(), 1);
    assert_eq!(
        store.column("SELECT CONCAT(email, '|', name, '|', attributes) FROM subscribers WHERE email_key = 'ann@example.test'"),
        vec!["ANN@example.test|Ann 2|{\"city\":\"Oslo\"}"]
    );
    store.exec("UPDATE list_members SET status = 'unsubscribed'");
    let out = add(
        &web,
        &token,
        list,
        &json!([{ "email": "Bob@example.test", "attributes": {} }]),
    );
    assert_eq!(
        (out["added"].clone(), out["updated"].clone()),
        (json!(0), json!(1))
    );
    let shown = web.call("GET", &format!("/api/v1/lists/{list}"), Some(&token), None);
    assert_eq!(
        shown.json["members"],
        json!({ "unconfirmed": 0, "confirmed": 0, "unsubscribed": 2 })
    );
    let removed = web.call(
        "DELETE",
        &format!("/api/v1/lists/{list}/subscribers/BOB@example.test"),
        Some(&token),
        None,
    );
    assert_eq!(removed.status, 200, "{}", removed.body);
}

//! The whole mass-mailing path as a user drives it, over real HTTP (curl): an
//! account creates a list, adds subscribers from its application, uploads a CSV,
//! creates and starts a campaign; the relay expands and delivers it to a fixture
//! SMTP server; the API's counts and timeline match what the destination got.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use crate::support::{Dest, FAST, Relay, Store, Web, account, wait_for};

/// The relay's config for campaign tests: the test's fast settings and a runner
/// that looks often.
fn relay_config() -> String {
    format!("{FAST}\n[campaigns]\ninterval_ms = 100\n")
}

fn whole_path(store: &Store) {
    let dest = Dest::start(&[]);
    let token = account(store, "press");
    let web = Web::start(store, "");

    let list = web.call(
        "POST",
        "/api/v1/lists",
        Some(&token),
        Some(&json!({"name": "newsletter", "opt_in": "single"})),
    );
    assert_eq!(list.status, 201, "{}", list.body);
    let list_id = list.json["id"].as_i64().unwrap();

    let added = web.call(
        "POST",
        &format!("/api/v1/lists/{list_id}/subscribers"),
        Some(&token),
        Some(&json!([
            {"email": "ann@flow.test", "name": "Ann", "attributes": {"city": "Oslo"}},
            {"email": "bob@flow.test", "name": "Bob", "attributes": {"city": "Rome"}},
            {"email": "not an address", "name": "X"},
        ])),
    );
    assert_eq!(added.status, 200, "{}", added.body);
    assert_eq!(added.json["added"], 2, "{}", added.body);
    assert_eq!(added.json["rejected"].as_array().unwrap().len(), 1);

    // The CSV: one new subscriber, one already there in other case (merged), a bad row.
    let csv =
        "email,name,city\ncy@flow.test,Cy,Lima\nANN@flow.test,Ann B.,Oslo\nbroken,Zed,Nowhere\n";
    let import = web.send(
        "POST",
        &format!("/api/v1/lists/{list_id}/imports"),
        Some(&token),
        Some(csv.as_bytes()),
        "text/csv",
    );
    assert_eq!(import.status, 202, "{}", import.body);
    let import_id = import.json["id"].as_i64().unwrap();
    let mut status = serde_json::Value::Null;
    wait_for("the import to finish", Duration::from_secs(30), || {
        status = web
            .call(
                "GET",
                &format!("/api/v1/imports/{import_id}"),
                Some(&token),
                None,
            )
            .json;
        status["state"] == "finished" || status["state"] == "failed"
    });
    assert_eq!(status["state"], "finished", "{status}");
    assert_eq!(status["rows_read"], 3, "{status}");
    assert_eq!(status["added"], 1, "{status}");
    assert_eq!(status["updated"], 1, "{status}");
    assert_eq!(status["rejected"], 1, "{status}");
    assert_eq!(status["errors"][0]["line"], 4, "{status}");

    let campaign = web.call(
        "POST",
        "/api/v1/campaigns",
        Some(&token),
        Some(&json!({
            "name": "December",
            "from": "Press <press@sender.test>",
            "subject": "Hello [Name]",
            "text": "Dear [Name] of [city], this is [Email].",
            "lists": [list_id],
        })),
    );
    assert_eq!(campaign.status, 201, "{}", campaign.body);
    let id = campaign.json["id"].as_i64().unwrap();
    let _relay = Relay::start(
        store,
        &relay_config(),
        &["--transport", &format!("flow.test={}", dest.addr)],
    );
    let started = web.call(
        "POST",
        &format!("/api/v1/campaigns/{id}/start"),
        Some(&token),
        None,
    );
    assert_eq!(started.status, 200, "{}", started.body);

    let mut stats = serde_json::Value::Null;
    wait_for("the campaign to finish", Duration::from_secs(60), || {
        stats = web
            .call(
                "GET",
                &format!("/api/v1/campaigns/{id}"),
                Some(&token),
                None,
            )
            .json;
        stats["state"] == "finished"
    });
    // Exactly the three subscribers, once each, each with their own tags.
    let mut got: BTreeMap<String, String> = BTreeMap::new();
    for m in dest.messages() {
        for r in m["rcpt_tos"].as_array().unwrap() {
            let r = r.as_str().unwrap().to_owned();
            assert!(
                got.insert(r.clone(), m["data"].as_str().unwrap().to_owned())
                    .is_none(),
                "{r} got two messages"
            );
        }
    }
    assert_eq!(
        got.keys().map(String::as_str).collect::<Vec<_>>(),
        ["ann@flow.test", "bob@flow.test", "cy@flow.test"],
        "{stats}"
    );
    assert!(got["ann@flow.test"].contains("Dear Ann B. of Oslo, this is ann@flow.test."));
    assert!(got["bob@flow.test"].contains("Subject: Hello Bob"));
    assert!(got["cy@flow.test"].contains("Dear Cy of Lima"));
    assert_eq!(stats["recipients"], 3, "{stats}");
    assert_eq!(stats["delivered"], 3, "{stats}");
    assert_eq!(stats["queued"], 0, "{stats}");

    let timeline = web.call(
        "GET",
        &format!("/api/v1/campaigns/{id}/timeline?step=60"),
        Some(&token),
        None,
    );
    assert_eq!(timeline.status, 200, "{}", timeline.body);
    let delivered: i64 = timeline.json["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["delivered"].as_i64().unwrap())
        .sum();
    assert_eq!(delivered, 3, "{}", timeline.body);
}

#[test]
fn lists_imports_and_a_campaign_over_http_on_sqlite() {
    whole_path(&Store::sqlite());
}

#[test]
fn lists_imports_and_a_campaign_over_http_on_mariadb() {
    whole_path(&Store::mariadb());
}

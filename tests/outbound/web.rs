//! The HTTP API's frame: `outbound web` starts and stops, bearer tokens, JSON
//! errors for what no route answers. (Each resource's routes have their own file.)

use crate::support::{Store, Web, account, outbound};

#[test]
fn requests_need_a_known_bearer_token() {
    let store = Store::sqlite();
    let token = account(&store, "press");
    let web = Web::start(&store, "");
    let none = web.call("GET", "/api/v1/lists", None, None);
    assert_eq!(none.status, 401, "{}", none.body);
    assert!(
        none.json["error"]
            .as_str()
            .unwrap()
            .contains("Authorization")
    );
    let wrong = web.call("GET", "/api/v1/lists", Some("ob_0000"), None);
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    assert_eq!(wrong.json["error"], "Authorization: unknown token");
    // A known token gets past authentication; an unknown path is a JSON 404.
    let own = web.call("GET", "/api/v1/lists", Some(&token), None);
    assert_eq!(own.status, 200, "{}", own.body);
    let missing = web.call("GET", "/api/v1/nothing-here", Some(&token), None);
    assert_eq!(missing.status, 404, "{}", missing.body);
    assert!(missing.json["error"].is_string());
    // The token's use is noted (at most once a minute, not per request).
    assert_eq!(
        store.count("SELECT COUNT(*) FROM api_tokens WHERE last_used_at IS NOT NULL"),
        1
    );
}

#[test]
fn account_names_are_unique_and_checked() {
    let store = Store::sqlite();
    let first = outbound(&store, &["account", "add", "press"], None);
    assert!(first.status.success());
    let again = outbound(&store, &["account", "add", "press"], None);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("exists already"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let bad = outbound(&store, &["account", "add", "two words"], None);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("account name"));
    // Only the hash of the printed token is stored.
    let token = String::from_utf8_lossy(&first.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("token ").map(str::to_owned))
        .unwrap();
    assert_eq!(
        store.count(&format!(
            "SELECT COUNT(*) FROM api_tokens WHERE token_sha256 = '{token}'"
        )),
        0
    );
    assert_eq!(store.count("SELECT COUNT(*) FROM api_tokens"), 1);
}

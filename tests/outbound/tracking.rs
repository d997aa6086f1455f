//! Tracking end to end: a campaign with a tracking domain delivered by a real
//! relay to a fixture destination, its masked links followed with curl against
//! a real `outbound web` (302 to the exact original URL, clicks counted, forged
//! tokens 404), the open pixel, and the RFC 8058 one-click unsubscribe from the
//! List-Unsubscribe header the message carried.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Dest, FAST, Relay, Store, Web, account, outbound, wait_for};

const KEY: &str = "tracking-test-key-0123456789";
const VERP_KEY: &str = "verp-test-key-0123456789";

fn tracking_config() -> String {
    format!("[tracking]\nkey = \"{KEY}\"\nscheme = \"http\"\n")
}

fn relay_config() -> String {
    let fast = FAST.replace(
        "[bounces]\ndsn = false\n",
        &format!("[bounces]\ndsn = false\ndomain = \"bounce.test\"\nkey = \"{VERP_KEY}\"\n"),
    );
    format!(
        "{fast}\n[campaigns]\ninterval_ms = 100\n{}",
        tracking_config()
    )
}

fn id(store: &Store, sql: &str) -> i64 {
    store.count(sql)
}

fn domain_add(store: &Store, account: &str, domain: &str) -> std::process::Output {
    outbound(store, &["account", "domain", "add", account, domain], None)
}

/// `curl -si` of `url` (its host sent as the Host header to the web's port):
/// status, headers (lowercased names) and body.
fn curl(
    web: &Web,
    method: &str,
    url: &str,
    body: Option<&str>,
) -> (u16, Vec<(String, String)>, String) {
    let rest = url
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("not an http URL: {url}"));
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut cmd = Command::new("curl");
    cmd.args(["-si", "--max-time", "20", "-X", method, "-H"])
        .arg(format!("Host: {host}"))
        .args(["-A", "tracking-test/1.0"]);
    if let Some(b) = body {
        cmd.args([
            "-H",
            "Content-Type: application/x-www-form-urlencoded",
            "--data-binary",
            b,
        ]);
    }
    let out = cmd.arg(web.url(path)).output().unwrap();
    assert!(out.status.success(), "curl {url}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// A delivered message: recipient, raw header block, HTML and text parts.
struct Delivered {
    rcpt: String,
    raw: String,
    html: String,
    text: String,
}

fn delivered(dest: &Dest) -> Vec<Delivered> {
    dest.messages()
        .iter()
        .map(|m| {
            let raw = m["data"].as_str().unwrap().to_owned();
            let msg = mail_parser::MessageParser::default()
                .parse(raw.as_bytes())
                .unwrap();
            Delivered {
                rcpt: m["rcpt_tos"][0].as_str().unwrap().to_owned(),
                html: msg.body_html(0).unwrap().into_owned(),
                text: msg.body_text(0).unwrap().into_owned(),
                raw,
            }
        })
        .collect()
}

/// Every `href="..."` value of an HTML part.
fn hrefs(html: &str) -> Vec<String> {
    html.split("href=\"")
        .skip(1)
        .map(|h| h.split('"').next().unwrap().to_owned())
        .collect()
}

fn tracked_urls(text: &str, kind: &str) -> Vec<String> {
    text.split(|c: char| c.is_whitespace() || matches!(c, '"' | '<' | '>' | '(' | ')'))
        .filter(|w| w.starts_with("http://t.press.test/") && w.contains(kind))
        .map(|w| w.trim_end_matches(['.', ',']).to_owned())
        .collect()
}

/// A token minted here from the documented format (kind, LEB128 ids, 12 bytes of
/// HMAC-SHA256 over a domain prefix and the payload, base64url): the test holds
/// the format and the key, as an operator's own tools could.
fn mint(kind: u8, ids: &[u64]) -> String {
    use base64::Engine as _;
    use hmac::Mac as _;
    let mut payload = vec![kind];
    for &id in ids {
        let mut v = id;
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                payload.push(b);
                break;
            }
            payload.push(b | 0x80);
        }
    }
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(KEY.as_bytes()).unwrap();
    mac.update(b"outbound-tracking-v1\0");
    mac.update(&payload);
    payload.extend_from_slice(&mac.finalize().into_bytes()[..12]);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(payload)
}

fn show(web: &Web, token: &str, id: i64) -> Value {
    let a = web.call("GET", &format!("/api/v1/campaigns/{id}"), Some(token), None);
    assert_eq!(a.status, 200, "{}", a.body);
    a.json
}

fn run_campaign(web: &Web, token: &str, body: &Value) -> i64 {
    let a = web.call("POST", "/api/v1/campaigns", Some(token), Some(body));
    assert_eq!(a.status, 201, "{}", a.body);
    let id = a.json["id"].as_i64().unwrap();
    let a = web.call(
        "POST",
        &format!("/api/v1/campaigns/{id}/start"),
        Some(token),
        None,
    );
    assert_eq!(a.status, 200, "{}", a.body);
    wait_for(
        &format!("campaign {id} finished"),
        Duration::from_secs(30),
        || show(web, token, id)["state"] == "finished",
    );
    id
}

#[test]
fn masked_links_redirect_and_count_and_one_click_unsubscribes() {
    let store = Store::sqlite();
    let token = account(&store, "press");
    let other = account(&store, "other");
    let acc = id(&store, "SELECT id FROM accounts WHERE name = 'press'");
    // Operators assign tracking domains; one account each.
    assert!(domain_add(&store, "press", "T.Press.test").status.success());
    assert!(domain_add(&store, "other", "o.other.test").status.success());
    let taken = domain_add(&store, "other", "t.press.test");
    assert_eq!(taken.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&taken.stderr).contains("another account"));
    let ls = outbound(&store, &["account", "domain", "ls", "press"], None);
    assert_eq!(String::from_utf8_lossy(&ls.stdout), "t.press.test\n");

    store.exec(&format!(
        "INSERT INTO lists (account_id, name, opt_in) VALUES ({acc}, '<b>News</b> & co', 'single')"
    ));
    let news = id(&store, "SELECT id FROM lists WHERE name LIKE '<b>News%'");
    for (email, name) in [("ann@a.test", "Ann"), ("bob@a.test", "Bob")] {
        store.exec(&format!(
            "INSERT INTO subscribers (account_id, email, email_key, name) VALUES ({acc}, '{email}', '{email}', '{name}')"
        ));
        store.exec(&format!(
            "INSERT INTO list_members (list_id, subscriber_id, status) \
             SELECT {news}, id, 'confirmed' FROM subscribers WHERE email_key = '{email}'"
        ));
    }
    let web = Web::start(&store, &tracking_config());
    let dest = Dest::start(&[]);
    let _relay = Relay::start(
        &store,
        &relay_config(),
        &["--transport", &format!("a.test={}", dest.addr)],
    );

    let shop = "https://shop.example/item?id=1&ref=mail#top";
    let blog = "https://press.test/blog/?p=2";
    let campaign = |extra: Value| {
        let mut body = json!({
            "name": "Spring",
            "from": "News <news@press.test>",
            "subject": "Spring",
            "html": "<html><body><p><a class=\"btn\" href=\"https://shop.example/item?id=1&amp;ref=mail#top\" target=\"_blank\">Buy</a> \
                     <a href=\"mailto:help@press.test\">help</a> <a href=\"/relative\">rel</a> \
                     <a href=\"[UnsubscribeURL]\">Unsubscribe</a></p></body></html>",
            "text": "Shop: https://shop.example/item?id=1&ref=mail#top. Blog (https://press.test/blog/?p=2), bye.\nLeave: [UnsubscribeURL]\n",
            "lists": [news],
            "tracking_domains": ["t.press.test"],
        });
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    // Another account's tracking domain: 400 naming the field.
    let a = web.call(
        "POST",
        "/api/v1/campaigns",
        Some(&token),
        Some(&campaign(json!({"tracking_domains": ["o.other.test"]}))),
    );
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(
        a.json["error"]
            .as_str()
            .unwrap()
            .starts_with("tracking_domains:"),
        "{}",
        a.body
    );
    let _ = other;

    let first = run_campaign(&web, &token, &campaign(json!({"track_opens": true})));
    let messages = delivered(&dest);
    assert_eq!(messages.len(), 2);
    for m in &messages {
        // Every link masked, no original left; others untouched.
        for original in ["shop.example", "press.test/blog"] {
            assert!(!m.html.contains(original), "{}", m.html);
            assert!(!m.text.contains(original), "{}", m.text);
        }
        assert!(m.html.contains("href=\"mailto:help@press.test\""));
        assert!(m.html.contains("href=\"/relative\""));
        assert!(m.html.contains("class=\"btn\""));
        assert_eq!(tracked_urls(&m.html, "/l/").len(), 1, "{}", m.html);
        assert_eq!(tracked_urls(&m.text, "/l/").len(), 2, "{}", m.text);
        assert_eq!(tracked_urls(&m.html, "/o/").len(), 1, "{}", m.html);
        // One List-Unsubscribe, with the one-click URL first, and one -Post.
        // Our headers come first: a newline in front makes each one `\nname:`.
        let lower = format!("\n{}", m.raw.to_ascii_lowercase())
            .replace("\r\n", "\n")
            .replace("\n ", " ");
        assert_eq!(lower.matches("\nlist-unsubscribe:").count(), 1, "{}", m.raw);
        assert_eq!(
            lower
                .matches("\nlist-unsubscribe-post: list-unsubscribe=one-click")
                .count(),
            1
        );
        assert!(
            lower.contains("list-unsubscribe: <http://t.press.test/u/"),
            "{}",
            m.raw
        );
        assert!(lower.contains(", <mailto:"), "{}", m.raw);
    }
    let ann = messages.iter().find(|m| m.rcpt == "ann@a.test").unwrap();
    let bob = messages.iter().find(|m| m.rcpt == "bob@a.test").unwrap();
    let ann_shop = hrefs(&ann.html)[0].clone();
    let ann_blog = tracked_urls(&ann.text, "/l/")[1].clone();
    let bob_shop = hrefs(&bob.html)[0].clone();
    assert_ne!(ann_shop, bob_shop);

    for url in [&ann_shop, &ann_shop, &bob_shop] {
        let (status, headers, _) = curl(&web, "GET", url, None);
        assert_eq!(status, 302);
        assert_eq!(header(&headers, "location"), Some(shop));
    }
    let (status, headers, _) = curl(&web, "GET", &ann_blog, None);
    assert_eq!((status, header(&headers, "location")), (302, Some(blog)));
    // One character changed: 404, nothing counted.
    let mut forged = ann_shop.clone().into_bytes();
    let last = forged.len() - 3;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    assert_eq!(curl(&web, "GET", &forged, None).0, 404);
    assert_eq!(curl(&web, "GET", "http://t.press.test/l/xyz", None).0, 404);
    // The open pixel (track_opens).
    let pixel = tracked_urls(&ann.html, "/o/")[0].clone();
    let (status, headers, _) = curl(&web, "GET", &pixel, None);
    assert_eq!(
        (status, header(&headers, "content-type")),
        (200, Some("image/gif"))
    );

    let mut shown = Value::Null;
    wait_for("clicks counted", Duration::from_secs(10), || {
        shown = show(&web, &token, first);
        shown["clicks"] == 4 && shown["opens"] == 1
    });
    assert_eq!(shown["unique_clickers"], 2, "{shown}");
    assert_eq!(shown["unique_opens"], 1, "{shown}");
    assert_eq!(shown["tracking_domains"], json!(["t.press.test"]));
    let links = web.call(
        "GET",
        &format!("/api/v1/campaigns/{first}/links"),
        Some(&token),
        None,
    );
    assert_eq!(links.status, 200, "{}", links.body);
    let l = links.json["links"].as_array().unwrap();
    assert_eq!(l.len(), 2, "{}", links.body);
    assert_eq!(
        (
            l[0]["url"].as_str(),
            l[0]["clicks"].as_i64(),
            l[0]["unique_clickers"].as_i64()
        ),
        (Some(shop), Some(3), Some(2))
    );
    assert_eq!(
        (
            l[1]["url"].as_str(),
            l[1]["clicks"].as_i64(),
            l[1]["unique_clickers"].as_i64()
        ),
        (Some(blog), Some(1), Some(1))
    );
    assert_eq!(store.count("SELECT COUNT(*) FROM clicks WHERE user_agent = 'tracking-test/1.0' AND ip = '127.0.0.1'"), 4);
    // Another account sees none of it.
    let a = web.call(
        "GET",
        &format!("/api/v1/campaigns/{first}/links"),
        Some(&other),
        None,
    );
    assert_eq!(a.status, 404);
    let stats = outbound(&store, &["campaign", "stats", &first.to_string()], None);
    assert!(
        String::from_utf8_lossy(&stats.stdout).contains("clicks 4\nunique_clickers 2\nopens 1\n")
    );

    // Unsubscribe: the page escapes, the one-click POST to the header's URL works.
    let list_unsubscribe = ann
        .raw
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("list-unsubscribe:"))
        .unwrap();
    let url = list_unsubscribe
        .split('<')
        .nth(1)
        .and_then(|u| u.split('>').next())
        .unwrap()
        .to_owned();
    assert!(url.starts_with("http://t.press.test/u/"));
    assert!(ann.text.contains(&url), "[UnsubscribeURL] in the text part");
    let (status, _, page) = curl(&web, "GET", &url, None);
    assert_eq!(status, 200);
    assert!(page.contains("&lt;b&gt;News&lt;/b&gt; &amp; co"), "{page}");
    assert!(!page.contains("<b>News"), "{page}");
    assert!(page.contains("method=\"post\"") && page.contains("ann@a.test"));
    assert_eq!(
        store.count("SELECT COUNT(*) FROM list_members WHERE status = 'unsubscribed'"),
        0,
        "a GET changes nothing"
    );
    for _ in 0..2 {
        let (status, _, page) = curl(&web, "POST", &url, Some("List-Unsubscribe=One-Click"));
        assert_eq!(status, 200);
        assert!(page.contains("You are unsubscribed"));
    }
    assert_eq!(
        store.count(&format!(
            "SELECT COUNT(*) FROM list_members m JOIN subscribers s ON s.id = m.subscriber_id \
             WHERE s.email_key = 'ann@a.test' AND m.status = 'unsubscribed' AND m.unsubscribed_by = {first}"
        )),
        1
    );
    assert_eq!(show(&web, &token, first)["unsubscribed"], 1);
    let mut forged_u = url.clone();
    forged_u.push('A');
    assert_eq!(
        curl(&web, "POST", &forged_u, Some("List-Unsubscribe=One-Click")).0,
        404
    );

    // The next campaign (no open pixel) skips ann.
    let second = run_campaign(&web, &token, &campaign(json!({"name": "Summer"})));
    let after = delivered(&dest);
    let new: Vec<&Delivered> = after.iter().skip(2).collect();
    assert_eq!(new.len(), 1, "{second}");
    assert_eq!(new[0].rcpt, "bob@a.test");
    assert!(!new[0].html.contains("/o/"), "no pixel without track_opens");
    // Even a well-signed open token of that campaign is 404; of the first, 200.
    let bob_id = store.count("SELECT id FROM subscribers WHERE email_key = 'bob@a.test'") as u64;
    let open_url = |c: i64| format!("http://t.press.test/o/{}.gif", mint(2, &[c as u64, bob_id]));
    assert_eq!(curl(&web, "GET", &open_url(second), None).0, 404);
    assert_eq!(curl(&web, "GET", &open_url(first), None).0, 200);
    // A link token of a link the campaign does not have: 404.
    let unknown = format!(
        "http://t.press.test/l/{}",
        mint(1, &[first as u64, 999, bob_id])
    );
    assert_eq!(curl(&web, "GET", &unknown, None).0, 404);
    let known = format!(
        "http://t.press.test/l/{}",
        mint(1, &[first as u64, 1, bob_id])
    );
    assert_eq!(
        curl(&web, "GET", &known, None).0,
        302,
        "the minted format is the relay's"
    );
    assert!(tracked_urls(&new[0].html, "/l/").len() == 1);
}

#[test]
fn campaigns_without_tracking_domains_are_sent_as_written() {
    let store = Store::sqlite();
    let token = account(&store, "press");
    let acc = id(&store, "SELECT id FROM accounts WHERE name = 'press'");
    store.exec(&format!(
        "INSERT INTO lists (account_id, name, opt_in) VALUES ({acc}, 'news', 'single')"
    ));
    let news = id(&store, "SELECT id FROM lists WHERE name = 'news'");
    store.exec(&format!(
        "INSERT INTO subscribers (account_id, email, email_key) VALUES ({acc}, 'ann@a.test', 'ann@a.test')"
    ));
    store.exec(&format!(
        "INSERT INTO list_members (list_id, subscriber_id, status) SELECT {news}, id, 'confirmed' FROM subscribers"
    ));
    let web = Web::start(&store, &tracking_config());
    let dest = Dest::start(&[]);
    let _relay = Relay::start(
        &store,
        &relay_config(),
        &["--transport", &format!("a.test={}", dest.addr)],
    );
    let body = json!({
        "name": "Plain", "from": "news@press.test", "subject": "s",
        "html": "<a href=\"https://shop.example/\">x</a>", "lists": [news],
    });
    // The tag needs a tracking domain; so does the pixel.
    for (extra, field) in [
        (json!({"text": "[UnsubscribeURL]"}), "tracking_domains"),
        (json!({"track_opens": true}), "track_opens"),
    ] {
        let mut b = body.clone();
        b.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let a = web.call("POST", "/api/v1/campaigns", Some(&token), Some(&b));
        assert_eq!(a.status, 400, "{}", a.body);
        assert!(
            a.json["error"].as_str().unwrap().starts_with(field),
            "{}",
            a.body
        );
    }
    run_campaign(&web, &token, &body);
    let m = &delivered(&dest)[0];
    assert!(
        m.html.contains("href=\"https://shop.example/\""),
        "{}",
        m.html
    );
    assert_eq!(store.count("SELECT COUNT(*) FROM campaign_links"), 0);
    // The mailto: List-Unsubscribe of VERP, as before.
    let lower = format!("\n{}", m.raw.to_ascii_lowercase());
    assert_eq!(lower.matches("\nlist-unsubscribe:").count(), 1);
    assert!(lower.contains("list-unsubscribe: <mailto:"));
}

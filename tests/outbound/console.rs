//! The web console (`/` of `outbound web`) over real HTTP: curl with a cookie jar
//! for logins, sessions, CSRF, account isolation, the admin pages and escaping;
//! and Debian's headless chromium (selenium, `fixtures/console_browser.py`)
//! driving it as a person would, with a relay delivering to a fixture server.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::{Dest, FAST, Relay, Store, Web, account, outbound, wait_for};

const XSS: &str = "<script>alert(1)</script>";
const XSS_ESCAPED: &str = "&lt;script&gt;alert(1)&lt;/script&gt;";

/// A browser-like curl client: its own cookie jar.
pub(crate) struct Client<'a> {
    web: &'a Web,
    jar: PathBuf,
    dir: &'a Path,
}

pub(crate) struct Page {
    pub(crate) status: u16,
    headers: String,
    pub(crate) body: String,
}

impl<'a> Client<'a> {
    pub(crate) fn new(web: &'a Web, dir: &'a Path, name: &str) -> Self {
        Self {
            web,
            jar: dir.join(format!("{name}.jar")),
            dir,
        }
    }

    fn request(&self, method: &str, path: &str, form: &[(&str, &str)]) -> Page {
        let out = self.dir.join("out");
        let head = self.dir.join("head");
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "30", "-X", method, "-b"])
            .arg(&self.jar)
            .arg("-c")
            .arg(&self.jar)
            .arg("-o")
            .arg(&out)
            .arg("-D")
            .arg(&head)
            .args(["-w", "%{http_code}"]);
        for (k, v) in form {
            cmd.arg("--data-urlencode").arg(format!("{k}={v}"));
        }
        cmd.arg(self.web.url(path));
        let o = cmd.output().unwrap();
        assert!(
            o.status.success(),
            "curl: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        Page {
            status: String::from_utf8_lossy(&o.stdout).trim().parse().unwrap(),
            headers: std::fs::read_to_string(&head).unwrap_or_default(),
            body: std::fs::read_to_string(&out).unwrap_or_default(),
        }
    }

    pub(crate) fn get(&self, path: &str) -> Page {
        self.request("GET", path, &[])
    }

    /// POSTs `form` with the page's CSRF token (from `token_page`).
    pub(crate) fn post(&self, path: &str, token: &str, form: &[(&str, &str)]) -> Page {
        let mut all = vec![("csrf", token)];
        all.extend_from_slice(form);
        self.request("POST", path, &all)
    }

    pub(crate) fn login(&self, name: &str, password: &str) -> Page {
        let form = self.get("/login");
        let token = csrf(&form.body);
        self.request(
            "POST",
            "/login",
            &[("csrf", &token), ("account", name), ("password", password)],
        )
    }
}

/// The value of the first hidden csrf field of a page.
pub(crate) fn csrf(body: &str) -> String {
    let at = body.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    body[at..].split('"').next().unwrap().to_owned()
}

pub(crate) fn passwd(store: &Store, name: &str, password: &str) -> std::process::Output {
    outbound(
        store,
        &["account", "passwd", name],
        Some(format!("{password}\n").as_bytes()),
    )
}

fn admin(store: &Store, name: &str) {
    let out = outbound(store, &["account", "add", name, "--admin"], None);
    assert!(out.status.success());
}

fn location(p: &Page) -> String {
    p.headers
        .lines()
        .find_map(|l| {
            l.strip_prefix("location: ")
                .or_else(|| l.strip_prefix("Location: "))
        })
        .unwrap_or("")
        .trim()
        .to_owned()
}

/// The id at the end of a `/things/{id}` redirect.
fn id_of(p: &Page) -> i64 {
    location(p).rsplit('/').next().unwrap().parse().unwrap()
}

#[test]
fn console_logins_sessions_csrf_isolation_and_escaping() {
    logins_sessions_csrf_isolation_and_escaping(&Store::sqlite());
}

/// The same on MariaDB: the console's own reads and writes in its dialect.
#[test]
fn console_logins_sessions_csrf_isolation_and_escaping_on_mariadb() {
    logins_sessions_csrf_isolation_and_escaping(&Store::mariadb());
}

fn logins_sessions_csrf_isolation_and_escaping(store: &Store) {
    account(store, "ann");
    account(store, "bob");
    admin(store, "root");
    assert!(
        !passwd(store, "ann", "short").status.success(),
        "12 characters at least"
    );
    for name in ["ann", "bob", "root"] {
        let out = passwd(store, name, &format!("{name} has a long password"));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        store.count("SELECT COUNT(*) FROM accounts WHERE password_hash LIKE '$argon2id$%'"),
        3
    );
    let web = Web::start(store, "");
    let dir = tempfile::tempdir().unwrap();
    let ann = Client::new(&web, dir.path(), "ann");
    let bob = Client::new(&web, dir.path(), "bob");
    let root = Client::new(&web, dir.path(), "root");

    // Not signed in: every page sends to the login form.
    let p = ann.get("/campaigns");
    assert_eq!((p.status, location(&p).as_str()), (303, "/login"));

    // A wrong password fails; the login form's CSRF token is checked too.
    let p = ann.login("ann", "ann has a wrong password");
    assert_eq!(p.status, 401);
    assert!(p.body.contains("wrong account or password"));
    let p = ann.request(
        "POST",
        "/login",
        &[("account", "ann"), ("password", "ann has a long password")],
    );
    assert_eq!(p.status, 403, "login without its CSRF token");

    // The right one: a session cookie with its attributes.
    let p = ann.login("ann", "ann has a long password");
    assert_eq!(p.status, 303, "{}", p.body);
    let cookie = p
        .headers
        .lines()
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with("set-cookie: outbound_session=")
        })
        .expect("a session cookie")
        .to_owned();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain-HTTP default: {cookie}");
    let value = cookie.split(['=', ';']).nth(1).unwrap();
    assert_eq!(value.len(), 64);
    assert_eq!(
        store.count(&format!(
            "SELECT COUNT(*) FROM console_sessions WHERE id_sha256 = '{value}'"
        )),
        0,
        "only the hash of the session id is stored"
    );

    // The dashboard, with the security headers.
    let home = ann.get("/");
    assert_eq!(home.status, 200);
    let h = home.headers.to_ascii_lowercase();
    assert!(
        h.contains("content-security-policy: default-src 'self'"),
        "{h}"
    );
    assert!(h.contains("x-frame-options: deny"));
    assert!(!home.body.contains("<script>"), "no inline script");
    let token = csrf(&home.body);

    // CSRF missing or wrong → 403, and nothing is made.
    let p = ann.request("POST", "/lists", &[("name", "nope")]);
    assert_eq!(p.status, 403);
    let p = ann.post("/lists", "0000", &[("name", "nope")]);
    assert_eq!(p.status, 403);
    assert_eq!(store.count("SELECT COUNT(*) FROM lists"), 0);

    // XSS payloads in every shown field come back as text.
    let p = ann.post("/lists", &token, &[("name", XSS), ("opt_in", "single")]);
    assert_eq!(p.status, 303, "{}", p.body);
    let list = id_of(&p);
    let p = ann.post(
        &format!("/lists/{list}/subscribers"),
        &token,
        &[("email", "x@xss.test"), ("name", XSS)],
    );
    assert_eq!(p.status, 303, "{}", p.body);
    let p = ann.post(
        "/campaigns",
        &token,
        &[
            ("name", XSS),
            ("from", "News <news@xss.test>"),
            ("subject", XSS),
            ("text", "hello"),
            ("lists", &list.to_string()),
        ],
    );
    assert_eq!(p.status, 303, "{}", p.body);
    let campaign = id_of(&p);
    for path in [
        "/lists".to_owned(),
        format!("/lists/{list}"),
        format!("/lists/{list}?q=x%40"),
        "/campaigns".to_owned(),
        format!("/campaigns/{campaign}"),
        format!("/campaigns/{campaign}/live"),
    ] {
        let p = ann.get(&path);
        assert_eq!(p.status, 200, "{path}");
        assert!(!p.body.contains(XSS), "{path}: unescaped");
        assert!(
            p.body.contains(XSS_ESCAPED) || path.ends_with("/live") || path.contains("?q="),
            "{path}: {}",
            p.body
        );
    }
    assert!(
        ann.get(&format!("/lists/{list}?q=x%40"))
            .body
            .contains(XSS_ESCAPED)
    );

    // An upload without script (multipart, the token its first field) lands on
    // the import's page, which reaches "finished"; without the token it is 403.
    let csv = dir.path().join("up.csv");
    std::fs::write(&csv, "email,name\nu1@up.test,U1\nu2@up.test,U2\n").unwrap();
    let upload = |fields: &[String]| -> (u16, String) {
        let mut cmd = Command::new("curl");
        cmd.args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{redirect_url}",
            "-b",
        ])
        .arg(&ann.jar);
        for f in fields {
            cmd.arg("-F").arg(f);
        }
        let o = cmd
            .arg(web.url(&format!("/lists/{list}/upload")))
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        let (code, url) = out.split_once(' ').unwrap_or((&out, ""));
        (code.parse().unwrap(), url.to_owned())
    };
    let file = format!("file=@{};type=text/csv", csv.display());
    assert_eq!(upload(std::slice::from_ref(&file)).0, 403);
    assert_eq!(upload(&["csrf=wrong".into(), file.clone()]).0, 403);
    let (code, url) = upload(&[format!("csrf={token}"), file]);
    assert_eq!(code, 303);
    let import_page = url
        .split_once("/imports/")
        .map(|(_, id)| format!("/imports/{id}"))
        .unwrap();
    wait_for("the import to finish", Duration::from_secs(20), || {
        ann.get(&import_page)
            .body
            .contains("id=\"import-state\">finished<")
    });
    assert_eq!(bob_get_status(&web, dir.path(), &import_page), 404);
    let p = ann.get(&format!("/lists/{list}?q=up.test"));
    assert!(p.body.contains("u1@up.test") && p.body.contains("u2@up.test"));

    // A draft is edited in place; what the tracking code records is escaped too.
    let p = ann.get(&format!("/campaigns/{campaign}/edit"));
    assert_eq!(p.status, 200);
    assert!(p.body.contains(XSS_ESCAPED) && !p.body.contains(XSS));
    let p = ann.post(
        &format!("/campaigns/{campaign}/edit"),
        &token,
        &[
            ("name", XSS),
            ("from", "News <news@xss.test>"),
            ("subject", "Edited <b>subject</b>"),
            ("text", "hello again"),
            ("lists", &list.to_string()),
            ("rate", "5"),
        ],
    );
    assert_eq!(p.status, 303, "{}", p.body);
    store.exec(&format!(
        "INSERT INTO campaign_links (campaign_id, url, url_sha256) \
         VALUES ({campaign}, 'https://x.test/?q=<script>alert(1)</script>', 'h1')"
    ));
    let link = store.count("SELECT MAX(id) FROM campaign_links");
    store.exec(&format!(
        "INSERT INTO clicks (at, campaign_id, link_id, subscriber_id) VALUES \
         ('2026-01-01 00:00:00.000', {campaign}, {link}, 1), \
         ('2026-01-01 00:00:01.000', {campaign}, {link}, 1)"
    ));
    let p = ann.get(&format!("/campaigns/{campaign}"));
    assert!(
        p.body.contains("Edited &lt;b&gt;subject&lt;/b&gt;"),
        "{}",
        p.body
    );
    assert!(p.body.contains("5/s"));
    assert!(p.body.contains("q=&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!p.body.contains(XSS));
    assert!(
        p.body
            .contains("<td class=\"num\">2</td><td class=\"num\">1</td>"),
        "2 clicks, 1 clicker: {}",
        p.body
    );

    // Another account's list and campaign are 404s, for reading and acting.
    assert!(bob.login("bob", "bob has a long password").status == 303);
    let bob_token = csrf(&bob.get("/").body);
    assert_eq!(bob.get(&format!("/lists/{list}")).status, 404);
    assert_eq!(bob.get(&format!("/campaigns/{campaign}")).status, 404);
    assert_eq!(bob.get(&format!("/campaigns/{campaign}/live")).status, 404);
    let p = bob.post(
        &format!("/campaigns/{campaign}/action"),
        &bob_token,
        &[("action", "start")],
    );
    assert_eq!(p.status, 404);
    let p = bob.post(
        &format!("/lists/{list}/subscribers"),
        &bob_token,
        &[("email", "y@xss.test")],
    );
    assert_eq!(p.status, 404);
    assert_eq!(bob.get(&format!("/campaigns/{campaign}/edit")).status, 404);
    let p = bob.post(
        &format!("/campaigns/{campaign}/edit"),
        &bob_token,
        &[
            ("name", "x"),
            ("from", "a@b.test"),
            ("subject", "s"),
            ("text", "t"),
        ],
    );
    assert_eq!(p.status, 404);
    assert!(!bob.get("/lists").body.contains(XSS_ESCAPED));
    // Only a draft can be edited.
    let p = ann.post(
        &format!("/campaigns/{campaign}/action"),
        &token,
        &[("action", "cancel")],
    );
    assert_eq!(p.status, 303, "{}", p.body);
    assert_eq!(ann.get(&format!("/campaigns/{campaign}/edit")).status, 409);
    // A session's token is its own: ann's token does not work for bob.
    assert_eq!(bob.post("/lists", &token, &[("name", "b")]).status, 403);

    // The admin pages: 403 for others; the admin manages accounts and suppression.
    assert_eq!(ann.get("/accounts").status, 403);
    assert_eq!(ann.get("/suppression").status, 403);
    assert_eq!(
        ann.post(
            "/accounts",
            &token,
            &[("name", "eve"), ("password", "eve has a long password")]
        )
        .status,
        403
    );
    assert_eq!(
        ann.post("/suppression/add", &token, &[("address", "a@b.test")])
            .status,
        403
    );
    assert!(root.login("root", "root has a long password").status == 303);
    let root_token = csrf(&root.get("/accounts").body);
    let p = root.post(
        "/accounts",
        &root_token,
        &[("name", "eve"), ("password", "eve has a long password")],
    );
    assert_eq!(p.status, 200, "{}", p.body);
    assert!(p.body.contains("account eve created"));
    let p = root.post(
        "/suppression/add",
        &root_token,
        &[("address", "Bad@Sup.test"), ("reason", XSS)],
    );
    assert_eq!(p.status, 303, "{}", p.body);
    let p = root.get("/suppression?q=sup.test");
    assert!(p.body.contains("bad@sup.test") && p.body.contains(XSS_ESCAPED));
    assert!(!p.body.contains(XSS));
    let p = root.post(
        "/suppression/remove",
        &root_token,
        &[("address", "bad@sup.test")],
    );
    assert_eq!(p.status, 303);
    assert_eq!(store.count("SELECT COUNT(*) FROM suppression"), 0);
    let eve = Client::new(&web, dir.path(), "eve");
    assert_eq!(eve.login("eve", "eve has a long password").status, 303);

    // Logout ends the session: the old cookie no longer works.
    let saved = std::fs::read_to_string(&ann.jar).unwrap();
    let p = ann.post("/logout", &token, &[]);
    assert_eq!((p.status, location(&p).as_str()), (303, "/login"));
    std::fs::write(&ann.jar, saved).unwrap();
    let p = ann.get("/campaigns");
    assert_eq!((p.status, location(&p).as_str()), (303, "/login"));

    // Login attempts are bounded per account and address.
    let mut last = 0;
    for _ in 0..12 {
        last = bob.login("bob", "bob has a wrong password").status;
    }
    assert_eq!(last, 429);
}

/// What another signed-in account gets for `path`.
fn bob_get_status(web: &Web, dir: &Path, path: &str) -> u16 {
    let bob = Client::new(web, dir, "bob-isolation");
    assert_eq!(bob.login("bob", "bob has a long password").status, 303);
    bob.get(path).status
}

/// Chromium headless (Debian's chromium + chromium-driver + python3-selenium)
/// drives the console; the relay delivers the campaign to a fixture server.
#[test]
fn a_person_runs_a_campaign_in_the_console_with_a_browser() {
    if Command::new("/usr/bin/python3")
        .args(["-c", "import selenium"])
        .status()
        .map_or(true, |s| !s.success())
        || !Path::new("/usr/bin/chromedriver").exists()
    {
        panic!(
            "chromium, chromium-driver and python3-selenium are needed (scripts/test installs them)"
        );
    }
    let store = Store::sqlite();
    account(&store, "press");
    assert!(
        passwd(&store, "press", "press has a long password")
            .status
            .success()
    );
    let domain = outbound(
        &store,
        &["account", "domain", "add", "press", "t.press.test"],
        None,
    );
    assert!(domain.status.success(), "{domain:?}");
    // The same key for the relay (masking) and the web (redirects, unsubscribes).
    let tracking = "[tracking]\nkey = \"console-tracking-key-0123456789\"\nscheme = \"http\"\n";
    let dest = Dest::start(&[]);
    let web = Web::start(&store, tracking);
    let _relay = Relay::start(
        &store,
        &format!("{FAST}\n[campaigns]\ninterval_ms = 100\n{tracking}"),
        &["--transport", &format!("b.test={}", dest.addr)],
    );
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("people.csv");
    let mut text = String::from("email,name\n");
    for i in 0..40 {
        text.push_str(&format!("p{i}@b.test,Person {i}\n"));
    }
    std::fs::write(&csv, text).unwrap();
    let shots = dir.path().join("shots");
    std::fs::create_dir_all(&shots).unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/outbound/fixtures/console_browser.py"
    );
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = Command::new("/usr/bin/python3")
        .arg(script)
        .args([&web.url(""), "press", "press has a long password"])
        .arg(&csv)
        .arg(&shots)
        .arg("t.press.test")
        .stdin(std::process::Stdio::piped())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    // Once delivered, a message's masked link and one-click URL go to the
    // script (stdin; dropped on a panic here, so the script stops too).
    wait_for("40 deliveries", Duration::from_secs(90), || {
        dest.recipients().len() >= 40
    });
    let (click, unsubscribe) = tracked_urls(&dest.messages()[0]["data"]);
    let to_web = |url: &str| {
        let rest = url
            .strip_prefix("http://t.press.test/")
            .unwrap_or_else(|| panic!("{url}"));
        web.url(&format!("/{rest}"))
    };
    let urls = serde_json::json!({"click": to_web(&click), "unsubscribe": to_web(&unsubscribe)});
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().unwrap();
        let _ = writeln!(stdin, "{urls}");
    }
    let status = child.wait().unwrap();
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    assert!(
        status.success(),
        "browser script failed:\n{stdout}\n{}\nweb log:\n{}",
        std::fs::read_to_string(&err_path).unwrap_or_default(),
        web.log()
    );
    // The counts the browser saw are the destination's.
    let delivered: usize = stdout
        .lines()
        .find_map(|l| l.strip_prefix("delivered "))
        .and_then(|n| n.trim().parse().ok())
        .expect("the script prints what the page counted");
    assert_eq!(delivered, dest.recipients().len());
    // Screenshots are not blank: many distinct colours each.
    let mut seen = 0;
    for entry in std::fs::read_dir(&shots).unwrap() {
        let path = entry.unwrap().path();
        let colours = distinct_colours(&path);
        assert!(colours > 50, "{}: {colours} colours", path.display());
        seen += 1;
    }
    assert!(seen >= 4, "{seen} screenshots");
    if let Ok(keep) = std::env::var("CONSOLE_SHOTS") {
        let _ = Command::new("cp").arg("-r").arg(&shots).arg(keep).status();
    }
}

/// A delivered message's masked HTML link and its List-Unsubscribe URL.
fn tracked_urls(raw: &serde_json::Value) -> (String, String) {
    let raw = raw.as_str().unwrap();
    let msg = mail_parser::MessageParser::default()
        .parse(raw.as_bytes())
        .unwrap();
    let html = msg.body_html(0).unwrap();
    let click = html
        .split("href=\"")
        .skip(1)
        .map(|h| h.split('"').next().unwrap())
        .find(|h| h.contains("/l/"))
        .unwrap_or_else(|| panic!("no masked link: {html}"))
        .to_owned();
    let header = msg
        .header_raw("List-Unsubscribe")
        .unwrap_or_else(|| panic!("no List-Unsubscribe: {raw}"));
    let unsubscribe = header
        .split(['<', '>'])
        .map(str::trim)
        .find(|u| u.starts_with("http://"))
        .unwrap_or_else(|| panic!("no one-click URL: {header}"))
        .to_owned();
    (click, unsubscribe)
}

/// Distinct RGB colours of a PNG (decoded with the `png` crate).
fn distinct_colours(path: &Path) -> usize {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let step = info.color_type.samples();
    assert!(step >= 3, "{:?}", info.color_type);
    let mut colours = std::collections::HashSet::new();
    for px in buf[..info.buffer_size()].chunks(step) {
        colours.insert((px[0], px[1], px[2]));
    }
    colours.len()
}

#[test]
fn a_lists_name_and_sender_are_changed_in_the_console_with_csrf_and_per_account() {
    let store = Store::sqlite();
    for name in ["ann", "bob"] {
        account(&store, name);
        assert!(
            passwd(&store, name, &format!("{name} has a long password"))
                .status
                .success()
        );
    }
    let web = Web::start(&store, "");
    let dir = tempfile::tempdir().unwrap();
    let ann = Client::new(&web, dir.path(), "ann");
    let bob = Client::new(&web, dir.path(), "bob");
    assert_eq!(ann.login("ann", "ann has a long password").status, 303);
    assert_eq!(bob.login("bob", "bob has a long password").status, 303);
    let token = csrf(&ann.get("/lists").body);
    let p = ann.post(
        "/lists",
        &token,
        &[
            ("name", "news"),
            ("opt_in", "double"),
            ("sender", "lists@press.test"),
        ],
    );
    assert_eq!(p.status, 303, "{}", p.body);
    let id = id_of(&p);
    let page = ann.get(&format!("/lists/{id}"));
    assert!(
        page.body.contains("value=\"lists@press.test\""),
        "{}",
        page.body
    );

    let path = format!("/lists/{id}/settings");
    let change = [("name", "<b>news</b>"), ("sender", "editor@press.test")];
    // Without the token, or from another account: nothing changes.
    assert_eq!(ann.post(&path, "wrong", &change).status, 403);
    let bob_token = csrf(&bob.get("/lists").body);
    assert_eq!(bob.post(&path, &bob_token, &change).status, 404);
    let bad = ann.post(&path, &token, &[("name", "news"), ("sender", "nope")]);
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.body.contains("sender"), "{}", bad.body);
    let sender = || {
        store.count(&format!(
            "SELECT COUNT(*) FROM lists WHERE id = {id} AND sender = 'lists@press.test'"
        ))
    };
    assert_eq!(sender(), 1);

    let p = ann.post(&path, &token, &change);
    assert_eq!(p.status, 303, "{}", p.body);
    let page = ann.get(&format!("/lists/{id}"));
    assert!(
        page.body.contains("value=\"editor@press.test\""),
        "{}",
        page.body
    );
    // The name is shown escaped, never as markup.
    assert!(
        page.body.contains("&lt;b&gt;news&lt;/b&gt;"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("<b>news</b>"), "{}", page.body);
    // An empty sender clears it.
    let p = ann.post(&path, &token, &[("name", "news"), ("sender", "")]);
    assert_eq!(p.status, 303, "{}", p.body);
    assert_eq!(
        store.count(&format!(
            "SELECT COUNT(*) FROM lists WHERE id = {id} AND sender IS NULL AND name = 'news'"
        )),
        1
    );
}

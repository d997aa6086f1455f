//! Imports: CSV files and zip, gzip and RAR archives uploaded to `outbound web`
//! (curl) or given to `outbound list import`, on SQLite and MariaDB. Bad rows are
//! reported with their line numbers and skipped; files that cannot be imported
//! (no `email` column, no or several CSVs in an archive, a corrupt archive) fail
//! with a reason; every upload error is its own status. The archives are made by
//! Python's zipfile/gzip and by `fixtures/make_rar.py`, and read by the relay
//! through the zip crate, flate2 and libarchive.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Store, Web, account, outbound, python, wait_for};

/// A CSV with good rows, bad ones (line numbers in the comments), a duplicate
/// and an empty attribute cell.
const PEOPLE: &str = "\
Email,Name,City,Plan
ann@example.test,Ann,Oslo,pro
not-an-address,Nobody,Bergen,free
bob@example.test,Bob
carol@example.test,Carol,,free
ANN@example.test,Ann Again,Oslo,pro

dave@example.test,Dave,Rome,free
";

fn create_list(web: &Web, token: &str, opt_in: &str) -> i64 {
    let a = web.call(
        "POST",
        "/api/v1/lists",
        Some(token),
        Some(&json!({ "name": "news", "opt_in": opt_in })),
    );
    assert_eq!(a.status, 201, "{}", a.body);
    a.json["id"].as_i64().unwrap()
}

fn upload(web: &Web, token: &str, list: i64, body: &[u8], content_type: &str) -> i64 {
    let a = web.send(
        "POST",
        &format!("/api/v1/lists/{list}/imports"),
        Some(token),
        Some(body),
        content_type,
    );
    assert_eq!(a.status, 202, "{}", a.body);
    a.json["id"].as_i64().unwrap()
}

/// Polls the import until it has ended; its final JSON.
fn finished(web: &Web, token: &str, id: i64) -> Value {
    let mut last = Value::Null;
    wait_for("the import to end", Duration::from_secs(30), || {
        let a = web.call("GET", &format!("/api/v1/imports/{id}"), Some(token), None);
        assert_eq!(a.status, 200, "{}", a.body);
        last = a.json;
        matches!(last["state"].as_str(), Some("finished" | "failed"))
    });
    last
}

fn errors(import: &Value) -> Vec<(u64, String, String)> {
    import["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["line"].as_u64().unwrap(),
                e["email"].as_str().unwrap().to_owned(),
                e["error"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The import of [`PEOPLE`] (in whatever wrapping) came out right.
fn assert_people(store: &Store, import: &Value, list: i64) {
    assert_eq!(import["state"], "finished", "{import}");
    assert_eq!(import["list_id"], list);
    assert_eq!(import["rows_read"], 6, "{import}");
    // ann twice (merged), carol, dave.
    assert_eq!(import["added"], 3, "{import}");
    assert_eq!(import["updated"], 0, "{import}");
    assert_eq!(import["rejected"], 2, "{import}");
    assert_eq!(
        errors(import),
        vec![
            (
                3,
                "not-an-address".into(),
                "email: not an email address (local@domain)".into()
            ),
            (
                4,
                "bob@example.test".into(),
                "expected 4 fields, found 2".into()
            ),
        ]
    );
    assert!(import.get("failure").is_none());
    let concat = if matches!(store, Store::Mariadb(_)) {
        "CONCAT(email, '|', name, '|', attributes)"
    } else {
        "email || '|' || name || '|' || attributes"
    };
    assert_eq!(
        store.column(&format!(
            "SELECT {concat} FROM subscribers ORDER BY email_key"
        )),
        vec![
            "ANN@example.test|Ann Again|{\"City\":\"Oslo\",\"Plan\":\"pro\"}",
            "carol@example.test|Carol|{\"Plan\":\"free\"}",
            "dave@example.test|Dave|{\"City\":\"Rome\",\"Plan\":\"free\"}",
        ]
    );
}

fn make_rar(dir: &Path, entries: &[(&str, &[u8])], truncate: Option<usize>) -> Vec<u8> {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/outbound/fixtures/make_rar.py");
    let out = dir.join("out.rar");
    let mut cmd = std::process::Command::new("/usr/bin/python3");
    cmd.arg(script).arg(&out);
    for (i, (name, data)) in entries.iter().enumerate() {
        let path = dir.join(format!("entry-{i}"));
        std::fs::write(&path, data).unwrap();
        cmd.arg(format!("{name}={}", path.display()));
    }
    if let Some(n) = truncate {
        cmd.args(["--truncate", &n.to_string()]);
    }
    let status = cmd.status().unwrap();
    assert!(status.success());
    std::fs::read(&out).unwrap()
}

/// A zip made by Python's zipfile (deflated) with `entries`.
fn make_zip(dir: &Path, entries: &[(&str, &str)]) -> Vec<u8> {
    let out = dir.join("out.zip");
    let script = format!(
        "import json, sys, zipfile\nwith zipfile.ZipFile({:?}, 'w', zipfile.ZIP_DEFLATED) as z:\n    for name, text in json.load(sys.stdin):\n        z.writestr(name, text)\n",
        out.display().to_string()
    );
    python(&script, &serde_json::to_string(entries).unwrap());
    std::fs::read(&out).unwrap()
}

fn make_gzip(dir: &Path, text: &str) -> Vec<u8> {
    let out = dir.join("out.gz");
    let script = format!(
        "import gzip, sys\nwith gzip.open({:?}, 'wb') as f:\n    f.write(sys.stdin.buffer.read())\n",
        out.display().to_string()
    );
    python(&script, text);
    std::fs::read(&out).unwrap()
}

#[test]
fn a_csv_upload_imports_good_rows_and_reports_bad_ones_by_line() {
    let store = Store::sqlite();
    let token = account(&store, "press");
    let web = Web::start(&store, "");
    let list = create_list(&web, &token, "double");
    // Invalid UTF-8 in a name cell, on line 9 of this file.
    let mut csv = PEOPLE.as_bytes().to_vec();
    csv.extend_from_slice(b"erin@example.test,Er\xffin,Oslo,free\n");
    let id = upload(&web, &token, list, &csv, "text/csv; charset=utf-8");
    let import = finished(&web, &token, id);
    assert_eq!(import["rows_read"], 7, "{import}");
    assert_eq!(import["rejected"], 3);
    assert_eq!(
        errors(&import)[2],
        (9, "erin@example.test".into(), "name: not UTF-8".into())
    );
    let shown = web.call("GET", &format!("/api/v1/lists/{list}"), Some(&token), None);
    assert_eq!(
        shown.json["members"],
        json!({ "unconfirmed": 3, "confirmed": 0, "unsubscribed": 0 })
    );

    // The same file again: nothing new, every stored row an update.
    let again = finished(&web, &token, upload(&web, &token, list, &csv, "text/plain"));
    assert_eq!(again["state"], "finished");
    assert_eq!(
        (again["added"].clone(), again["updated"].clone()),
        (json!(0), json!(3))
    );
    assert_eq!(store.count("SELECT COUNT(*) FROM subscribers"), 3);
}

#[test]
fn counts_span_chunks_and_only_the_first_100_errors_are_kept() {
    let store = Store::sqlite();
    let token = account(&store, "press");
    let web = Web::start(&store, "");
    let list = create_list(&web, &token, "single");
    // 12,000 rows (three chunks of the importer), every 80th one bad: 150 bad.
    let mut csv = String::from("email\n");
    for i in 0..12_000 {
        if i % 80 == 0 {
            csv.push_str(&format!("bad{i}\n"));
        } else {
            csv.push_str(&format!("u{i}@example.test\n"));
        }
    }
    // Two imports at once (the second list's) both run to the end.
    let other = {
        let a = web.call(
            "POST",
            "/api/v1/lists",
            Some(&token),
            Some(&json!({ "name": "other" })),
        );
        a.json["id"].as_i64().unwrap()
    };
    let first = upload(&web, &token, list, csv.as_bytes(), "text/csv");
    let second = upload(&web, &token, other, csv.as_bytes(), "text/csv");
    for id in [first, second] {
        let import = finished(&web, &token, id);
        assert_eq!(import["state"], "finished", "{import}");
        assert_eq!(import["rows_read"], 12_000);
        assert_eq!(import["rejected"], 150);
        assert_eq!(import["added"], 11_850);
        let errors = errors(&import);
        assert_eq!(errors.len(), 100);
        // Row i is on line i + 2 (after the header).
        assert_eq!(
            errors[0],
            (
                2,
                "bad0".into(),
                "email: not an email address (local@domain)".into()
            )
        );
        assert_eq!(errors[99].0, 99 * 80 + 2);
    }
    // The second list's members are the same subscribers.
    assert_eq!(store.count("SELECT COUNT(*) FROM subscribers"), 11_850);
    assert_eq!(store.count("SELECT COUNT(*) FROM list_members"), 23_700);
}

#[test]
fn zip_gzip_and_rar_archives_are_read_by_their_magic_bytes() {
    let dir = tempfile::tempdir().unwrap();
    for (kind, body, content_type) in [
        (
            "zip",
            // macOS's resource fork and a directory are not the CSV.
            make_zip(
                dir.path(),
                &[
                    ("export/", ""),
                    ("export/people.csv", PEOPLE),
                    ("__MACOSX/export/._people.csv", "junk"),
                    ("README.txt", "not a csv"),
                ],
            ),
            "application/zip",
        ),
        ("gzip", make_gzip(dir.path(), PEOPLE), "application/gzip"),
        (
            "rar",
            make_rar(
                dir.path(),
                &[("export/", b""), ("export/people.csv", PEOPLE.as_bytes())],
                None,
            ),
            "application/vnd.rar",
        ),
        // The Content-Type is only a gate: the bytes decide.
        (
            "rar as octet-stream",
            make_rar(dir.path(), &[("p.csv", PEOPLE.as_bytes())], None),
            "application/octet-stream",
        ),
    ] {
        let store = Store::sqlite();
        let token = account(&store, "press");
        let web = Web::start(&store, "");
        let list = create_list(&web, &token, "single");
        let import = finished(
            &web,
            &token,
            upload(&web, &token, list, &body, content_type),
        );
        eprintln!("{kind}: {import}");
        assert_people(&store, &import, list);
    }
}

#[test]
fn files_that_cannot_be_imported_fail_with_a_reason() {
    let store = Store::sqlite();
    let token = account(&store, "press");
    let web = Web::start(&store, "");
    let list = create_list(&web, &token, "single");
    let dir = tempfile::tempdir().unwrap();
    let rar = make_rar(dir.path(), &[("p.csv", PEOPLE.as_bytes())], None);
    for (body, failure) in [
        (
            b"name,city\nAnn,Oslo\n".to_vec(),
            "no `email` column in the header row",
        ),
        (
            make_zip(dir.path(), &[("readme.txt", "hello")]),
            "the zip archive holds no .csv file",
        ),
        (
            make_zip(dir.path(), &[("a.csv", PEOPLE), ("b.csv", PEOPLE)]),
            "the zip archive holds 2 .csv files; it must hold exactly one",
        ),
        (
            make_rar(
                dir.path(),
                &[("a.csv", PEOPLE.as_bytes()), ("b/c.CSV", PEOPLE.as_bytes())],
                None,
            ),
            "the RAR archive holds 2 .csv files; it must hold exactly one",
        ),
        (rar[..40].to_vec(), "the RAR archive is corrupt"),
        (
            b"PK\x03\x04 not really a zip".to_vec(),
            "the zip archive is corrupt",
        ),
        (vec![0x1f, 0x8b, 8, 0, 1, 2, 3], "reading the file"),
    ] {
        let import = finished(
            &web,
            &token,
            upload(&web, &token, list, &body, "application/octet-stream"),
        );
        assert_eq!(import["state"], "failed", "{import}");
        assert!(
            import["failure"].as_str().unwrap().starts_with(failure),
            "{failure}: {import}"
        );
    }
    assert_eq!(store.count("SELECT COUNT(*) FROM subscribers"), 0);
    assert_eq!(
        store.count("SELECT COUNT(*) FROM imports WHERE state = 'failed'"),
        7
    );
}

#[test]
fn upload_errors_have_their_own_status() {
    let store = Store::sqlite();
    let ann = account(&store, "ann");
    let bob = account(&store, "bob");
    // The JSON limit below the import limit: an upload is not held to it.
    let web = Web::start(
        &store,
        "[web]\nmax_import_bytes = 2048\nmax_body_bytes = 1024\n",
    );
    let list = create_list(&web, &ann, "single");
    let path = format!("/api/v1/lists/{list}/imports");
    let csv = PEOPLE.as_bytes();

    let a = web.send("POST", &path, None, Some(csv), "text/csv");
    assert_eq!(a.status, 401, "{}", a.body);
    let a = web.send("POST", &path, Some(&ann), Some(csv), "application/json");
    assert_eq!(a.status, 415, "{}", a.body);
    assert!(
        a.json["error"]
            .as_str()
            .unwrap()
            .starts_with("Content-Type:")
    );
    let a = web.send("POST", &path, Some(&ann), Some(b""), "text/csv");
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(a.json["error"].as_str().unwrap().starts_with("body: empty"));
    let big = format!("email\n{}", "someone@example.test\n".repeat(100)); // > 2048
    let a = web.send("POST", &path, Some(&ann), Some(big.as_bytes()), "text/csv");
    assert_eq!(a.status, 413, "{}", a.body);
    assert_eq!(a.json["error"], "body: larger than the limit of 2048 bytes");
    // Without a Content-Length (chunked), the limit is enforced as the body streams.
    let script = format!(
        "import http.client\nc = http.client.HTTPConnection('127.0.0.1', {port}, timeout=30)\n\
         c.request('POST', {path:?}, body=(b'x' * 100 for _ in range(50)), encode_chunked=True,\n\
         headers={{'Authorization': 'Bearer {ann}', 'Content-Type': 'text/csv'}})\n\
         r = c.getresponse()\nprint(r.status, r.read().decode())\n",
        port = web.addr.port()
    );
    let out = python(&script, "");
    assert!(
        out.starts_with("413 ") && out.contains("2048 bytes"),
        "{out}"
    );
    let mid = format!("email\n{}", "someone@example.test\n".repeat(70)); // 1,476 bytes
    let id = upload(&web, &ann, list, mid.as_bytes(), "text/csv");
    assert_eq!(finished(&web, &ann, id)["added"], 1);
    let a = web.send(
        "POST",
        "/api/v1/lists/zz/imports",
        Some(&ann),
        Some(csv),
        "text/csv",
    );
    assert_eq!(a.status, 400, "{}", a.body);
    // Bob can neither import into Ann's list nor see Ann's import.
    let a = web.send("POST", &path, Some(&bob), Some(csv), "text/csv");
    assert_eq!(a.status, 404, "{}", a.body);
    assert_eq!(store.count("SELECT COUNT(*) FROM imports"), 1); // the one above
    let id = upload(&web, &ann, list, csv, "text/csv");
    finished(&web, &ann, id);
    let a = web.call("GET", &format!("/api/v1/imports/{id}"), Some(&bob), None);
    assert_eq!(a.status, 404, "{}", a.body);
    assert_eq!(a.json["error"], format!("import {id} not found"));
    let a = web.call("GET", "/api/v1/imports/nope", Some(&ann), None);
    assert_eq!(a.status, 400, "{}", a.body);
    // A JSON route keeps the router-wide limit.
    let items: Vec<Value> = (0..100)
        .map(|i| json!({ "email": format!("u{i}@example.test") }))
        .collect();
    let a = web.call(
        "POST",
        &format!("/api/v1/lists/{list}/subscribers"),
        Some(&ann),
        Some(&Value::Array(items)),
    );
    assert_eq!(a.status, 413, "{}", a.body);
    assert_eq!(
        store.count("SELECT COUNT(*) FROM subscribers"),
        4,
        "{:?}",
        store.column("SELECT email FROM subscribers")
    );
}

#[test]
fn an_import_into_mariadb() {
    let store = Store::mariadb();
    let token = account(&store, "press");
    let web = Web::start(&store, "");
    let list = create_list(&web, &token, "single");
    let dir = tempfile::tempdir().unwrap();
    let body = make_gzip(dir.path(), PEOPLE);
    let import = finished(
        &web,
        &token,
        upload(&web, &token, list, &body, "application/x-gzip"),
    );
    assert_people(&store, &import, list);
    // Larger than one chunk of the importer and one INSERT batch of the upsert.
    let mut csv = String::from("email,name\n");
    for i in 0..12_000 {
        csv.push_str(&format!("user{i}@example.test,User {i}\n"));
    }
    let import = finished(
        &web,
        &token,
        upload(&web, &token, list, csv.as_bytes(), "text/csv"),
    );
    assert_eq!(import["state"], "finished", "{import}");
    assert_eq!(import["added"], 12_000);
    assert_eq!(store.count("SELECT COUNT(*) FROM list_members"), 12_003);
}

#[test]
fn an_import_left_running_without_its_upload_fails_at_start() {
    let store = Store::sqlite();
    let token = account(&store, "press");
    let mut web = Web::start(&store, "");
    let list = create_list(&web, &token, "single");
    web.kill();
    store.exec(&format!(
        "INSERT INTO imports (account_id, list_id, state, rows_read, errors) VALUES (1, {list}, 'running', 5000, '[]')"
    ));
    let web = Web::start(&store, "");
    let import = finished(&web, &token, 1);
    assert_eq!(import["state"], "failed");
    assert!(
        import["failure"]
            .as_str()
            .unwrap()
            .contains("upload is gone"),
        "{import}"
    );
}

fn cli(store: &Store, args: &[&str]) -> (i32, String, String) {
    let out = outbound(store, args, None);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_cli_imports_with_a_progress_bar_and_a_summary() {
    let store = Store::sqlite();
    account(&store, "press");
    let (code, id, err) = cli(
        &store,
        &[
            "list",
            "create",
            "--account",
            "press",
            "--opt-in",
            "double",
            "news",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let id = id.trim().to_owned();
    let (code, _, err) = cli(&store, &["list", "create", "--account", "nobody", "news"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = cli(
        &store,
        &[
            "list",
            "create",
            "--account",
            "press",
            "--opt-in",
            "maybe",
            "x",
        ],
    );
    assert_eq!(code, 2, "{err}");

    let dir = tempfile::tempdir().unwrap();
    let file: PathBuf = dir.path().join("people.csv");
    std::fs::write(&file, PEOPLE).unwrap();
    let file_arg = file.display().to_string();
    let (code, out, err) = cli(&store, &["list", "import", &id, &file_arg]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "rows_read 6 added 3 updated 0 rejected 2",
            "line 3: not-an-address: email: not an email address (local@domain)",
            "line 4: bob@example.test: expected 4 fields, found 2",
        ]
    );
    assert!(err.contains("rows/s") && err.contains("100.0%"), "{err}");
    assert!(err.starts_with('\r') && err.ends_with('\n'), "{err:?}");
    // Recorded like an upload; the operator's file is left alone.
    assert_eq!(store.column("SELECT state FROM imports"), vec!["finished"]);
    assert!(file.exists());
    let (code, out, _) = cli(&store, &["list", "ls", "--account", "press"]);
    assert_eq!(code, 0);
    assert!(
        out.lines()
            .any(|l| l.contains("double") && l.ends_with("  news") && l.contains(" 3 ")),
        "{out}"
    );

    let (code, _, err) = cli(&store, &["list", "import", "999", &file_arg]);
    assert_eq!(code, 2);
    assert!(err.contains("list_id: list 999 not found"), "{err}");
    let (code, _, err) = cli(&store, &["list", "import", &id, "/nonexistent/file.csv"]);
    assert_eq!(code, 2, "{err}");
    std::fs::write(&file, "name\nAnn\n").unwrap();
    let (code, out, err) = cli(&store, &["list", "import", &id, &file_arg]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("no `email` column"), "{err}");
    assert_eq!(
        store.column("SELECT state FROM imports ORDER BY id"),
        vec!["finished", "failed"]
    );
}

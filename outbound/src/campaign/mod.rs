//! Campaigns: one message to the members of lists, expanded into the queue by the
//! relay nodes.
//!
//! Layout: this file is the model and its rules, pure (no I/O, no clock reads):
//! the states and which action moves a campaign from which state ([`transition`]),
//! the validation of a new campaign ([`validate`]), the tag values a recipient's
//! queue row carries ([`recipient_params`], mirrored by the SQL of
//! [`store::PARAMS_SQLITE`] / [`store::PARAMS_MYSQL`]) and the timeline's
//! buckets ([`timeline_points`]). `store` runs the SQL of the API and the CLI
//! (create, transitions, counts, timeline); `runner` is what every relay node runs
//! from its dispatcher loop (scheduled → running, expansion under a lease, finish).
//!
//! Owns: what a valid campaign is and which transitions exist.
//! Must not: talk to the database or HTTP (`store`, `web::campaigns` do), nor
//! deliver anything (the dispatcher does, row by row, as for any template row).

pub mod runner;
pub mod store;

use chrono::{DateTime, TimeZone, Utc};
use serde::Deserialize;

/// The longest campaign name (characters).
pub const MAX_NAME_CHARS: usize = 255;
/// The longest subject and From value (characters): a header line's limit.
pub const MAX_HEADER_CHARS: usize = 998;
/// The most lists a campaign may name, included and excluded each.
pub const MAX_LISTS: usize = 100;
/// The highest `messages_per_second`.
pub const MAX_RATE: f64 = 1_000_000.0;
/// Timeline steps (seconds): one second to one day.
pub const MIN_STEP_SECS: i64 = 1;
pub const MAX_STEP_SECS: i64 = 86_400;
pub const DEFAULT_STEP_SECS: i64 = 60;

/// A campaign's `state` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Draft,
    Scheduled,
    Running,
    Paused,
    Cancelled,
    Finished,
}

impl State {
    pub const ALL: [State; 6] = [
        Self::Draft,
        Self::Scheduled,
        Self::Running,
        Self::Paused,
        Self::Cancelled,
        Self::Finished,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Scheduled => "scheduled",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Cancelled => "cancelled",
            Self::Finished => "finished",
        }
    }

    /// The state as stored; None for text this code never writes.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an operator or the API asks of a campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    Pause,
    Resume,
    Cancel,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Cancel => "cancel",
        }
    }

    /// The states the action is allowed from: the `state IN (...)` of its
    /// compare-and-set UPDATE.
    pub fn allowed_from(self) -> &'static [State] {
        match self {
            Self::Start => &[State::Draft],
            Self::Pause => &[State::Running, State::Scheduled],
            Self::Resume => &[State::Paused],
            Self::Cancel => &[
                State::Draft,
                State::Scheduled,
                State::Running,
                State::Paused,
            ],
        }
    }

    /// Where the action leads; `start` schedules when `send_at` is still ahead.
    pub fn target(self, send_at_ahead: bool) -> State {
        match self {
            Self::Start if send_at_ahead => State::Scheduled,
            Self::Start | Self::Resume => State::Running,
            Self::Pause => State::Paused,
            Self::Cancel => State::Cancelled,
        }
    }
}

/// The state `action` leads to from `current`, or `Err(current)` when the action
/// is not allowed there (409 naming it).
pub fn transition(current: State, action: Action, send_at_ahead: bool) -> Result<State, State> {
    if action.allowed_from().contains(&current) {
        Ok(action.target(send_at_ahead))
    } else {
        Err(current)
    }
}

/// `POST /api/v1/campaigns` as sent. Every field optional here, so that a
/// missing one gets our message naming it rather than serde's.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCampaign {
    pub name: Option<String>,
    pub from: Option<String>,
    pub subject: Option<String>,
    pub text: Option<String>,
    pub html: Option<String>,
    pub lists: Option<Vec<i64>>,
    pub exclude_lists: Option<Vec<i64>>,
    pub messages_per_second: Option<f64>,
    pub send_at: Option<String>,
    /// Sending pool of the campaign's rows (`[pools.NAME]`; `sending`).
    pub pool: Option<String>,
    /// Host names of the account's tracking domains (`tracking`).
    pub tracking_domains: Option<Vec<String>>,
    pub track_opens: Option<bool>,
}

/// A campaign that passed [`validate`] (list ownership is checked by the store,
/// in the creating transaction).
#[derive(Debug, Clone, PartialEq)]
pub struct Valid {
    pub name: String,
    /// The From header value as given (may hold `[Tags]`).
    pub from_header: String,
    /// The envelope sender: the From value's address.
    pub sender: String,
    pub subject: String,
    pub text: Option<String>,
    pub html: Option<String>,
    /// Deduplicated, in the order given.
    pub lists: Vec<i64>,
    pub exclude_lists: Vec<i64>,
    pub messages_per_second: Option<f64>,
    pub send_at: Option<DateTime<Utc>>,
    pub pool: Option<String>,
    /// Lowercased, deduplicated; ownership is checked by the store.
    pub tracking_domains: Vec<String>,
    pub track_opens: bool,
}

/// A field at fault and why (400 `field: why`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: &'static str,
    pub why: String,
}

impl FieldError {
    pub fn new(field: &'static str, why: impl Into<String>) -> Self {
        Self {
            field,
            why: why.into(),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.why)
    }
}

/// The address of a From value: `Name <addr>` or `addr`. None when there is no
/// mailbox in it.
pub fn from_address(from: &str) -> Option<String> {
    let from = from.trim();
    let addr = match (from.rfind('<'), from.strip_suffix('>')) {
        (Some(open), Some(inner)) => inner.get(open + 1..)?,
        (None, None) => from,
        _ => return None,
    };
    crate::address::is_mailbox(addr).then(|| addr.to_owned())
}

fn required_text(
    field: &'static str,
    value: Option<String>,
    max_chars: usize,
) -> Result<String, FieldError> {
    let value = value.ok_or_else(|| FieldError::new(field, "missing"))?;
    if value.trim().is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if value.chars().count() > max_chars {
        return Err(FieldError::new(
            field,
            format!("longer than {max_chars} characters"),
        ));
    }
    Ok(value)
}

fn list_ids(field: &'static str, ids: Vec<i64>) -> Result<Vec<i64>, FieldError> {
    if ids.len() > MAX_LISTS {
        return Err(FieldError::new(
            field,
            format!("more than {MAX_LISTS} lists"),
        ));
    }
    let mut out: Vec<i64> = Vec::with_capacity(ids.len());
    for id in ids {
        if id <= 0 {
            return Err(FieldError::new(field, format!("list {id} not found")));
        }
        if !out.contains(&id) {
            out.push(id);
        }
    }
    Ok(out)
}

/// Checks a new campaign; the first field at fault is named.
pub fn validate(raw: NewCampaign) -> Result<Valid, FieldError> {
    let name = required_text("name", raw.name, MAX_NAME_CHARS)?;
    let from_header = required_text("from", raw.from, MAX_HEADER_CHARS)?;
    // A header value with a line break would add headers of its own.
    if from_header.chars().any(char::is_control) {
        return Err(FieldError::new(
            "from",
            "must not contain control characters",
        ));
    }
    let sender = from_address(&from_header).ok_or_else(|| {
        FieldError::new("from", "expected `Name <local@domain>` or `local@domain`")
    })?;
    let subject = required_text("subject", raw.subject, MAX_HEADER_CHARS)?;
    if subject.chars().any(char::is_control) {
        return Err(FieldError::new(
            "subject",
            "must not contain control characters",
        ));
    }
    let text = raw.text.filter(|t| !t.is_empty());
    let html = raw.html.filter(|h| !h.is_empty());
    if text.is_none() && html.is_none() {
        return Err(FieldError::new("text", "give `text`, `html` or both"));
    }
    let lists = list_ids(
        "lists",
        raw.lists
            .ok_or_else(|| FieldError::new("lists", "missing"))?,
    )?;
    if lists.is_empty() {
        return Err(FieldError::new("lists", "give at least one list id"));
    }
    let exclude_lists = list_ids("exclude_lists", raw.exclude_lists.unwrap_or_default())?;
    if let Some(both) = exclude_lists.iter().find(|id| lists.contains(id)) {
        return Err(FieldError::new(
            "exclude_lists",
            format!("list {both} is also in `lists`"),
        ));
    }
    let messages_per_second = match raw.messages_per_second {
        None => None,
        Some(r) if r.is_finite() && r > 0.0 && r <= MAX_RATE => Some(r),
        Some(_) => {
            return Err(FieldError::new(
                "messages_per_second",
                "must be more than 0 and at most 1000000",
            ));
        }
    };
    let send_at = raw
        .send_at
        .map(|s| {
            DateTime::parse_from_rfc3339(s.trim())
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| FieldError::new("send_at", format!("not an RFC 3339 time ({e})")))
        })
        .transpose()?;
    // The name only: which pools exist is the relay's config, and a row naming an
    // unknown one fails with "unknown sending pool" there.
    let pool = match raw.pool.map(|p| p.trim().to_owned()) {
        Some(p) if p.is_empty() || p.len() > 64 || !p.bytes().all(|b| b.is_ascii_graphic()) => {
            return Err(FieldError::new(
                "pool",
                "must be a pool name of 1 to 64 characters",
            ));
        }
        other => other,
    };
    let mut tracking_domains: Vec<String> = Vec::new();
    let raw_domains = raw.tracking_domains.unwrap_or_default();
    if raw_domains.len() > crate::tracking::store::MAX_CAMPAIGN_DOMAINS {
        return Err(FieldError::new(
            "tracking_domains",
            format!(
                "more than {} domains",
                crate::tracking::store::MAX_CAMPAIGN_DOMAINS
            ),
        ));
    }
    for d in raw_domains {
        let n = crate::tracking::store::normalize_domain(&d).ok_or_else(|| {
            FieldError::new("tracking_domains", format!("`{d}` is not a host name"))
        })?;
        if !tracking_domains.contains(&n) {
            tracking_domains.push(n);
        }
    }
    let track_opens = raw.track_opens.unwrap_or(false);
    // The tag is filled from the tracking domain: without one it could only fail
    // every message at send time.
    let tag = format!("[{}]", crate::tracking::links::UNSUBSCRIBE_TAG);
    if tracking_domains.is_empty()
        && [&text, &html]
            .iter()
            .any(|b| b.as_deref().is_some_and(|b| b.contains(&tag)))
    {
        return Err(FieldError::new(
            "tracking_domains",
            format!("{tag} needs a tracking domain"),
        ));
    }
    if track_opens && tracking_domains.is_empty() {
        return Err(FieldError::new(
            "track_opens",
            "needs a tracking domain (`tracking_domains`)",
        ));
    }
    Ok(Valid {
        tracking_domains,
        track_opens,
        name,
        from_header,
        sender,
        subject,
        text,
        html,
        lists,
        exclude_lists,
        messages_per_second,
        send_at,
        pool,
    })
}

/// The tag values of one recipient's queue row: each attribute by its key, then
/// `Name`, `Email`, `name` and `email`, which win over attributes of those names
/// (the subscriber's own fields are what a template means by them). Attributes
/// that are not a JSON object count as none. The expansion builds the same in SQL
/// (`store::PARAMS_*`); a unit test holds the two together. This is the reference
/// the SQL is tested against, not called on the delivery path.
#[cfg_attr(not(test), allow(dead_code))]
pub fn recipient_params(
    name: &str,
    email: &str,
    attributes: &str,
) -> serde_json::Map<String, serde_json::Value> {
    let mut params = match serde_json::from_str::<serde_json::Value>(attributes) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    for (key, value) in [
        ("Name", name),
        ("Email", email),
        ("name", name),
        ("email", email),
    ] {
        params.insert(key.to_owned(), serde_json::Value::String(value.to_owned()));
    }
    params
}

/// `step` of `GET .../timeline`: 1..=86400 seconds, 60 when absent.
pub fn parse_step(step: Option<&str>) -> Result<i64, FieldError> {
    let Some(step) = step else {
        return Ok(DEFAULT_STEP_SECS);
    };
    match step.trim().parse::<i64>() {
        Ok(s) if (MIN_STEP_SECS..=MAX_STEP_SECS).contains(&s) => Ok(s),
        _ => Err(FieldError::new(
            "step",
            format!("must be a whole number of seconds from {MIN_STEP_SECS} to {MAX_STEP_SECS}"),
        )),
    }
}

/// One interval of the timeline.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Point {
    /// The interval's start, RFC 3339 UTC.
    pub at: String,
    pub delivered: i64,
    pub deferred: i64,
    pub failed: i64,
    pub suppressed: i64,
}

/// The start (Unix seconds) of the `step`-second interval holding `secs`.
pub fn bucket_start(secs: i64, step: i64) -> i64 {
    secs.div_euclid(step.max(1)) * step.max(1)
}

/// Timeline points from `(Unix seconds, outcome, count)` rows (in any order, an
/// interval possibly in several rows; the store sends interval starts already,
/// each is rounded down to its `step` again all the same), in time order; only
/// intervals with attempts appear.
pub fn timeline_points(
    rows: impl IntoIterator<Item = (i64, String, i64)>,
    step: i64,
) -> Vec<Point> {
    let mut by_start: std::collections::BTreeMap<i64, Point> = std::collections::BTreeMap::new();
    for (secs, outcome, count) in rows {
        let start = bucket_start(secs, step);
        let point = by_start.entry(start).or_insert_with(|| Point {
            at: Utc
                .timestamp_opt(start, 0)
                .single()
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_default(),
            delivered: 0,
            deferred: 0,
            failed: 0,
            suppressed: 0,
        });
        let slot = match outcome.as_str() {
            "delivered" => &mut point.delivered,
            "deferred" => &mut point.deferred,
            "failed" => &mut point.failed,
            "suppressed" => &mut point.suppressed,
            _ => continue,
        };
        *slot = slot.saturating_add(count);
    }
    by_start.into_values().collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn raw() -> NewCampaign {
        NewCampaign {
            name: Some("Spring".into()),
            from: Some("News <news@example.test>".into()),
            subject: Some("Hello [Name]".into()),
            text: Some("Hi [Name]".into()),
            html: None,
            lists: Some(vec![3, 1, 3]),
            exclude_lists: None,
            messages_per_second: None,
            send_at: None,
            pool: None,
            tracking_domains: None,
            track_opens: None,
        }
    }

    #[test]
    fn every_action_is_allowed_from_exactly_its_states() {
        use Action::*;
        use State::*;
        let allowed = |a: Action| -> Vec<State> {
            State::ALL
                .into_iter()
                .filter(|&s| transition(s, a, false).is_ok())
                .collect()
        };
        assert_eq!(allowed(Start), [Draft]);
        assert_eq!(allowed(Pause), [Scheduled, Running]);
        assert_eq!(allowed(Resume), [Paused]);
        assert_eq!(allowed(Cancel), [Draft, Scheduled, Running, Paused]);
        assert_eq!(transition(Draft, Start, false), Ok(Running));
        assert_eq!(transition(Draft, Start, true), Ok(Scheduled));
        assert_eq!(transition(Paused, Resume, true), Ok(Running));
        assert_eq!(transition(Running, Pause, false), Ok(Paused));
        assert_eq!(transition(Finished, Cancel, false), Err(Finished));
        assert_eq!(transition(Cancelled, Resume, false), Err(Cancelled));
        for s in State::ALL {
            assert_eq!(State::parse(s.as_str()), Some(s));
        }
        assert_eq!(State::parse("RUNNING"), None);
    }

    #[test]
    fn a_valid_campaign_keeps_its_from_and_dedupes_lists() {
        let v = validate(raw()).unwrap();
        assert_eq!(v.sender, "news@example.test");
        assert_eq!(v.from_header, "News <news@example.test>");
        assert_eq!(v.lists, [3, 1]);
        assert!(v.exclude_lists.is_empty());
        let plain = validate(NewCampaign {
            from: Some("news@example.test".into()),
            send_at: Some("2030-01-02T03:04:05+02:00".into()),
            messages_per_second: Some(0.5),
            ..raw()
        })
        .unwrap();
        assert_eq!(plain.sender, "news@example.test");
        assert_eq!(
            plain.send_at.unwrap().to_rfc3339(),
            "2030-01-02T01:04:05+00:00"
        );
    }

    #[test]
    fn each_bad_field_is_named() {
        let field = |r: NewCampaign| validate(r).unwrap_err().field;
        assert_eq!(
            field(NewCampaign {
                name: None,
                ..raw()
            }),
            "name"
        );
        assert_eq!(
            field(NewCampaign {
                name: Some(" ".into()),
                ..raw()
            }),
            "name"
        );
        assert_eq!(
            field(NewCampaign {
                name: Some("x".repeat(256)),
                ..raw()
            }),
            "name"
        );
        for bad in [
            "",
            "News",
            "News <nobody>",
            "a@b.test>",
            "x\r\nBcc: y@z.test <a@b.test>",
        ] {
            assert_eq!(
                field(NewCampaign {
                    from: Some(bad.into()),
                    ..raw()
                }),
                "from",
                "{bad:?}"
            );
        }
        assert_eq!(
            field(NewCampaign {
                subject: None,
                ..raw()
            }),
            "subject"
        );
        assert_eq!(
            field(NewCampaign {
                text: None,
                html: Some(String::new()),
                ..raw()
            }),
            "text"
        );
        assert_eq!(
            field(NewCampaign {
                lists: None,
                ..raw()
            }),
            "lists"
        );
        assert_eq!(
            field(NewCampaign {
                lists: Some(vec![]),
                ..raw()
            }),
            "lists"
        );
        assert_eq!(
            field(NewCampaign {
                lists: Some(vec![-1]),
                ..raw()
            }),
            "lists"
        );
        assert_eq!(
            field(NewCampaign {
                lists: Some((1..=101).collect()),
                ..raw()
            }),
            "lists"
        );
        assert_eq!(
            field(NewCampaign {
                exclude_lists: Some(vec![1]),
                ..raw()
            }),
            "exclude_lists"
        );
        for rate in [0.0, -1.0, 1_000_001.0, f64::NAN] {
            assert_eq!(
                field(NewCampaign {
                    messages_per_second: Some(rate),
                    ..raw()
                }),
                "messages_per_second"
            );
        }
        assert_eq!(
            field(NewCampaign {
                send_at: Some("tomorrow".into()),
                ..raw()
            }),
            "send_at"
        );
    }

    #[test]
    fn subscriber_fields_win_over_attributes_of_the_same_name() {
        let p = recipient_params(
            "Ann",
            "ann@x.test",
            r#"{"city": "Oslo", "Name": "spoof", "n": 3}"#,
        );
        assert_eq!(p["Name"], "Ann");
        assert_eq!(p["name"], "Ann");
        assert_eq!(p["Email"], "ann@x.test");
        assert_eq!(p["city"], "Oslo");
        assert_eq!(p["n"], 3);
        for junk in ["[1]", "not json", "", "null"] {
            let p = recipient_params("B", "b@x.test", junk);
            assert_eq!(p.len(), 4, "{junk:?}");
        }
    }

    #[test]
    fn the_expansion_sql_builds_the_same_params() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        for (name, email, attrs) in [
            (
                "Ann",
                "ann@x.test",
                r#"{"city": "Oslo", "Name": "spoof", "n": 3}"#,
            ),
            ("B'o", "b@x.test", "[1]"),
            ("", "c@x.test", "not json"),
        ] {
            let sql = format!(
                "SELECT {} FROM (SELECT ?1 AS name, ?2 AS email, ?3 AS attributes) s",
                store::PARAMS_SQLITE
            );
            let json: String = conn
                .query_row(&sql, [name, email, attrs], |r| r.get(0))
                .unwrap();
            let got: serde_json::Value = serde_json::from_str(&json).unwrap();
            assert_eq!(
                got,
                serde_json::Value::Object(recipient_params(name, email, attrs)),
                "{attrs}"
            );
        }
    }

    #[test]
    fn steps_are_bounded_and_default_to_a_minute() {
        assert_eq!(parse_step(None), Ok(60));
        assert_eq!(parse_step(Some("1")), Ok(1));
        assert_eq!(parse_step(Some("86400")), Ok(86_400));
        for bad in ["0", "86401", "-5", "x", ""] {
            assert_eq!(parse_step(Some(bad)).unwrap_err().field, "step", "{bad}");
        }
    }

    #[test]
    fn timeline_buckets_start_at_whole_steps_and_merge_rows() {
        assert_eq!(bucket_start(125, 60), 120);
        assert_eq!(bucket_start(120, 60), 120);
        assert_eq!(bucket_start(-1, 60), -60);
        let points = timeline_points(
            [
                (120, "failed".into(), 1),
                (60, "delivered".into(), 5),
                (179, "delivered".into(), 2),
                (60, "deferred".into(), 3),
                (60, "bogus".into(), 9),
            ],
            60,
        );
        assert_eq!(points.len(), 2);
        assert_eq!(points[0].at, "1970-01-01T00:01:00Z");
        assert_eq!((points[0].delivered, points[0].deferred), (5, 3));
        assert_eq!((points[1].delivered, points[1].failed), (2, 1));
        assert_eq!(points[1].suppressed, 0);
    }
}

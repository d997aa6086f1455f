//! Bounce policy: what the relay does about a recipient that failed, whether a
//! bounce came back after the message was accepted (RFC 3464 §2 DSN, or prose), or
//! the server refused the recipient during delivery.
//!
//! Owns: whether a bounce report is a failure at all (its `Action`, RFC 3464
//! §2.3.3), how each class (hard, soft, policy; `dsn::classify`) is suppressed, the
//! soft-bounce window, the texts recorded (row text, suppression reasons), and
//! whether, and to whom, the original sender gets a DSN about it (never to the null
//! sender, RFC 5321 §4.5.5; never twice).
//! Must not: do I/O or read the clock. The caller passes the parsed bounce
//! (`dsn::parse_bounce`), the queue row's values, the time, and the soft-bounce count
//! it queried; it runs the SQL the decision asks for (`queue`). Building and parsing
//! DSNs stays in `dsn` (whose MIME boundary is the one random value in a verdict).

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::address;
use crate::dsn::{self, Bounce, Class};
use crate::queue::{NewRow, RowState};

/// Why a suppression entry exists (`suppression.source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A bounce: refused during delivery, or bounced after acceptance.
    Bounce,
    /// The recipient wrote to its unsubscribe address.
    Unsubscribe,
    /// The recipient's mailbox provider sent a feedback-loop report (RFC 5965).
    Complaint,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bounce => "bounce",
            Self::Unsubscribe => "unsubscribe",
            Self::Complaint => "complaint",
        }
    }
}

/// The suppression reason for mail to an unsubscribe address.
pub const UNSUBSCRIBE_REASON: &str = "unsubscribe request by mail";

/// The status a failure is reported with when the bounce names none: permanent,
/// nothing more specific known (RFC 3463 §3.1, X.0.0).
const UNKNOWN_FAILURE_STATUS: &str = "5.0.0";

/// What the decisions depend on, from `[bounces]` and `[delivery]`.
#[derive(Debug, Clone, Copy)]
pub struct Settings<'a> {
    /// `bounces.dsn`: tell original senders about failures.
    pub dsn: bool,
    /// `bounces.soft_bounce_limit`: soft bounces within the window that suppress.
    pub soft_bounce_limit: u32,
    /// `bounces.soft_bounce_window_secs`.
    pub soft_bounce_window: Duration,
    /// Our host name, for the DSN (`delivery.helo_name`).
    pub reporting_mta: &'a str,
    /// For the DSN's Message-ID (`delivery.message_id_domain`).
    pub message_id_domain: &'a str,
}

/// The queue row a verified bounce is about, as the intake read it.
#[derive(Debug, Clone, Copy)]
pub struct Original<'a> {
    /// The row's recipient, lowercased (as the suppression list and
    /// `outbound_bounces.address` keep it).
    pub recipient: &'a str,
    /// The envelope sender as stored (before VERP).
    pub sender: &'a str,
    /// The row's state; None for a state this relay does not know (treated as any
    /// state other than failed).
    pub state: Option<RowState>,
    /// The message, for the header section the DSN returns (empty for template rows).
    pub body: &'a [u8],
    /// When the row was queued (the DSN's Arrival-Date).
    pub arrival: DateTime<Utc>,
}

/// What to do with a bounce that came back.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// Not a failure (`Action: delayed`, `relayed`, `delivered`, `expanded`):
    /// nothing is recorded and the row stays as it is.
    Ignore,
    /// A failure: record the bounce, fail the row, log it, then suppress and notify
    /// as the [`Failure`] says.
    Fail(Box<Failure>),
}

/// A bounce that is a failure, and everything that follows from it.
#[derive(Debug, Clone)]
pub struct Failure {
    pub class: Class,
    /// The enhanced status the bounce named, if any (`outbound_bounces.status`,
    /// `last_status`): recorded as found, not defaulted.
    pub status: Option<String>,
    /// The bounce's diagnostic text (`outbound_bounces.text`).
    pub diagnostic: String,
    /// The row's `last_text` and the delivery log's text.
    pub text: String,
    pub suppression: Suppression,
    /// The DSN to queue for the original sender, with the null sender; None when
    /// [`notify_sender`] says no.
    pub dsn: Option<NewRow>,
}

/// Whether a failure puts the address on the suppression list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Suppression {
    /// At once (the address does not exist).
    Now { reason: String },
    /// Not at all (a policy refusal says nothing about the address).
    Never,
    /// Once the address has `limit` soft bounces (this one included) recorded at or
    /// after `since`: the caller counts them and asks [`soft_limit_reached`].
    IfSoftLimitReached {
        since: DateTime<Utc>,
        limit: u32,
        reason: String,
    },
}

/// Whether the original sender is told of a failure, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notify {
    /// Queue a DSN to this mailbox.
    Sender(String),
    /// No DSN, for this reason.
    Skip(Skip),
}

/// Why the original sender gets no DSN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// `bounces.dsn = false`.
    DsnsOff,
    /// The relay failed the recipient itself already, and sent its DSN then: the
    /// sender hears of a failure once.
    AlreadyFailed,
    /// The null sender: a DSN is never sent about a DSN (RFC 5321 §4.5.5).
    NullSender,
    /// A sender that is not a mailbox we would put on a command line.
    NotAMailbox,
}

/// Where a DSN about a message from `sender` may go: a mailbox; None for the null
/// sender and for a sender that is not an address.
pub fn dsn_recipient(sender: &str) -> Option<String> {
    address::reverse_path(sender)
        .ok()
        .and_then(|p| p.dsn_recipient().map(str::to_owned))
}

/// Whether the sender of a row in `state` hears of a bounce that came back.
pub fn notify_sender(sender: &str, state: Option<RowState>, dsn: bool) -> Notify {
    if !dsn {
        return Notify::Skip(Skip::DsnsOff);
    }
    if state == Some(RowState::Failed) {
        return Notify::Skip(Skip::AlreadyFailed);
    }
    match address::reverse_path(sender) {
        Ok(path) => match path.dsn_recipient() {
            Some(mailbox) => Notify::Sender(mailbox.to_owned()),
            None => Notify::Skip(Skip::NullSender),
        },
        Err(_) => Notify::Skip(Skip::NotAMailbox),
    }
}

/// Whether `soft_bounces_in_window` (the count of the address's soft bounces in the
/// window, the one just recorded included) reaches the limit.
pub fn soft_limit_reached(soft_bounces_in_window: i64, limit: u32) -> bool {
    soft_bounces_in_window >= i64::from(limit)
}

/// What a bounce that came back for `original` calls for, at `now`.
pub fn judge_bounce(
    bounce: &Bounce,
    original: &Original<'_>,
    settings: &Settings<'_>,
    now: DateTime<Utc>,
) -> Verdict {
    // A report without an Action (prose bounces) counts as a failure: that is what
    // non-standard bounces report.
    if bounce.action.as_deref().is_some_and(|a| a != "failed") {
        return Verdict::Ignore;
    }
    let status = bounce
        .status
        .clone()
        .unwrap_or_else(|| UNKNOWN_FAILURE_STATUS.to_owned());
    let reason = format!(
        "{} bounce {status}: {}",
        bounce.class.as_str(),
        bounce.diagnostic
    );
    let suppression = match bounce.class {
        Class::Hard => Suppression::Now { reason },
        Class::Policy => Suppression::Never,
        Class::Soft => Suppression::IfSoftLimitReached {
            since: now
                - chrono::Duration::from_std(settings.soft_bounce_window).unwrap_or_default(),
            limit: settings.soft_bounce_limit,
            reason,
        },
    };
    let dsn = match notify_sender(original.sender, original.state, settings.dsn) {
        Notify::Sender(to) => {
            let body = dsn::render(&dsn::Report {
                reporting_mta: settings.reporting_mta,
                original_sender: &to,
                recipient: original.recipient,
                action: dsn::Action::Failed,
                status: &status,
                remote_mta: None,
                diagnostic: &bounce.diagnostic,
                diagnostic_is_smtp: true,
                arrival: original.arrival,
                now,
                original_headers: dsn::header_section(original.body),
                message_id_domain: settings.message_id_domain,
            });
            Some(NewRow {
                sender: String::new(),
                recipient: to,
                body,
                tag: "dsn",
            })
        }
        Notify::Skip(_) => None,
    };
    Verdict::Fail(Box::new(Failure {
        class: bounce.class,
        status: bounce.status.clone(),
        diagnostic: bounce.diagnostic.clone(),
        text: format!("bounced after delivery: {}", bounce.diagnostic),
        suppression,
        dsn,
    }))
}

/// The suppression reason when a server refused a recipient during delivery: a
/// permanent reply (5xx) whose status says the address does not exist is a hard
/// bounce, whether it comes at RCPT or in a DSN later. None for anything else
/// (temporary replies, policy refusals, local failures without a reply).
pub fn refusal_suppression(code: Option<u16>, status: Option<&str>, text: &str) -> Option<String> {
    let (code, status) = (code?, status?);
    (code >= 500 && dsn::classify(status, text) == Class::Hard)
        .then(|| format!("hard bounce {code} {status}: {text}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn settings() -> Settings<'static> {
        Settings {
            dsn: true,
            soft_bounce_limit: 3,
            soft_bounce_window: Duration::from_secs(3600),
            reporting_mta: "relay.test",
            message_id_domain: "relay.test",
        }
    }

    fn original(state: Option<RowState>, sender: &'static str) -> Original<'static> {
        Original {
            recipient: "gone@dest.test",
            sender,
            state,
            body: b"Subject: receipt\r\n\r\nbody\r\n",
            arrival: Utc::now(),
        }
    }

    fn bounce(class: Class, status: Option<&str>, action: Option<&str>) -> Bounce {
        Bounce {
            class,
            status: status.map(str::to_owned),
            recipient: None,
            action: action.map(str::to_owned),
            diagnostic: "550 5.1.1 no such user".into(),
        }
    }

    fn fail(b: &Bounce, o: &Original<'_>, s: &Settings<'_>) -> Failure {
        match judge_bounce(b, o, s, Utc::now()) {
            Verdict::Fail(f) => *f,
            Verdict::Ignore => panic!("ignored {b:?}"),
        }
    }

    #[test]
    fn only_failed_or_unstated_actions_are_failures() {
        let o = original(Some(RowState::Delivered), "app@app.test");
        for action in ["delayed", "relayed", "delivered", "expanded"] {
            let b = bounce(Class::Hard, Some("5.1.1"), Some(action));
            assert!(
                matches!(
                    judge_bounce(&b, &o, &settings(), Utc::now()),
                    Verdict::Ignore
                ),
                "{action}"
            );
        }
        for action in [Some("failed"), None] {
            let b = bounce(Class::Hard, Some("5.1.1"), action);
            assert!(matches!(
                judge_bounce(&b, &o, &settings(), Utc::now()),
                Verdict::Fail(_)
            ));
        }
    }

    #[test]
    fn hard_bounces_suppress_at_once_with_the_status_and_diagnostic() {
        let o = original(Some(RowState::Delivered), "app@app.test");
        let f = fail(&bounce(Class::Hard, Some("5.1.1"), None), &o, &settings());
        assert_eq!(
            f.suppression,
            Suppression::Now {
                reason: "hard bounce 5.1.1: 550 5.1.1 no such user".into()
            }
        );
        assert_eq!(f.text, "bounced after delivery: 550 5.1.1 no such user");
        assert_eq!(f.status.as_deref(), Some("5.1.1"));
        assert_eq!(f.class, Class::Hard);
    }

    #[test]
    fn policy_bounces_never_suppress() {
        let o = original(Some(RowState::Delivered), "app@app.test");
        let f = fail(&bounce(Class::Policy, Some("5.7.1"), None), &o, &settings());
        assert_eq!(f.suppression, Suppression::Never);
    }

    #[test]
    fn soft_bounces_suppress_once_the_window_holds_the_limit() {
        let o = original(Some(RowState::Delivered), "app@app.test");
        let now = Utc::now();
        let Verdict::Fail(f) = judge_bounce(
            &bounce(Class::Soft, Some("5.2.2"), None),
            &o,
            &settings(),
            now,
        ) else {
            panic!("ignored");
        };
        assert_eq!(
            f.suppression,
            Suppression::IfSoftLimitReached {
                since: now - chrono::Duration::seconds(3600),
                limit: 3,
                reason: "soft bounce 5.2.2: 550 5.1.1 no such user".into(),
            }
        );
        // The count includes the bounce just recorded.
        assert!(!soft_limit_reached(2, 3));
        assert!(soft_limit_reached(3, 3));
        assert!(soft_limit_reached(4, 3));
        assert!(soft_limit_reached(1, 1));
        assert!(!soft_limit_reached(0, 1));
    }

    #[test]
    fn a_bounce_without_a_status_is_reported_as_5_0_0_but_recorded_as_none() {
        let o = original(Some(RowState::Delivered), "app@app.test");
        let f = fail(&bounce(Class::Hard, None, None), &o, &settings());
        assert_eq!(f.status, None);
        assert_eq!(
            f.suppression,
            Suppression::Now {
                reason: "hard bounce 5.0.0: 550 5.1.1 no such user".into()
            }
        );
        let dsn = String::from_utf8(f.dsn.unwrap().body).unwrap();
        assert!(dsn.contains("Status: 5.0.0\r\n"), "{dsn}");
    }

    #[test]
    fn the_sender_gets_one_dsn_with_the_null_sender() {
        let o = original(Some(RowState::Delivered), "<app@app.test>");
        let f = fail(&bounce(Class::Hard, Some("5.1.1"), None), &o, &settings());
        let dsn = f.dsn.unwrap();
        assert_eq!((dsn.sender.as_str(), dsn.tag), ("", "dsn"));
        assert_eq!(dsn.recipient, "app@app.test");
        let text = String::from_utf8(dsn.body).unwrap();
        assert!(text.contains("Final-Recipient: rfc822; gone@dest.test\r\n"));
        assert!(text.contains("Subject: receipt\r\n"), "original headers");
        assert!(!text.contains("body\r\n"), "not the body");
    }

    #[test]
    fn no_dsn_when_off_already_failed_null_or_not_a_mailbox() {
        let delivered = Some(RowState::Delivered);
        assert_eq!(
            notify_sender("a@b.test", delivered, true),
            Notify::Sender("a@b.test".into())
        );
        assert_eq!(
            notify_sender("a@b.test", delivered, false),
            Notify::Skip(Skip::DsnsOff)
        );
        assert_eq!(
            notify_sender("a@b.test", Some(RowState::Failed), true),
            Notify::Skip(Skip::AlreadyFailed)
        );
        for null in ["", "<>", "\"\""] {
            assert_eq!(
                notify_sender(null, delivered, true),
                Notify::Skip(Skip::NullSender)
            );
        }
        assert_eq!(
            notify_sender("a@b.test>\r\nRSET", delivered, true),
            Notify::Skip(Skip::NotAMailbox)
        );
        // A state this relay does not know is not "failed".
        assert_eq!(
            notify_sender("a@b.test", None, true),
            Notify::Sender("a@b.test".into())
        );
        for state in [RowState::Queued, RowState::Sending, RowState::Suppressed] {
            assert!(matches!(
                notify_sender("a@b.test", Some(state), true),
                Notify::Sender(_)
            ));
        }
        let o = original(Some(RowState::Failed), "app@app.test");
        assert!(
            fail(&bounce(Class::Hard, Some("5.1.1"), None), &o, &settings())
                .dsn
                .is_none()
        );
    }

    #[test]
    fn dsn_recipient_is_the_mailbox_only() {
        assert_eq!(dsn_recipient("<a@b.test>").as_deref(), Some("a@b.test"));
        assert_eq!(dsn_recipient("<>"), None);
        assert_eq!(dsn_recipient(""), None);
        assert_eq!(dsn_recipient("nobody"), None);
    }

    #[test]
    fn refusals_suppress_only_permanent_non_existent_addresses() {
        assert_eq!(
            refusal_suppression(Some(550), Some("5.1.1"), "no such user").as_deref(),
            Some("hard bounce 550 5.1.1: no such user")
        );
        // Temporary, policy, full mailbox, no reply, no status.
        assert_eq!(refusal_suppression(Some(450), Some("4.1.1"), "later"), None);
        assert_eq!(refusal_suppression(Some(554), Some("5.7.1"), "spam"), None);
        assert_eq!(refusal_suppression(Some(552), Some("5.2.2"), "full"), None);
        assert_eq!(refusal_suppression(None, Some("5.1.3"), "bad"), None);
        assert_eq!(refusal_suppression(Some(550), None, "no such user"), None);
        // A vague status: the words decide.
        assert_eq!(
            refusal_suppression(Some(550), Some("5.0.0"), "User unknown").as_deref(),
            Some("hard bounce 550 5.0.0: User unknown")
        );
    }
}

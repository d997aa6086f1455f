//! Link masking of campaign mail: which links a campaign has (extracted once,
//! when it is created) and, per recipient, the rewritten HTML and text parts and
//! the unsubscribe URL.
//!
//! HTML goes through a real HTML rewriter (`lol_html`): every `<a href>` and
//! `<area href>` whose URL (entities decoded, as a browser reads it) is one of
//! the campaign's links becomes `<scheme>://<domain>/l/<token>`. Bare URLs of the
//! text part are found by `linkify` (which leaves trailing punctuation out of
//! the URL). A URL the campaign does not know (made by a tag value, say) is left
//! as it is: its click could not be redirected.
//!
//! Owns: the link extraction rule (http and https only, at most
//! [`MAX_LINKS`] per campaign, each at most [`MAX_URL_BYTES`]), the per-recipient
//! choice of tracking domain and the open pixel's markup.
//! Must not: do I/O (the maps come from `tracking::store`) or fail a message: an
//! HTML part the rewriter cannot parse is sent unmasked.

use std::collections::HashMap;

use lol_html::{RewriteStrSettings, element, rewrite_str};

use super::token::{Claim, Signer};

/// The most distinct links of one campaign that get ids (further ones are sent
/// unmasked).
pub const MAX_LINKS: usize = 1_000;
/// The longest URL masked (the MySQL column holds 2,048).
pub const MAX_URL_BYTES: usize = 2_048;
/// The tag that becomes the recipient's unsubscribe URL.
pub const UNSUBSCRIBE_TAG: &str = "UnsubscribeURL";

/// Whether `url` is one we mask: absolute http(s), within the length bound.
fn maskable(url: &str) -> bool {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    (lower.starts_with("http://") || lower.starts_with("https://"))
        && url.len() > "http://".len()
        && url.len() <= MAX_URL_BYTES
        && !url.bytes().any(|b| b.is_ascii_control() || b == b' ')
}

/// HTML character references in an attribute value → text (HTML §13.2.5.73,
/// for the forms links carry: the five named ones, `&nbsp;` and numeric ones).
/// Unknown references stay as written, as browsers do with most.
pub fn decode_entities(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let end = after.bytes().take(12).position(|b| b == b';');
        let decoded = end.and_then(|end| {
            let name = &after[..end];
            let c = match name {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "nbsp" => Some('\u{a0}'),
                _ => {
                    let num = name.strip_prefix('#')?;
                    let code = match num.strip_prefix(['x', 'X']) {
                        Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                        None => num.parse().ok()?,
                    };
                    char::from_u32(code)
                }
            }?;
            Some((c, end + 1))
        });
        match decoded {
            Some((c, used)) => {
                out.push(c);
                rest = &after[used..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Escapes text for an HTML element or a double-quoted attribute.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn text_urls(text: &str) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut finder = linkify::LinkFinder::new();
    finder.kinds(&[linkify::LinkKind::Url]);
    finder
        .links(text)
        .filter(|l| maskable(l.as_str()))
        .map(|l| (l.start(), l.end()))
}

/// The distinct maskable links of a campaign's HTML and text bodies, in order of
/// appearance, at most [`MAX_LINKS`]. Bodies are the template's, before tags are
/// filled: a link with a tag in it is only masked if it renders unchanged.
pub fn extract(html: Option<&str>, text: Option<&str>) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    let mut add = |url: String| {
        if found.len() < MAX_LINKS && maskable(&url) && !found.contains(&url) {
            found.push(url);
        }
    };
    if let Some(html) = html {
        let mut hrefs = Vec::new();
        // An unparsable part has no links we could mask either.
        let _ = rewrite_str(
            html,
            RewriteStrSettings::new().append_element_content_handler(element!(
                "a[href], area[href]",
                |el| {
                    if let Some(href) = el.get_attribute("href") {
                        hrefs.push(decode_entities(href.trim()));
                    }
                    Ok(())
                }
            )),
        );
        hrefs.into_iter().for_each(&mut add);
    }
    if let Some(text) = text {
        for (start, end) in text_urls(text) {
            add(text[start..end].to_owned());
        }
    }
    found
}

/// A campaign's tracking settings as the relay renders with them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CampaignLinks {
    /// Tracking domains; empty: the campaign is sent unmasked.
    pub domains: Vec<String>,
    pub track_opens: bool,
    /// Original URL → `campaign_links.id`.
    pub urls: HashMap<String, i64>,
}

/// One recipient's masking: every URL it writes names this campaign and
/// subscriber.
pub struct Recipient<'a> {
    signer: &'a Signer,
    links: &'a CampaignLinks,
    /// `https://t.example.com`.
    base: String,
    campaign: i64,
    subscriber: i64,
    /// `tracking.link_masking`; off, only unsubscribe URLs are written.
    mask_links: bool,
}

impl<'a> Recipient<'a> {
    /// None when the campaign has no tracking domain.
    pub fn new(
        signer: &'a Signer,
        scheme: &str,
        mask_links: bool,
        links: &'a CampaignLinks,
        campaign: i64,
        subscriber: i64,
    ) -> Option<Self> {
        let n = u64::try_from(links.domains.len()).ok().filter(|n| *n > 0)?;
        // Stable per subscriber: the same recipient always sees the same host.
        let index = usize::try_from(subscriber.unsigned_abs() % n).ok()?;
        let domain = links.domains.get(index)?;
        Some(Self {
            signer,
            links,
            base: format!("{scheme}://{domain}"),
            campaign,
            subscriber,
            mask_links,
        })
    }

    /// The masked form of `url`, when the campaign knows it.
    fn masked(&self, url: &str) -> Option<String> {
        let link = *self.links.urls.get(url)?;
        Some(format!(
            "{}/l/{}",
            self.base,
            self.signer.sign(Claim::Link {
                campaign: self.campaign,
                link,
                subscriber: self.subscriber,
            })
        ))
    }

    pub fn unsubscribe_url(&self) -> String {
        format!(
            "{}/u/{}",
            self.base,
            self.signer.sign(Claim::Unsubscribe {
                campaign: self.campaign,
                subscriber: self.subscriber,
            })
        )
    }

    fn pixel(&self) -> String {
        format!(
            "<img src=\"{}/o/{}.gif\" width=\"1\" height=\"1\" alt=\"\" style=\"border:0\">",
            self.base,
            self.signer.sign(Claim::Open {
                campaign: self.campaign,
                subscriber: self.subscriber,
            })
        )
    }

    /// The HTML part with its known links masked and, with `track_opens`, the
    /// open pixel before `</body>` (or at the end).
    pub fn html(&self, html: &str) -> String {
        let mut out = if self.mask_links {
            rewrite_str(
                html,
                RewriteStrSettings::new().append_element_content_handler(element!(
                    "a[href], area[href]",
                    |el| {
                        let masked = el
                            .get_attribute("href")
                            .and_then(|href| self.masked(&decode_entities(href.trim())));
                        if let Some(masked) = masked {
                            el.set_attribute("href", &masked)?;
                        }
                        Ok(())
                    }
                )),
            )
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, campaign = self.campaign, "HTML part not masked");
                html.to_owned()
            })
        } else {
            html.to_owned()
        };
        if self.links.track_opens {
            let pixel = self.pixel();
            match out.to_ascii_lowercase().rfind("</body>") {
                Some(at) => out.insert_str(at, &pixel),
                None => out.push_str(&pixel),
            }
        }
        out
    }

    /// The text part with its known bare URLs masked.
    pub fn text(&self, text: &str) -> String {
        if !self.mask_links {
            return text.to_owned();
        }
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        for (start, end) in text_urls(text) {
            if let Some(masked) = self.masked(&text[start..end]) {
                out.push_str(&text[last..start]);
                out.push_str(&masked);
                last = end;
            }
        }
        out.push_str(&text[last..]);
        out
    }
}

/// `List-Unsubscribe` (RFC 2369 §3.2) with the one-click URL first and the
/// mailto: address (with VERP) after, and `List-Unsubscribe-Post` (RFC 8058 §3.1).
/// One `List-Unsubscribe` field, never two: RFC 8058 §3.1 wants exactly one.
pub fn list_unsubscribe(url: &str, mailto: Option<&str>) -> Vec<(String, String)> {
    let mut value = format!("<{url}>");
    if let Some(m) = mailto {
        value.push_str(", ");
        value.push_str(m);
    }
    vec![
        ("List-Unsubscribe".to_owned(), value),
        (
            "List-Unsubscribe-Post".to_owned(),
            "List-Unsubscribe=One-Click".to_owned(),
        ),
    ]
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn links(urls: &[&str]) -> CampaignLinks {
        CampaignLinks {
            domains: vec!["t1.example".into(), "t2.example".into()],
            track_opens: false,
            urls: urls
                .iter()
                .enumerate()
                .map(|(i, u)| ((*u).to_owned(), i as i64 + 1))
                .collect(),
        }
    }

    fn signer() -> Signer {
        Signer::new(b"0123456789abcdef")
    }

    fn link_of(s: &Signer, masked: &str) -> i64 {
        let token = masked.rsplit('/').next().unwrap();
        match s.verify(token).unwrap() {
            Claim::Link { link, .. } => link,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn extraction_decodes_entities_dedups_and_keeps_only_http() {
        let html = r#"<p><a class="x" href="https://a.example/?x=1&amp;y=2#top" target=_blank>A</a>
            <a href='mailto:me@example.com'>m</a> <a href="/relative">r</a>
            <a href="HTTP://b.example/">b</a> <a href="https://a.example/?x=1&y=2#top">again</a>
            <a href="javascript:alert(1)">j</a><a name="n">no href</a></p>"#;
        let text = "See https://c.example/path?q=1, or (https://d.example/x). And https://a.example/?x=1&y=2#top.";
        assert_eq!(
            extract(Some(html), Some(text)),
            [
                "https://a.example/?x=1&y=2#top",
                "HTTP://b.example/",
                "https://c.example/path?q=1",
                "https://d.example/x",
            ]
        );
        assert!(extract(Some("<a href=\"https://x.example/\u{1}\">"), None).is_empty());
    }

    #[test]
    fn html_links_are_masked_and_others_untouched() {
        let s = signer();
        let l = links(&["https://a.example/?x=1&y=2#top", "http://b.example/"]);
        let r = Recipient::new(&s, "https", true, &l, 9, 4).unwrap();
        let html = r#"<a class="btn" href="https://a.example/?x=1&amp;y=2#top" data-x="1">A</a><a href="mailto:x@example.com">m</a><a href="/rel">r</a><A HREF="http://b.example/">B</A><a href="https://unknown.example/">u</a>"#;
        let out = r.html(html);
        assert!(!out.contains("a.example"), "{out}");
        assert!(!out.contains("b.example"), "{out}");
        assert!(out.contains(r#"href="mailto:x@example.com""#));
        assert!(out.contains(r#"href="/rel""#));
        assert!(out.contains(r#"href="https://unknown.example/""#));
        assert!(out.contains(r#"class="btn""#) && out.contains(r#"data-x="1""#));
        // Subscriber 4 of two domains: t1 (4 mod 2 = 0), every time.
        // lol_html keeps an attribute's name as written (`HREF`).
        let out = out.replace("HREF=", "href=");
        let hrefs: Vec<&str> = out
            .split("href=\"")
            .skip(1)
            .map(|h| h.split('"').next().unwrap())
            .collect();
        assert!(hrefs[0].starts_with("https://t1.example/l/"), "{hrefs:?}");
        assert_eq!(link_of(&s, hrefs[0]), 1);
        assert_eq!(link_of(&s, hrefs[3]), 2);
        assert!(!out.contains("/o/"));
    }

    #[test]
    fn text_urls_are_masked_without_their_trailing_punctuation() {
        let s = signer();
        let l = links(&["https://c.example/path?q=1", "https://d.example/x"]);
        let r = Recipient::new(&s, "http", true, &l, 9, 5).unwrap();
        let out = r.text(
            "Go to https://c.example/path?q=1, or (https://d.example/x). Not https://e.example/.",
        );
        assert!(
            !out.contains("c.example") && !out.contains("d.example"),
            "{out}"
        );
        assert!(out.starts_with("Go to http://t2.example/l/"), "{out}");
        assert!(out.contains(", or (http://t2.example/l/"));
        assert!(out.ends_with("). Not https://e.example/."), "{out}");
    }

    #[test]
    fn opens_add_one_pixel_before_the_body_end_and_masking_can_be_off() {
        let s = signer();
        let mut l = links(&["https://a.example/"]);
        l.track_opens = true;
        let r = Recipient::new(&s, "https", false, &l, 1, 1).unwrap();
        let out = r.html("<html><BODY><a href=\"https://a.example/\">a</a></BODY></html>");
        assert!(
            out.contains("href=\"https://a.example/\""),
            "masking off: {out}"
        );
        let at = out.find("/o/").unwrap();
        assert!(at < out.find("</BODY>").unwrap());
        assert_eq!(out.matches("<img").count(), 1);
        assert_eq!(r.text("https://a.example/"), "https://a.example/");
    }

    #[test]
    fn no_domain_no_masking() {
        let s = signer();
        let l = CampaignLinks::default();
        assert!(Recipient::new(&s, "https", true, &l, 1, 1).is_none());
    }

    #[test]
    fn one_list_unsubscribe_header_with_both_uris() {
        let h = list_unsubscribe(
            "https://t.example/u/TOKEN",
            Some("<mailto:unsub+x@b.example?subject=unsubscribe>"),
        );
        assert_eq!(h.iter().filter(|(n, _)| n == "List-Unsubscribe").count(), 1);
        assert_eq!(
            h[0].1,
            "<https://t.example/u/TOKEN>, <mailto:unsub+x@b.example?subject=unsubscribe>"
        );
        assert_eq!(
            h[1],
            (
                "List-Unsubscribe-Post".into(),
                "List-Unsubscribe=One-Click".into()
            )
        );
        assert_eq!(
            list_unsubscribe("https://t/u/x", None)[0].1,
            "<https://t/u/x>"
        );
    }

    #[test]
    fn entities_decode_like_a_browser_for_links() {
        assert_eq!(decode_entities("a&amp;b&#38;c&#x26;d&lt;"), "a&b&c&d<");
        assert_eq!(decode_entities("a&unknown;b&"), "a&unknown;b&");
        assert_eq!(decode_entities("&#xFFFFFFFF;"), "&#xFFFFFFFF;");
        assert_eq!(
            escape_html("<script>\"'&"),
            "&lt;script&gt;&quot;&#39;&amp;"
        );
    }
}

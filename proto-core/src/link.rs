//! `shoal:` links: the text a person pastes to fetch a file.
//!
//! ```text
//! shoal:<64 hex digits of the file id>?tr=<host:port>&tr=<host:port>&name=<percent-encoded name>
//! ```
//!
//! Only the id is required; each `tr` (up to [`MAX_TRACKERS`], in order) names a tracker of
//! the swarm, any one of which suffices, and `name` is a hint for the output file name (the
//! manifest's name is what is trusted, after its id has been checked).

use core::fmt::{self, Write};

use crate::manifest::{validate_name, Name, MAX_NAME_LEN};
pub use crate::peer::MAX_TRACKERS;
use crate::wire::FileId;

/// The scheme every link starts with.
pub const SCHEME: &str = "shoal:";
/// The longest tracker address a link may carry.
pub const MAX_TRACKER_LEN: usize = 255;

/// A parsed `shoal:` link.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Link {
    /// The file id.
    pub file: FileId,
    /// The trackers' addresses as written (`host:port`), in order; resolving them is the
    /// adapter's job.
    pub trackers: heapless::Vec<heapless::String<MAX_TRACKER_LEN>, MAX_TRACKERS>,
    /// The file name hint.
    pub name: Option<Name>,
}

/// Why a link did not parse. Each message says what is wrong and what a valid link looks like.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum LinkError {
    /// The text does not start with `shoal:` and is not a bare 64-digit id.
    NotALink,
    /// The id is not 64 hex digits.
    BadId,
    /// A query parameter is not `key=value`, or its key is unknown.
    BadParam,
    /// A parameter appears twice (`name`, or the same tracker).
    DuplicateParam,
    /// More trackers than [`MAX_TRACKERS`].
    TooManyTrackers,
    /// The `tr` value is empty, too long, or has no `:port`.
    BadTracker,
    /// The `name` value has a bad `%` escape, is not UTF-8, or is not a safe file name.
    BadName,
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LinkError::NotALink => "not a shoal link: expected shoal:<64 hex digits>?tr=host:port&name=NAME or a bare 64-digit file id",
            LinkError::BadId => "the file id in the link is not 64 hex digits",
            LinkError::BadParam => "the link has a parameter other than tr=host:port or name=NAME",
            LinkError::DuplicateParam => "the link repeats a parameter",
            LinkError::TooManyTrackers => "the link names more than 4 trackers (tr=)",
            LinkError::BadTracker => "the link's tracker (tr=) is not host:port",
            LinkError::BadName => "the link's name= is not a valid percent-encoded file name",
        })
    }
}

impl core::error::Error for LinkError {}

impl Link {
    /// Parses a link, or a bare 64-digit file id (surrounding whitespace is ignored).
    pub fn parse(text: &str) -> Result<Link, LinkError> {
        let text = text.trim();
        let Some(rest) = text.strip_prefix(SCHEME) else {
            return FileId::from_hex(text)
                .map(|file| Link {
                    file,
                    trackers: heapless::Vec::new(),
                    name: None,
                })
                .ok_or(LinkError::NotALink);
        };
        let (id, query) = match rest.split_once('?') {
            Some((id, q)) => (id, Some(q)),
            None => (rest, None),
        };
        let file = FileId::from_hex(id).ok_or(LinkError::BadId)?;
        let mut link = Link {
            file,
            trackers: heapless::Vec::new(),
            name: None,
        };
        for param in query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter(|p| !p.is_empty())
        {
            let (key, value) = param.split_once('=').ok_or(LinkError::BadParam)?;
            match key {
                "tr" => {
                    let tr = parse_tracker(value)?;
                    if link.trackers.contains(&tr) {
                        return Err(LinkError::DuplicateParam);
                    }
                    link.trackers
                        .push(tr)
                        .map_err(|_| LinkError::TooManyTrackers)?;
                }
                "name" => {
                    if link.name.is_some() {
                        return Err(LinkError::DuplicateParam);
                    }
                    link.name = Some(percent_decode(value)?);
                }
                _ => return Err(LinkError::BadParam),
            }
        }
        Ok(link)
    }
}

/// Checks a tracker address as a link (or a metainfo file) carries it: `host:port`, the host
/// a name, an IPv4 address or a bracketed IPv6 one.
pub fn parse_tracker(value: &str) -> Result<heapless::String<MAX_TRACKER_LEN>, LinkError> {
    let (host, port) = value.rsplit_once(':').ok_or(LinkError::BadTracker)?;
    let port_ok = !port.is_empty() && port.len() <= 5 && port.parse::<u16>().is_ok();
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '[' | ']' | ':'));
    if !port_ok || !host_ok {
        return Err(LinkError::BadTracker);
    }
    heapless::String::try_from(value).map_err(|_| LinkError::BadTracker)
}

fn percent_decode(value: &str) -> Result<Name, LinkError> {
    let mut bytes: heapless::Vec<u8, MAX_NAME_LEN> = heapless::Vec::new();
    let raw = value.as_bytes();
    let mut i = 0;
    while i < raw.len() {
        let b = match raw[i] {
            b'%' => {
                let hex = raw.get(i + 1..i + 3).ok_or(LinkError::BadName)?;
                let hex = core::str::from_utf8(hex).map_err(|_| LinkError::BadName)?;
                i += 3;
                u8::from_str_radix(hex, 16).map_err(|_| LinkError::BadName)?
            }
            b'+' => {
                i += 1;
                b' '
            }
            other => {
                i += 1;
                other
            }
        };
        bytes.push(b).map_err(|_| LinkError::BadName)?;
    }
    let name = core::str::from_utf8(&bytes).map_err(|_| LinkError::BadName)?;
    validate_name(name).map_err(|_| LinkError::BadName)?;
    Name::try_from(name).map_err(|_| LinkError::BadName)
}

/// Unreserved characters (RFC 3986) pass through; every other byte is `%XX`.
fn percent_encode(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            f.write_char(b as char)?;
        } else {
            write!(f, "%{b:02X}")?;
        }
    }
    Ok(())
}

impl fmt::Display for Link {
    /// The canonical text form, which [`Link::parse`] reads back to an equal link.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}", self.file)?;
        let mut sep = '?';
        for tr in &self.trackers {
            write!(f, "{sep}tr={tr}")?;
            sep = '&';
        }
        if let Some(name) = &self.name {
            write!(f, "{sep}name=")?;
            percent_encode(f, name)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::string::ToString;

    const ID: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn parses_full_link_and_formats_it_back() {
        let text = std::format!("shoal:{ID}?tr=tracker.local:7070&name=my%20file%26more.iso");
        let link = Link::parse(&text).unwrap();
        assert_eq!(link.file.to_string(), ID);
        assert_eq!(link.trackers[0].as_str(), "tracker.local:7070");
        assert_eq!(link.name.as_deref(), Some("my file&more.iso"));
        assert_eq!(link.to_string(), text);
        assert_eq!(Link::parse(&link.to_string()).unwrap(), link);
    }

    #[test]
    fn bare_id_and_uppercase_hex_are_accepted() {
        assert_eq!(
            Link::parse(ID).unwrap().file,
            Link::parse(&ID.to_uppercase()).unwrap().file
        );
        let l = Link::parse(&std::format!(" shoal:{ID}\n")).unwrap();
        assert_eq!((l.trackers.len(), l.name), (0, None));
    }

    #[test]
    fn malformed_links_get_specific_errors() {
        let e = |s: &str| Link::parse(s).unwrap_err();
        assert_eq!(e("http://x"), LinkError::NotALink);
        assert_eq!(e("shoal:abc"), LinkError::BadId);
        assert_eq!(e(&std::format!("shoal:{}zz", &ID[..62])), LinkError::BadId);
        assert_eq!(e(&std::format!("shoal:{ID}?x=1")), LinkError::BadParam);
        assert_eq!(e(&std::format!("shoal:{ID}?tr")), LinkError::BadParam);
        assert_eq!(
            e(&std::format!("shoal:{ID}?tr=host")),
            LinkError::BadTracker
        );
        assert_eq!(
            e(&std::format!("shoal:{ID}?tr=host:99999")),
            LinkError::BadTracker
        );
        assert_eq!(
            e(&std::format!("shoal:{ID}?tr=a b:1")),
            LinkError::BadTracker
        );
        assert_eq!(
            e(&std::format!("shoal:{ID}?tr=a:1&tr=a:1")),
            LinkError::DuplicateParam
        );
        assert_eq!(
            e(&std::format!(
                "shoal:{ID}?tr=a:1&tr=b:2&tr=c:3&tr=d:4&tr=e:5"
            )),
            LinkError::TooManyTrackers
        );
        assert_eq!(e(&std::format!("shoal:{ID}?name=%2")), LinkError::BadName);
        assert_eq!(
            e(&std::format!("shoal:{ID}?name=a%2Fb")),
            LinkError::BadName
        );
        assert_eq!(e(&std::format!("shoal:{ID}?name=%FF")), LinkError::BadName);
        assert_eq!(e(&std::format!("shoal:{ID}?name=..")), LinkError::BadName);
        // Every error explains itself in words a user can act on.
        assert!(LinkError::NotALink
            .to_string()
            .contains("shoal:<64 hex digits>"));
    }

    #[test]
    fn ipv6_tracker_is_kept_verbatim() {
        let l = Link::parse(&std::format!("shoal:{ID}?tr=[::1]:7070")).unwrap();
        assert_eq!(l.trackers[0].as_str(), "[::1]:7070");
    }

    #[test]
    fn several_trackers_keep_their_order() {
        let text = std::format!("shoal:{ID}?tr=a.example:7070&tr=[::1]:7071&name=x");
        let l = Link::parse(&text).unwrap();
        let trs: std::vec::Vec<&str> = l.trackers.iter().map(|t| t.as_str()).collect();
        assert_eq!(trs, ["a.example:7070", "[::1]:7071"]);
        assert_eq!(l.to_string(), text);
    }
}

//! What an operator sees: read-only views of the registered peers, the listed files and their
//! holders, and the transfer totals peers report with their pongs ([`Message::Report`]).
//!
//! Nothing here changes the tracker. A view walks a table once, so an adapter that shows a
//! page of ten thousand peers pays for ten thousand entries when it asks, never per message.

use super::*;
use crate::time::Duration;

/// What a peer last reported of its transfers, and the rates the tracker derived from its
/// last two reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Reported {
    /// When the last report arrived (`None`: none yet).
    at: Option<Instant>,
    uploaded: u64,
    downloaded: u64,
    upload_rate: u64,
    download_rate: u64,
}

/// Bytes per second from `bytes` over `span` (0 for an empty span).
fn per_second(bytes: u64, span: Duration) -> u64 {
    let micros = span.total_micros();
    if micros == 0 {
        return 0;
    }
    // u128: a peer may report any totals; the rate saturates instead of overflowing.
    u64::try_from(u128::from(bytes) * 1_000_000 / u128::from(micros)).unwrap_or(u64::MAX)
}

impl Reported {
    /// A report of `uploaded` and `downloaded` arrived at `now`. Totals that went down (the
    /// peer dropped a file it counted) restart the measurement.
    pub(super) fn update(&mut self, now: Instant, uploaded: u64, downloaded: u64) {
        if let Some(at) = self.at {
            let span = now.saturating_since(at);
            let rate = |new: u64, old: u64| new.checked_sub(old).map_or(0, |d| per_second(d, span));
            self.upload_rate = rate(uploaded, self.uploaded);
            self.download_rate = rate(downloaded, self.downloaded);
        }
        self.at = Some(now);
        self.uploaded = uploaded;
        self.downloaded = downloaded;
    }
}

/// A registered peer as the operator sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerView {
    /// Its node id.
    pub node: NodeId,
    /// The address recorded for it (its connection's IP, its announced listen port).
    pub addr: SocketAddr,
    /// When its connection finished the handshake.
    pub since: Instant,
    /// Files it holds chunks of (or fetches).
    pub files: u32,
    /// Block bytes it says it served, over the files it has (0 until its first report).
    pub uploaded: u64,
    /// Bytes of the chunks it says it verified (fetched), over the files it has.
    pub downloaded: u64,
    /// Its upload rate over its last two reports, bytes per second.
    pub upload_rate: u64,
    /// Its download rate over its last two reports, bytes per second.
    pub download_rate: u64,
}

/// A listed file as the operator sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileView<'t> {
    /// Its id.
    pub file: FileId,
    /// Its name, size and chunk size.
    pub header: &'t ManifestHeader,
    /// Peers holding (or fetching) any of its chunks.
    pub holders: u32,
    /// Peers holding all of its chunks.
    pub complete: u32,
}

/// One holder of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HolderView {
    /// The holder.
    pub peer: PeerView,
    /// Chunks of the file it holds.
    pub chunks: u32,
    /// Chunks of the file.
    pub of: u32,
}

impl Tracker<'_> {
    /// Records a peer's report (which is also its pong).
    pub(super) fn on_report(&mut self, id: ConnId, uploaded: u64, downloaded: u64) {
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        c.link.missed_pings = 0;
        // `last_rx` is when this frame's input arrived (set by `on_input`).
        let now = c.link.last_rx;
        c.reported.update(now, uploaded, downloaded);
    }

    /// The registered peers, in connection-table order.
    pub fn peers(&self) -> impl Iterator<Item = PeerView> + '_ {
        self.conns
            .iter()
            .filter_map(|(id, c)| self.peer_view(id.index() as u16, c))
    }

    /// The listed files, in file-table order.
    pub fn files(&self) -> impl Iterator<Item = FileView<'_>> + '_ {
        self.files.iter().filter_map(|(_, f)| match f {
            FileState::Listed(l) => Some(FileView {
                file: l.file,
                header: &l.header,
                holders: l.holders,
                complete: l.complete,
            }),
            _ => None,
        })
    }

    /// The holders of `file`, in connection-table order; empty if it is not listed.
    pub fn holders(&self, file: &FileId) -> impl Iterator<Item = HolderView> + '_ {
        let slot = self.by_id.get(file).copied();
        // An empty range when the file is not listed (slot u16::MAX has no holders: the file
        // table is smaller than that).
        let slot = slot.unwrap_or(u16::MAX);
        self.holders
            .range((slot, 0)..=(slot, u16::MAX))
            .filter_map(move |(&(_, ix), h)| {
                let id = self
                    .conns
                    .id_at(usize::from(ix))
                    .filter(|id| id.generation() == h.generation)?;
                let peer = self.peer_view(ix, self.conns.get(id)?)?;
                Some(HolderView {
                    peer,
                    chunks: h.count,
                    of: h.len,
                })
            })
    }

    fn peer_view(&self, ix: u16, c: &Conn) -> Option<PeerView> {
        let addr = c.registered()?;
        let r = c.reported;
        Some(PeerView {
            node: c.link.hello?.node,
            addr,
            since: c.opened,
            files: self
                .held
                .range((ix, 0)..=(ix, u16::MAX))
                .count()
                .try_into()
                .unwrap_or(u32::MAX),
            uploaded: r.uploaded,
            downloaded: r.downloaded,
            upload_rate: r.upload_rate,
            download_rate: r.download_rate,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_come_from_two_reports_and_restart_when_totals_go_down() {
        let mut r = Reported::default();
        let t = Instant::ZERO;
        r.update(t, 1_000, 5_000);
        assert_eq!(
            (r.upload_rate, r.download_rate),
            (0, 0),
            "one report is no rate"
        );
        r.update(t + Duration::from_secs(2), 3_000, 25_000);
        assert_eq!((r.upload_rate, r.download_rate), (1_000, 10_000));
        r.update(t + Duration::from_secs(4), 1, u64::MAX);
        assert_eq!(r.upload_rate, 0, "a total that went down");
        assert!(
            r.download_rate > u64::MAX / 4,
            "a huge total overflows nothing"
        );
        r.update(t + Duration::from_secs(4), 2, u64::MAX);
        assert_eq!((r.upload_rate, r.download_rate), (0, 0), "no time passed");
    }
}

//! The peer's timers: a table indexed by [`Timer`] (quinn-proto's `TimerTable`).
//!
//! Every deadline derives from state the peer keeps anyway (a connection's handshake deadline,
//! its last input, a file's next locate, ...), so the table is computed from that state rather
//! than stored beside it, where a copy could drift. The `Timeout` a drain ends with is the earliest
//! armed timer; [`Peer::handle_timeout`] walks the kinds in [`Timer::ALL`] order and runs the
//! expiry of each one that is due. Adding a timer is adding a kind: its deadline and its
//! expiry are written next to each other here.

use super::*;

/// A kind of timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Timer {
    /// A connection's handshake did not finish in time: it is closed.
    Handshake,
    /// A connection left its requests unanswered too long: its work moves elsewhere.
    Stall,
    /// Every connection is pinged; silent ones are dropped.
    Ping,
    /// The tracker is dialled again after a loss.
    TrackerRetry,
    /// A fetch locates holders again (or asks for its manifest, or reports what no one has).
    Locate,
    /// An upload slot with nothing to serve is given up.
    SlotIdle,
    /// A connection paused after a stall or a busy answer may take work again.
    Pause,
    /// A candidate's backoff is over: it may be dialled.
    CandidateRetry,
    /// The upload rate limit has tokens again for a queued block.
    UploadRate,
    /// The download rate limit has tokens again for a request waiting to be sent.
    DownloadRate,
}

impl Timer {
    /// Every kind, in the order their expiries run.
    pub(super) const ALL: [Timer; 10] = [
        Timer::Handshake,
        Timer::Stall,
        Timer::Ping,
        Timer::TrackerRetry,
        Timer::Locate,
        Timer::SlotIdle,
        Timer::Pause,
        Timer::CandidateRetry,
        Timer::UploadRate,
        Timer::DownloadRate,
    ];
}

/// The deadline of every kind; `None` where it is not armed.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct TimerTable([Option<Instant>; Timer::ALL.len()]);

impl TimerTable {
    /// The deadline of `t`.
    pub(super) fn get(&self, t: Timer) -> Option<Instant> {
        self.0[t as usize]
    }

    /// The earliest armed deadline.
    pub(super) fn earliest(&self) -> Option<Instant> {
        self.0.iter().flatten().copied().min()
    }
}

impl<const W: usize> Peer<'_, W> {
    /// Every timer's deadline, as the state says now.
    pub(super) fn timers(&self) -> TimerTable {
        let mut table = TimerTable::default();
        for t in Timer::ALL {
            table.0[t as usize] = self.deadline(t);
        }
        table
    }

    /// When `t` next expires, if it is armed. Every instant named here is one at which its
    /// expiry changes something (or, for the last three, at which `schedule` may), so a due
    /// timer never fires twice for nothing.
    pub(super) fn deadline(&self, t: Timer) -> Option<Instant> {
        let now = self.now;
        let conns = self.conns.iter().map(|(_, c)| c);
        match t {
            Timer::Handshake => conns
                .filter_map(|c| match c.link.phase {
                    Phase::Handshake { deadline } => Some(deadline),
                    _ => None,
                })
                .min(),
            Timer::Stall => {
                let stall = conns
                    .filter(|c| {
                        c.link.phase == Phase::Open && c.reqs.iter().any(|r| r.sent.is_some())
                    })
                    .map(|c| c.link.last_rx + self.config.stall_timeout)
                    .min();
                // Blocks remotes wait for, in chunks that stopped moving on.
                let waiting = self
                    .conns
                    .iter()
                    .filter(|(_, c)| !c.serve.is_empty())
                    .filter_map(|(_, c)| self.waiting_deadline(c))
                    .min();
                stall.into_iter().chain(waiting).min()
            }
            Timer::Ping => Some(self.next_ping),
            Timer::TrackerRetry => self
                .wanted_trackers()
                .iter()
                .map(|&t| &self.sessions[t])
                .filter(|s| s.conn.is_none())
                .map(|s| s.retry_at)
                .min(),
            Timer::Locate => self
                .files
                .iter()
                .flatten()
                .filter(|f| f.fetching)
                .map(|f| f.next_locate)
                .min(),
            Timer::SlotIdle => conns
                .filter(|c| c.upload_slot && c.serve.is_empty())
                .map(|c| c.last_served + SLOT_IDLE)
                .min(),
            // The last three only matter once they are in the future: a ready connection,
            // candidate or token waits for the next event (a connection closing, a socket
            // becoming writable), and `schedule` runs after every input.
            Timer::Pause => conns.map(|c| c.pause_until).filter(|&at| at > now).min(),
            Timer::CandidateRetry => self
                .candidates
                .iter()
                .flatten()
                .filter(|c| c.conn.is_none() && c.retry_at > now)
                .filter(|c| self.file(c.slot).is_some_and(|f| f.fetching))
                .map(|c| c.retry_at)
                .min(),
            Timer::UploadRate => self
                .upload
                .as_ref()
                .map(|b| b.ready_at())
                .filter(|&at| at > now && self.conns.iter().any(|(_, c)| !c.serve.is_empty())),
            Timer::DownloadRate => self.download.as_ref().map(|b| b.ready_at()).filter(|&at| {
                at > now
                    && self
                        .conns
                        .iter()
                        .any(|(_, c)| c.reqs.iter().any(|r| r.sent.is_none()))
            }),
        }
    }

    /// What happens when `t` expires.
    pub(super) fn expire(&mut self, t: Timer, now: Instant) {
        match t {
            Timer::Handshake => self.check_handshakes(now),
            Timer::Stall => self.check_stalls(now),
            Timer::Ping => self.ping_round(now),
            Timer::TrackerRetry => self.connect_trackers(now),
            Timer::Locate => {
                for slot in 0..self.files.len() as u16 {
                    self.file_tick(slot, now);
                }
            }
            Timer::SlotIdle => self.release_idle_slots(now),
            // Nothing of their own: `schedule`, which follows every timeout, takes them up.
            Timer::Pause | Timer::CandidateRetry | Timer::UploadRate | Timer::DownloadRate => {}
        }
    }
}

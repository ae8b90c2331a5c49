//! Where a download is made durable: its data and leaves synced, then the journal records that
//! vouch for them appended and synced, on a thread of its own.
//!
//! A sync waits for the disk: a batch of 32 chunks of 256 KiB took 3 to 9 ms, every 30 ms of
//! a loopback download, and the receive loop did nothing meanwhile (a third of a 1 GiB
//! download's wall time, BENCHMARKS.md). Here the loop hands the batch over and goes on. The
//! order that makes a crash safe is kept: every byte of a batch's chunks was written before the
//! batch was handed over, the data is synced after that, and the records are written only
//! once that sync returned.

use std::fs::File;
use std::io::{self, Write};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// The files of one download, as the sync thread sees them (their own handles).
pub(crate) struct Durable {
    /// `OUT.part` (a file, or a folder's files).
    pub(crate) part: crate::store::Data,
    /// `OUT.shoal-leaves`.
    pub(crate) leaves: File,
    /// `OUT.shoal-journal`, opened to append.
    pub(crate) journal: File,
}

struct Job {
    files: Arc<Durable>,
    records: Vec<u8>,
}

/// Batches handed over and not yet durable, and the first failure.
#[derive(Default)]
struct State {
    pending: usize,
    error: Option<io::Error>,
}

/// The sync thread.
pub(crate) struct Syncer {
    jobs: Option<Sender<Job>>,
    state: Arc<(Mutex<State>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Syncer {
    /// Starts the thread.
    pub(crate) fn start() -> io::Result<Self> {
        let (jobs, inbox) = mpsc::channel::<Job>();
        let state: Arc<(Mutex<State>, Condvar)> = Arc::default();
        let shared = state.clone();
        let thread = std::thread::Builder::new()
            .name("shoal-sync".into())
            .spawn(move || {
                for job in inbox {
                    let r = make_durable(&job.files, &job.records);
                    let (lock, done) = &*shared;
                    let mut s = lock.lock().unwrap_or_else(|e| e.into_inner());
                    s.pending -= 1;
                    if let Err(e) = r {
                        s.error.get_or_insert(e);
                    }
                    done.notify_all();
                }
            })?;
        Ok(Syncer {
            jobs: Some(jobs),
            state,
            thread: Some(thread),
        })
    }

    /// Makes `records` (chunk indexes, whose bytes are all written) durable in `files`.
    pub(crate) fn submit(&self, files: Arc<Durable>, records: &[u32]) {
        let records = records.iter().flat_map(|c| c.to_le_bytes()).collect();
        let (lock, _) = &*self.state;
        lock.lock().unwrap_or_else(|e| e.into_inner()).pending += 1;
        if let Some(jobs) = &self.jobs {
            // The thread ends only when `self` drops its sender.
            let _ = jobs.send(Job { files, records });
        }
    }

    /// The first failure since the last call, if any.
    pub(crate) fn take_error(&self) -> Option<io::Error> {
        let (lock, _) = &*self.state;
        lock.lock().unwrap_or_else(|e| e.into_inner()).error.take()
    }

    /// Waits until every batch handed over is durable; the first failure, if any.
    pub(crate) fn wait(&self) -> io::Result<()> {
        let (lock, done) = &*self.state;
        let mut s = lock.lock().unwrap_or_else(|e| e.into_inner());
        while s.pending > 0 {
            s = done.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        s.error.take().map_or(Ok(()), Err)
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        // What was handed over is finished first: the thread drains its queue, then ends.
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Data first, then the records that vouch for it.
fn make_durable(f: &Durable, records: &[u8]) -> io::Result<()> {
    f.part.sync()?;
    f.leaves.sync_data()?;
    (&f.journal).write_all(records)?;
    f.journal.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;

    #[test]
    fn records_are_appended_in_the_order_handed_over() {
        let dir = std::env::temp_dir().join(format!("shoal-syncer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let open = |name: &str| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(name))
                .unwrap()
        };
        let files = Arc::new(Durable {
            part: crate::store::Data::File(Arc::new(open("part"))),
            leaves: open("leaves"),
            journal: open("journal"),
        });
        let s = Syncer::start().unwrap();
        for batch in [&[3u32, 1][..], &[7], &[2, 9, 4]] {
            s.submit(files.clone(), batch);
        }
        s.wait().unwrap();
        let bytes = std::fs::read(dir.join("journal")).unwrap();
        let got: Vec<u32> = bytes
            .chunks(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(got, [3, 1, 7, 2, 9, 4]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

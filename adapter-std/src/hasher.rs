//! Where a host verifies blocks: SHA-256 on a thread of its own, beside the event loop.
//!
//! A peer configured with [`BlockCheck::Deferred`](proto_core::peer::BlockCheck::Deferred)
//! writes each block as it arrives and asks, with
//! [`Action::HashBlock`](proto_core::io::Action::HashBlock), for its digest. The driver hands
//! the job to a [`Hasher`]: one worker thread that reads the block back (from the page cache,
//! where it was just written) and hashes it, while the loop's thread goes on receiving. The
//! digest comes back over a channel, and a [`mio::Waker`] wakes the loop to hand it to the
//! peer. Before this, hashing was four tenths of the one busy thread of a download
//! (BENCHMARKS.md, "where the time went"); now it runs on the second core.
//!
//! One worker, first in first out: the peer wants a chunk's digests in the order it asked, and
//! a single SHA-256 stream keeps up with what one loop thread receives. Blocks asked for one
//! after another in one drain are read back together (a socket read of 256 KiB completes up
//! to sixteen of them), so the worker makes one read and wakes the loop once per batch, not
//! per 16 KiB.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use proto_core::io::BlockTicket;
use proto_core::manifest::HASH_LEN;
use proto_core::storage::StorageKey;
use sha2::{Digest, Sha256};

/// Bytes that can be read at an offset from any thread.
pub trait ReadAt: Send + Sync {
    /// Reads up to `buf.len()` bytes at `offset`; how many (0 at the end).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
}

impl ReadAt for File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        FileExt::read_at(self, buf, offset)
    }
}

/// Storage whose bytes others can read without the store: the [`Hasher`]'s thread, and the
/// kernel (`sendfile`).
pub trait SharedRead {
    /// A file holding `key`'s bytes at the same offsets, to send payload from with
    /// `sendfile`; `None` if there is none (the driver then reads payload through the store).
    fn send_source(&mut self, key: StorageKey) -> Option<Arc<File>>;

    /// A handle to read `key`'s bytes from another thread; `None` if this store has none (the
    /// driver then hashes the block on its own thread, from the store). By default the file
    /// of [`SharedRead::send_source`].
    fn shared_reader(&mut self, key: StorageKey) -> Option<Arc<dyn ReadAt>> {
        self.send_source(key).map(|f| f as Arc<dyn ReadAt>)
    }
}

/// A block's digest, or why there is none.
pub struct Hashed {
    /// The region the block was read from.
    pub key: StorageKey,
    /// The peer's ticket for it.
    pub ticket: BlockTicket,
    /// Its SHA-256; `None` if it could not be read whole.
    pub digest: Option<[u8; HASH_LEN]>,
}

/// Blocks that lie one after another in one region: read with one call.
struct Job {
    reader: Arc<dyn ReadAt>,
    key: StorageKey,
    offset: u64,
    /// Each block's length and ticket, in order from `offset`.
    blocks: Vec<(u32, BlockTicket)>,
}

impl Job {
    fn len(&self) -> u64 {
        self.blocks.iter().map(|&(len, _)| u64::from(len)).sum()
    }
}

/// Most bytes one job reads back at once.
const BATCH_BYTES: u64 = 1 << 20;

/// The hashing thread and its two channels.
pub struct Hasher {
    jobs: Option<Sender<Job>>,
    done: Receiver<Hashed>,
    thread: Option<JoinHandle<()>>,
    /// Blocks gathered for the next job, sent by [`Hasher::flush`].
    batch: Option<Job>,
}

impl Hasher {
    /// Starts the worker; `waker` is woken after every digest it sends.
    pub fn start(waker: Arc<mio::Waker>) -> io::Result<Self> {
        let (jobs, inbox) = mpsc::channel::<Job>();
        let (outbox, done) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("shoal-hash".into())
            .spawn(move || {
                let mut buf = Vec::new();
                for job in inbox {
                    let read = read_back(&*job.reader, job.offset, job.len(), &mut buf);
                    let mut at = 0;
                    for &(len, ticket) in &job.blocks {
                        let block = buf.get(at..(at + len as usize).min(read));
                        let block = block.filter(|b| b.len() == len as usize);
                        at += len as usize;
                        let sent = outbox.send(Hashed {
                            key: job.key,
                            ticket,
                            digest: block.map(|b| Sha256::digest(b).into()),
                        });
                        if sent.is_err() {
                            return;
                        }
                    }
                    if waker.wake().is_err() {
                        return;
                    }
                }
            })?;
        Ok(Hasher {
            jobs: Some(jobs),
            done,
            thread: Some(thread),
            batch: None,
        })
    }

    /// Queues the `len` bytes at `offset` of `reader` for hashing: with the blocks gathered
    /// so far if it follows them, else after sending those. Call [`Hasher::flush`] once the
    /// drain that asked is over.
    pub fn submit(
        &mut self,
        reader: Arc<dyn ReadAt>,
        key: StorageKey,
        offset: u64,
        len: u32,
        ticket: BlockTicket,
    ) {
        if let Some(b) = &mut self.batch {
            let end = b.offset + b.len();
            if b.key == key && end == offset && b.len() + u64::from(len) <= BATCH_BYTES {
                b.blocks.push((len, ticket));
                return;
            }
            self.flush();
        }
        self.batch = Some(Job {
            reader,
            key,
            offset,
            blocks: vec![(len, ticket)],
        });
    }

    /// Sends the blocks gathered to the worker.
    pub fn flush(&mut self) {
        // The worker ends only when this side drops its sender, so the send cannot fail
        // while `self` lives; if it did, the chunk would stall and move on by its timeout.
        if let (Some(job), Some(jobs)) = (self.batch.take(), &self.jobs) {
            let _ = jobs.send(job);
        }
    }

    /// A digest the worker finished, if any.
    pub fn finished(&self) -> Option<Hashed> {
        self.done.try_recv().ok()
    }
}

impl Drop for Hasher {
    fn drop(&mut self) {
        // Closing the job channel ends the worker's loop.
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads up to `len` bytes at `offset` into `buf`; how many could be read.
fn read_back(r: &dyn ReadAt, offset: u64, len: u64, buf: &mut Vec<u8>) -> usize {
    buf.resize(len as usize, 0);
    let mut at = 0;
    while at < buf.len() {
        match r.read_at(&mut buf[at..], offset + at as u64) {
            Ok(0) => break,
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto_core::storage::Region;

    struct Mem(Vec<u8>);
    impl ReadAt for Mem {
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
            let start = (offset as usize).min(self.0.len());
            let n = buf.len().min(self.0.len() - start);
            buf[..n].copy_from_slice(&self.0[start..start + n]);
            Ok(n)
        }
    }

    #[test]
    fn digests_come_back_in_order_and_a_block_past_the_end_has_none() {
        let mut poll = mio::Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let mut hasher = Hasher::start(waker).unwrap();
        let data: Vec<u8> = (0..40_000u32).map(|i| (i * 7) as u8).collect();
        let reader: Arc<dyn ReadAt> = Arc::new(Mem(data.clone()));
        let key = StorageKey {
            slot: 3,
            region: Region::Data,
        };
        let ticket = proto_core::testing::ticket(3, 0, 16_384, 1);
        hasher.submit(reader.clone(), key, 0, 16_384, ticket);
        hasher.submit(reader.clone(), key, 16_384, 16_384, ticket);
        hasher.submit(reader.clone(), key, 32_768, 16_384, ticket);
        hasher.flush();
        // Not after the others: a job of its own.
        hasher.submit(reader, key, 8, 100, ticket);
        hasher.flush();
        let mut got = Vec::new();
        let mut events = mio::Events::with_capacity(4);
        while got.len() < 4 {
            match hasher.finished() {
                Some(h) => got.push(h.digest),
                None => poll.poll(&mut events, None).unwrap(),
            }
        }
        let want = |r: std::ops::Range<usize>| Some(Sha256::digest(&data[r]).into());
        assert_eq!(got[0], want(0..16_384));
        assert_eq!(got[1], want(16_384..32_768));
        assert_eq!(
            got[2], None,
            "the third block runs past the end of the data"
        );
        assert_eq!(got[3], want(8..108));
    }
}

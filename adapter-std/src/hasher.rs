//! Where a host verifies blocks: SHA-256 on a thread of its own, beside the event loop.
//!
//! A peer configured with [`BlockCheck::Deferred`](proto_core::peer::BlockCheck::Deferred)
//! writes each block as it arrives and asks, with
//! [`Action::HashBlock`](proto_core::io::Action::HashBlock), for its digest. The driver hands
//! the job to a [`Hasher`]: one worker thread that hashes the block while the loop's thread
//! goes on receiving. The digest comes back over a channel, and a [`mio::Waker`] wakes the
//! loop to hand it to the peer. Before this, hashing was four tenths of the one busy thread
//! of a download (BENCHMARKS.md, "where the time went"); now it runs on the second core.
//!
//! Where the worker finds the bytes: a block one socket read brought whole is hashed in that
//! read's buffer, which the loop lends the worker (it reads on into another) — no copy, no
//! system call. Otherwise (a block split across two reads, or too many buffers already lent)
//! the worker reads it back from the page cache, where it was just written.
//!
//! One worker, first in first out: the peer wants a chunk's digests in the order it asked.
//! Blocks asked for in one drain go as one job (those of one buffer, or those lying one after
//! another in storage, read back with one call), so the worker wakes the loop once per job,
//! not per 16 KiB.

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

/// Where a job's bytes are.
enum Source {
    /// In storage: read back with one call (from the page cache, where they were just
    /// written), so the job's blocks lie one after another in one region.
    Stored(Arc<dyn ReadAt>),
    /// Still in the buffer the socket read them into: hashed where they lie, with no read and
    /// no copy; the blocks may lie anywhere in it. The loop reads into another buffer while
    /// this one is lent.
    Received(Arc<Vec<u8>>),
}

/// One block to hash: `len` bytes of `key`, at `at` in the job's source (the region's offset
/// for [`Source::Stored`], the buffer's for [`Source::Received`]).
struct Block {
    key: StorageKey,
    at: u64,
    len: u32,
    ticket: BlockTicket,
}

/// Blocks from one source, hashed in order and answered with one wake of the loop.
struct Job {
    source: Source,
    blocks: Vec<Block>,
}

impl Job {
    fn len(&self) -> u64 {
        self.blocks.iter().map(|b| u64::from(b.len)).sum()
    }

    /// Whether `next`'s blocks can join this job: from the same buffer, or next in the same
    /// region of the same store.
    fn continued_by(&self, next: &Job) -> bool {
        let joins = match (
            &self.source,
            &next.source,
            self.blocks.last(),
            next.blocks.first(),
        ) {
            (Source::Stored(r), Source::Stored(n), Some(last), Some(first)) => {
                Arc::ptr_eq(r, n)
                    && last.key == first.key
                    && last.at + u64::from(last.len) == first.at
            }
            (Source::Received(b), Source::Received(n), _, _) => Arc::ptr_eq(b, n),
            _ => false,
        };
        joins && self.len() + next.len() <= BATCH_BYTES
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
                    // Each block's bytes, or None if they could not be read whole.
                    let read;
                    let (bytes, base) = match &job.source {
                        Source::Stored(reader) => {
                            let from = job.blocks.first().map_or(0, |b| b.at);
                            read = read_back(&**reader, from, job.len(), &mut buf);
                            (&buf[..read], from)
                        }
                        Source::Received(b) => (&b[..], 0),
                    };
                    for block in &job.blocks {
                        let start = (block.at - base) as usize;
                        let digest = bytes
                            .get(start..start + block.len as usize)
                            .map(|b| Sha256::digest(b).into());
                        let sent = outbox.send(Hashed {
                            key: block.key,
                            ticket: block.ticket,
                            digest,
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
        self.queue(Job {
            source: Source::Stored(reader),
            blocks: vec![Block {
                key,
                at: offset,
                len,
                ticket,
            }],
        });
    }

    /// Queues the `len` bytes at `start` of `buf` for hashing: a block of `key` just written
    /// from that socket buffer, which the caller no longer writes into. Batched with other
    /// blocks of the same buffer.
    pub fn submit_received(
        &mut self,
        buf: Arc<Vec<u8>>,
        start: usize,
        key: StorageKey,
        len: u32,
        ticket: BlockTicket,
    ) {
        self.queue(Job {
            source: Source::Received(buf),
            blocks: vec![Block {
                key,
                at: start as u64,
                len,
                ticket,
            }],
        });
    }

    /// Adds a one-block job to the batch if it continues it, else sends the batch first.
    fn queue(&mut self, next: Job) {
        if let Some(b) = &mut self.batch {
            if b.continued_by(&next) {
                b.blocks.extend(next.blocks);
                return;
            }
            self.flush();
        }
        self.batch = Some(next);
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

    fn started() -> (mio::Poll, Hasher) {
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
        (poll, Hasher::start(waker).unwrap())
    }

    /// The next `n` digests, waiting on the waker between them.
    fn digests(poll: &mut mio::Poll, hasher: &Hasher, n: usize) -> Vec<Option<[u8; HASH_LEN]>> {
        let mut got = Vec::new();
        let mut events = mio::Events::with_capacity(4);
        while got.len() < n {
            match hasher.finished() {
                Some(h) => got.push(h.digest),
                None => poll.poll(&mut events, None).unwrap(),
            }
        }
        got
    }

    #[test]
    fn digests_come_back_in_order_and_a_block_past_the_end_has_none() {
        let (mut poll, mut hasher) = started();
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
        let got = digests(&mut poll, &hasher, 4);
        let want = |r: std::ops::Range<usize>| Some(Sha256::digest(&data[r]).into());
        assert_eq!(got[0], want(0..16_384));
        assert_eq!(got[1], want(16_384..32_768));
        assert_eq!(
            got[2], None,
            "the third block runs past the end of the data"
        );
        assert_eq!(got[3], want(8..108));
    }

    #[test]
    fn blocks_still_in_their_receive_buffer_are_hashed_where_they_lie() {
        let (mut poll, mut hasher) = started();
        let a: Arc<Vec<u8>> = Arc::new((0..50_000u32).map(|i| (i * 13) as u8).collect());
        let b: Arc<Vec<u8>> = Arc::new(vec![5u8; 20_000]);
        let key = StorageKey {
            slot: 1,
            region: Region::Data,
        };
        let ticket = proto_core::testing::ticket(1, 0, 16_384, 1);
        // Three blocks of `a` (one job, wherever they lie in it), one of `b` (a job of its own).
        hasher.submit_received(a.clone(), 100, key, 16_384, ticket);
        hasher.submit_received(a.clone(), 16_484, key, 16_384, ticket);
        hasher.submit_received(a.clone(), 40_000, key, 1_000, ticket);
        hasher.submit_received(b.clone(), 0, key, 16_384, ticket);
        hasher.flush();
        let got = digests(&mut poll, &hasher, 4);
        let want = |v: &[u8], r: std::ops::Range<usize>| Some(Sha256::digest(&v[r]).into());
        assert_eq!(got[0], want(&a, 100..16_484));
        assert_eq!(got[1], want(&a, 16_484..32_868));
        assert_eq!(got[2], want(&a, 40_000..41_000));
        assert_eq!(got[3], want(&b, 0..16_384));
        drop(hasher);
        assert_eq!(
            Arc::strong_count(&a),
            1,
            "the worker lets go of the buffers"
        );
    }
}

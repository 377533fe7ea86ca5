//! Reading length-prefixed frames from a peer that is not trusted.
//!
//! A frame is a 4-byte big-endian payload length and the payload (see [`crate::wire`]). The
//! length is only a claim: [`FrameReader`] checks it against a limit, then lets its buffer grow
//! only as the frame's bytes actually arrive, each step at most doubling what has been received
//! (tokio-util's `LengthDelimitedCodec` reserves the claimed length at once, so a few bytes
//! could make a worker allocate 64 MiB). A frame that has begun to arrive must end within a
//! timeout, so a peer cannot hold a buffer by stalling halfway; a connection with no frame under
//! way may stay idle for ever. After a frame larger than [`RETAINED_CAPACITY`], the buffer is
//! given back rather than kept for the connection's lifetime.
//!
//! Beyond [`INITIAL_CAPACITY`], buffers are anonymous memory mappings of their own rather than
//! heap allocations, so that memory a peer made the worker use goes back to the system when the
//! buffer is dropped. glibc's malloc serves a block from `mmap` only above a threshold that
//! rises (up to 32 MiB) each time such a block is freed, and keeps freed heap memory resident
//! unless it lies at the top of the heap: once a worker has freed one 4 MiB block, every buffer
//! up to that size would come from the heap, and a burst of stalled 1 MiB frames would leave the
//! worker's resident memory high for good.

use std::ops::{Deref, DerefMut};
use std::time::Duration;
use std::{fmt, io};

use memmap2::MmapMut;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

/// The first buffer of a connection, on the heap: a Hello and small frames fit.
pub const INITIAL_CAPACITY: usize = 8 << 10;
/// A buffer that grew beyond this for a large frame is replaced by a small one once that frame
/// has been read. Twice [`crate::wire::FRAME_TARGET_LENGTH`]: the buffer of a lane carrying
/// ordinary frames settles at or below it and is never reallocated.
pub const RETAINED_CAPACITY: usize = 2 * crate::wire::FRAME_TARGET_LENGTH;
/// The size of a frame's length prefix.
pub const LENGTH_PREFIX: usize = 4;
const HEADER: usize = LENGTH_PREFIX;

/// Reading a frame failed; the connection cannot be used any further.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix claims more than this reader accepts.
    #[error("frame of {length} bytes exceeds the limit of {limit}")]
    TooLong {
        /// The claimed payload length.
        length: usize,
        /// The largest payload accepted.
        limit: usize,
    },
    /// The peer closed the connection in the middle of a frame.
    #[error("connection closed {received} bytes into a frame of {expected}")]
    Truncated {
        /// Bytes of the frame received, its length prefix included.
        received: usize,
        /// Bytes the frame has, its length prefix included (4 while the prefix is incomplete).
        expected: usize,
    },
    /// A frame began to arrive but did not end within the timeout.
    #[error("frame not complete within {timeout:?}: {received} of {expected} bytes received")]
    Stalled {
        /// The frame timeout.
        timeout: Duration,
        /// Bytes of the frame received, its length prefix included.
        received: usize,
        /// Bytes the frame has, its length prefix included (4 while the prefix is incomplete).
        expected: usize,
    },
    /// Reading the socket, or mapping memory for a larger buffer, failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A fixed-size buffer: a small heap block, or a mapping of its own (see the module
/// documentation). Both start zeroed, so reads go straight into it.
enum Storage {
    Heap(Box<[u8]>),
    Mapped(MmapMut),
}

impl Storage {
    fn new(capacity: usize) -> io::Result<Storage> {
        if capacity <= INITIAL_CAPACITY {
            Ok(Storage::Heap(vec![0; capacity].into_boxed_slice()))
        } else {
            MmapMut::map_anon(capacity).map(Storage::Mapped)
        }
    }
}

impl Deref for Storage {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Storage::Heap(bytes) => bytes,
            Storage::Mapped(map) => map,
        }
    }
}

impl DerefMut for Storage {
    fn deref_mut(&mut self) -> &mut [u8] {
        match self {
            Storage::Heap(bytes) => bytes,
            Storage::Mapped(map) => map,
        }
    }
}

/// Reads frames from `R` into one reusable buffer; see the module documentation.
///
/// [`FrameReader::next`] is cancel-safe: dropping its future loses no bytes and keeps the
/// current frame's deadline.
pub struct FrameReader<R> {
    io: R,
    /// Bytes read: `buf[start..end]` are not yet returned.
    buf: Storage,
    start: usize,
    end: usize,
    /// Length (prefix included) of the frame returned last, released by the next call.
    returned: usize,
    limit: usize,
    timeout: Duration,
    /// When the frame under way began to arrive; its deadline is this plus `timeout`.
    started: Option<Instant>,
}

impl<R> fmt::Debug for FrameReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameReader")
            .field("capacity", &self.buf.len())
            .field("pending", &(self.end - self.start))
            .field("limit", &self.limit)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader of frames with payloads up to `limit` bytes, each of which must arrive within
    /// `timeout` of its first byte.
    pub fn new(io: R, limit: usize, timeout: Duration) -> Self {
        FrameReader {
            io,
            buf: Storage::Heap(vec![0; INITIAL_CAPACITY].into_boxed_slice()),
            start: 0,
            end: 0,
            returned: 0,
            limit,
            timeout,
            started: None,
        }
    }

    /// Changes the largest payload accepted from the next frame on (a connection accepts
    /// larger frames once its Hello has been checked).
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
    }

    /// The buffer's capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// The next frame's payload; `None` once the peer has closed the connection between
    /// frames. The payload is valid until the next call.
    pub async fn next(&mut self) -> Result<Option<&[u8]>, FrameError> {
        self.release();
        loop {
            let available = self.end - self.start;
            let expected = match self.buf[self.start..self.end].get(..HEADER) {
                Some(&[a, b, c, d]) => {
                    let length = u32::from_be_bytes([a, b, c, d]) as usize;
                    if length > self.limit {
                        return Err(FrameError::TooLong { length, limit: self.limit });
                    }
                    HEADER + length
                }
                _ => HEADER,
            };
            if available >= expected {
                self.started = None;
                self.returned = expected;
                return Ok(Some(&self.buf[self.start + HEADER..self.start + expected]));
            }
            self.make_room(expected)?;
            // Only a frame under way has a deadline: an idle connection is not a stalled one.
            let deadline = (available > 0).then(|| *self.started.get_or_insert_with(Instant::now) + self.timeout);
            let read = self.io.read(&mut self.buf[self.end..]);
            let read = match deadline {
                None => read.await?,
                Some(deadline) => match tokio::time::timeout_at(deadline, read).await {
                    Ok(read) => read?,
                    Err(_) => return Err(FrameError::Stalled { timeout: self.timeout, received: available, expected }),
                },
            };
            if read == 0 {
                return match available {
                    0 => Ok(None),
                    received => Err(FrameError::Truncated { received, expected }),
                };
            }
            self.end += read;
        }
    }

    /// Forgets the frame returned last, and gives back a buffer a large frame made grow.
    fn release(&mut self) {
        self.start += std::mem::take(&mut self.returned);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        let pending = self.end - self.start;
        if self.buf.len() > RETAINED_CAPACITY && pending <= INITIAL_CAPACITY {
            let mut small = vec![0; INITIAL_CAPACITY].into_boxed_slice();
            small[..pending].copy_from_slice(&self.buf[self.start..self.end]);
            self.buf = Storage::Heap(small);
            self.start = 0;
            self.end = pending;
        }
    }

    /// Makes room to read more of a frame of `expected` bytes starting at `start`: moves the
    /// frame to the front when it cannot end where it is, and replaces a full buffer by one at
    /// most twice what has been received.
    fn make_room(&mut self, expected: usize) -> io::Result<()> {
        if self.start > 0 && self.start + expected > self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end < self.buf.len() {
            return Ok(());
        }
        // `start` is 0 here: the buffer holds the frame's first `end` bytes and nothing else.
        // Up to the retained size, capacities are powers of two so that frames of similar sizes
        // do not each reallocate; a larger frame gets no room past its end, so nothing is left
        // in its buffer when it has been read and the buffer can be dropped.
        let target = if expected <= RETAINED_CAPACITY { expected.next_power_of_two() } else { expected };
        let mut bigger = Storage::new((2 * self.end).min(target).max(INITIAL_CAPACITY))?;
        bigger[..self.end].copy_from_slice(&self.buf[..self.end]);
        self.buf = bigger;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use tokio::io::{AsyncWriteExt, ReadBuf};

    use super::*;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut bytes = (payload.len() as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(payload);
        bytes
    }

    /// Hands out `data` at most `chunk` bytes per read, checking every read's room against what
    /// it has handed out so far.
    struct Trickle {
        data: Vec<u8>,
        at: usize,
        chunk: usize,
        /// The most room any read was given beyond the bytes already read: a buffer grows to at
        /// most twice what has arrived.
        worst_excess: usize,
    }

    impl AsyncRead for Trickle {
        fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            let at = self.at;
            let excess = buf.remaining().saturating_sub(at.max(INITIAL_CAPACITY));
            self.worst_excess = self.worst_excess.max(excess);
            let n = self.chunk.min(self.data.len() - at).min(buf.remaining());
            buf.put_slice(&self.data[at..at + n]);
            self.at += n;
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn frames_are_returned_whole_however_they_arrive() {
        let payloads: Vec<Vec<u8>> = (0..200usize).map(|i| vec![i as u8; i * 97 % 3000]).collect();
        let data: Vec<u8> = payloads.iter().flat_map(|p| frame(p)).collect();
        for chunk in [1, 3, 1000, 1 << 20] {
            let io = Trickle { data: data.clone(), at: 0, chunk, worst_excess: 0 };
            let mut reader = FrameReader::new(io, 1 << 20, Duration::from_secs(1));
            for payload in &payloads {
                assert_eq!(reader.next().await.unwrap(), Some(payload.as_slice()), "chunks of {chunk}");
            }
            assert_eq!(reader.next().await.unwrap(), None);
            assert_eq!(reader.capacity(), INITIAL_CAPACITY, "small frames never grow the buffer");
        }
    }

    #[tokio::test]
    async fn the_buffer_grows_only_as_bytes_arrive_and_shrinks_after_a_large_frame() {
        // A 6 MiB frame in 64 KiB reads, then a small one.
        let big = vec![7u8; 6 << 20];
        let mut data = frame(&big);
        data.extend(frame(b"after"));
        let io = Trickle { data, at: 0, chunk: 64 << 10, worst_excess: 0 };
        let mut reader = FrameReader::new(io, 64 << 20, Duration::from_secs(1));
        assert_eq!(reader.next().await.unwrap().map(<[u8]>::len), Some(big.len()));
        assert_eq!(reader.io.worst_excess, 0, "a read was given more room than had arrived");
        assert_eq!(reader.next().await.unwrap(), Some(&b"after"[..]));
        assert_eq!(reader.capacity(), INITIAL_CAPACITY);
    }

    #[tokio::test]
    async fn a_huge_claim_with_a_few_bytes_costs_a_few_bytes() {
        let mut data = ((60u32 << 20).to_be_bytes()).to_vec();
        data.extend(vec![1u8; 4000]);
        let io = Trickle { data, at: 0, chunk: 1 << 20, worst_excess: 0 };
        let mut reader = FrameReader::new(io, 64 << 20, Duration::from_secs(1));
        let err = reader.next().await.unwrap_err();
        assert!(
            matches!(err, FrameError::Truncated { received: 4004, expected } if expected == 4 + (60 << 20)),
            "{err}"
        );
        assert_eq!(reader.capacity(), INITIAL_CAPACITY);
    }

    #[tokio::test]
    async fn a_claim_over_the_limit_is_refused_before_its_bytes_are_read() {
        let mut data = 65_537u32.to_be_bytes().to_vec();
        data.extend(vec![0u8; 100]);
        let io = Trickle { data, at: 0, chunk: 1 << 20, worst_excess: 0 };
        let mut reader = FrameReader::new(io, 65_536, Duration::from_secs(1));
        assert!(matches!(reader.next().await, Err(FrameError::TooLong { length: 65_537, limit: 65_536 })));
        assert_eq!(reader.io.at, 104, "one read");
        // The limit is the caller's to raise.
        let mut data = frame(&[1; 100]);
        data.extend(frame(&[2; 70_000]));
        let mut reader =
            FrameReader::new(Trickle { data, at: 0, chunk: 10, worst_excess: 0 }, 65_536, Duration::from_secs(1));
        assert_eq!(reader.next().await.unwrap(), Some(&[1u8; 100][..]));
        reader.set_limit(1 << 20);
        assert_eq!(reader.next().await.unwrap().map(<[u8]>::len), Some(70_000));
    }

    #[tokio::test(start_paused = true)]
    async fn a_frame_that_stops_arriving_times_out_but_an_idle_connection_does_not() {
        let (mut peer, io) = tokio::io::duplex(1 << 16);
        let mut reader = FrameReader::new(io, 1 << 20, Duration::from_secs(30));
        // Idle for an hour, then a whole frame.
        let sender = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            peer.write_all(&frame(b"late")).await.unwrap();
            // Half a frame, then nothing.
            peer.write_all(&frame(&[0; 1000])[..600]).await.unwrap();
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(peer);
        });
        let began = Instant::now();
        assert_eq!(reader.next().await.unwrap(), Some(&b"late"[..]));
        assert!(began.elapsed() >= Duration::from_secs(3600));
        let began = Instant::now();
        let err = reader.next().await.unwrap_err();
        assert!(matches!(err, FrameError::Stalled { received: 600, expected: 1004, .. }), "{err}");
        assert_eq!(began.elapsed(), Duration::from_secs(30));
        sender.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_survives_a_cancelled_read() {
        let (mut peer, io) = tokio::io::duplex(1 << 16);
        let mut reader = FrameReader::new(io, 1 << 20, Duration::from_secs(30));
        peer.write_all(&frame(&[0; 1000])[..10]).await.unwrap();
        let began = Instant::now();
        // The reader is polled in 10 s slices, as a select loop would.
        let err = loop {
            if let Ok(result) = tokio::time::timeout(Duration::from_secs(10), reader.next()).await {
                break result.unwrap_err();
            }
        };
        assert!(matches!(err, FrameError::Stalled { .. }), "{err}");
        assert_eq!(began.elapsed(), Duration::from_secs(30));
    }
}

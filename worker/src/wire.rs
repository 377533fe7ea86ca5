//! The wire format between workers: length-delimited frames of MessagePack.
//!
//! Every frame is a 4-byte big-endian payload length (at most [`MAX_FRAME_LENGTH`], and at most
//! [`MAX_HELLO_LENGTH`] for a connection's first frame and its reply; read by
//! [`crate::framing::FrameReader`]) followed by a MessagePack payload `[kind, body]`:
//!
//! | kind | body | sent by |
//! |---|---|---|
//! | 0 Hello | `[topology_id, worker, component, fingerprint, version]` | the connecting worker, first |
//! | 1 Batches | `[batch, ...]` | the connecting worker |
//! | 2 Bye | `nil`: every executor feeding this connection has stopped; its last frame | the connecting worker |
//! | 3 Reject | `[code, message]`: why a Hello was refused | the accepting worker |
//!
//! A batch is `[task, [tuple, ...], [control, ...]]` and a tuple `[src_task, stream, [value, ...],
//! [root, edge, root, edge, ...]]`, where `stream` is the index of the stream among the source
//! component's declared streams. Values use MessagePack's own types: nil, bool, uint (`U64`),
//! int (`I64`: a non-negative one with an explicit signed marker, `0xd0`–`0xd3`, so it reads
//! back as an `I64`, not a `U64`), float 64, str, bin, array (`List`) and map (`Map`), nested at
//! most [`MAX_VALUE_DEPTH`] levels. Control messages are `[kind, fields...]` (see [`Control`]'s
//! encoding below). A 1-word untracked tuple takes 6 bytes plus the word; a tracked one 24 plus
//! the word.
//!
//! Decoding trusts nothing read from the network: every length only bounds a loop, no
//! allocation is sized beyond what the frame's remaining bytes could fill (each element takes at
//! least a byte), and values nested deeper than [`MAX_VALUE_DEPTH`] are refused before they are
//! descended into, so a hostile frame can neither exhaust memory nor the stack.
//!
//! The receiver rebuilds each [`Tuple`] with the interned [`StreamMeta`] of its source stream from
//! a [`StreamTable`], so a tuple from another worker is indistinguishable from a local one.

use std::cell::Cell;
use std::hash::Hasher;
use std::sync::Arc;
use std::{fmt, io, mem};

use bytes::{BufMut, BytesMut};
use rmp::encode::ValueWriteError;
use rustc_hash::FxHasher;
use serde::de::{self, DeserializeSeed, IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use squall_topology::{AckerMessage, Control, SpoutNotice, StreamMeta, TaskId, TaskLayout, Topology, Tuple, Value};
use tokio_util::codec::LengthDelimitedCodec;

use crate::inbox::Batch;

mod batches;

use batches::Reader;

/// The version of this format; a peer speaking another one is rejected at its Hello.
pub const WIRE_VERSION: u32 = 2;
/// The largest payload a frame may have. Larger frames are refused by the reader.
pub const MAX_FRAME_LENGTH: usize = 64 << 20;
/// The largest payload of a connection's first frame, and of a reply to it: a peer whose Hello
/// has not been checked cannot make a worker hold more than this.
pub const MAX_HELLO_LENGTH: usize = 64 << 10;
/// Batch frames are closed once their payload reaches this, so a reader decodes and delivers
/// in steps instead of holding one huge frame.
pub const FRAME_TARGET_LENGTH: usize = 256 << 10;
/// The deepest nesting of lists and maps a value may have to cross the wire: a list of scalars
/// is 1 level. The encoder drops (and counts) a tuple with a deeper value rather than send a
/// frame the receiver would refuse; the decoder refuses such a frame.
pub const MAX_VALUE_DEPTH: usize = 64;

/// The arrays around a value in a batch frame: frame, batches, batch, tuples, tuple, values.
const FRAME_LEVELS: usize = 6;

const KIND_HELLO: u8 = 0;
const KIND_BATCHES: u8 = 1;
const KIND_BYE: u8 = 2;
const KIND_REJECT: u8 = 3;

/// MessagePack markers written by hand around the batches of a frame (the count of batches is
/// only known once the frame is closed, so it is a fixed-width array32 header patched then).
const FIXARRAY_2: u8 = 0x92;
const ARRAY32: u8 = 0xdd;

/// Never trust a length read from the network for a pre-allocation: a garbage header could
/// claim billions of elements. Besides this cap, a frame's pre-allocations together never
/// exceed one element per byte of the frame (see `Budget`).
const MAX_PREALLOCATION: usize = 4096;

/// A codec for this framing: 4-byte big-endian lengths, frames up to [`MAX_FRAME_LENGTH`].
/// Only for bytes that are trusted (tests): it reserves a frame's claimed length before the
/// bytes arrive. Workers read with [`crate::framing::FrameReader`].
pub fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder().length_field_length(4).max_frame_length(MAX_FRAME_LENGTH).new_codec()
}

/// Encoding or decoding a frame failed.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// A handshake frame (Hello, Bye, Reject) is not of this format.
    #[error("malformed frame: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    /// A value could not be encoded.
    #[error("cannot encode frame: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    /// The payload is not a batches frame of this format, or names an unknown task or stream.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The payload has bytes after the frame.
    #[error("malformed frame: bytes after the end of the frame")]
    TrailingBytes,
    /// A frame kind that is not allowed here.
    #[error("unexpected {0} frame")]
    Unexpected(&'static str),
}

/// The first frame of a connection: who is sending, for which topology and which component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The topology (and its version) the sender runs; a receiver rejects any other.
    pub topology_id: String,
    /// The sender's own address, `host:port`, as other workers reach it.
    pub worker: String,
    /// The component whose tasks on the receiver this connection feeds.
    pub component: String,
    /// [`StreamTable::fingerprint`] of the sender's topology: tasks and streams must agree.
    pub fingerprint: u64,
    /// [`WIRE_VERSION`] of the sender.
    pub version: u32,
}

/// Why a worker refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// Another topology, another version of it, or another wire version.
    WrongTopology,
    /// This worker expects no traffic from that worker for that component.
    UnknownLane,
    /// That worker already said Bye for that component.
    LaneClosed,
    /// The first frame was not a readable Hello.
    BadHello,
}

impl RejectReason {
    fn code(self) -> u8 {
        match self {
            RejectReason::WrongTopology => 1,
            RejectReason::UnknownLane => 2,
            RejectReason::LaneClosed => 3,
            RejectReason::BadHello => 4,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => RejectReason::WrongTopology,
            2 => RejectReason::UnknownLane,
            3 => RejectReason::LaneClosed,
            4 => RejectReason::BadHello,
            _ => return None,
        })
    }

    /// What a refused peer is told: the reason only. What exactly did not match stays in the
    /// refusing worker's log, so probing a worker's port reveals nothing about its topology.
    pub fn public_message(self) -> &'static str {
        match self {
            RejectReason::WrongTopology => "hello refused: wrong topology or version",
            RejectReason::UnknownLane => "hello refused: no such lane",
            RejectReason::LaneClosed => "hello refused: lane closed",
            RejectReason::BadHello => "hello refused: malformed hello",
        }
    }
}

/// The answer to a refused Hello, sent before the connection is closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// Why.
    pub reason: RejectReason,
    /// A message for the refused peer's log; a worker sends [`RejectReason::public_message`].
    pub message: String,
}

/// A decoded frame. Batches are decoded into the caller's vector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The connection's first frame.
    Hello(Hello),
    /// Batches, appended to the vector passed to [`decode_frame`].
    Batches,
    /// The sender has nothing more to send on this connection, ever.
    Bye,
    /// The receiver refused the connection.
    Reject(Reject),
}

/// The streams of a topology by (source task, stream index), so a receiver can give a tuple
/// from the wire the same interned [`StreamMeta`] a local one has.
#[derive(Debug)]
pub struct StreamTable {
    /// The component index of each task; `u32::MAX` for slot 0.
    task_component: Vec<u32>,
    /// Each component's streams, by index; `None` for an undeclared default stream.
    streams: Vec<Vec<Option<&'static StreamMeta>>>,
    fingerprint: u64,
}

impl StreamTable {
    /// The table of `topology` with task ids from `layout` (the topology's layout with its
    /// system components).
    pub fn new(topology: &Topology, layout: &TaskLayout) -> Self {
        let mut task_component = vec![u32::MAX; layout.task_count() + 1];
        let mut streams = Vec::new();
        let mut hasher = FxHasher::default();
        for (index, (id, tasks)) in layout.components().enumerate() {
            hasher.write(id.as_bytes());
            hasher.write_u8(0xff);
            hasher.write_usize(tasks.len());
            for task in tasks {
                if let Some(slot) = task_component.get_mut(*task as usize) {
                    *slot = index as u32;
                }
                hasher.write_u32(*task);
            }
            let declared = topology.component(id).map(|c| c.streams.as_slice()).unwrap_or_default();
            hasher.write_usize(declared.len());
            let metas = declared
                .iter()
                .map(|decl| {
                    let decl = decl.as_ref()?;
                    hasher.write(decl.name.as_bytes());
                    hasher.write_u8(0xff);
                    for field in &decl.fields {
                        hasher.write(field.as_bytes());
                        hasher.write_u8(0xff);
                    }
                    hasher.write_u8(u8::from(decl.direct));
                    let fields: Vec<&str> = decl.fields.iter().map(String::as_str).collect();
                    Some(StreamMeta::intern(id, &decl.name, &fields))
                })
                .collect();
            streams.push(metas);
        }
        StreamTable { task_component, streams, fingerprint: hasher.finish() }
    }

    /// A hash of the components, their tasks and their streams: two workers agree on every
    /// task id and stream index exactly when their fingerprints are equal.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// The stream `stream` of the component of `src_task`.
    pub fn meta(&self, src_task: TaskId, stream: u32) -> Option<&'static StreamMeta> {
        let component = *self.task_component.get(src_task as usize)?;
        *self.streams.get(component as usize)?.get(stream as usize)?
    }

    /// The index of a tuple's stream among its source component's streams; `None` for tuples
    /// that never cross the wire (ticks, and any tuple of an unknown task or stream).
    pub fn stream_index(&self, tuple: &Tuple) -> Option<u32> {
        let component = *self.task_component.get(tuple.source_task() as usize)?;
        let streams = self.streams.get(component as usize)?;
        // A component has a handful of streams: a pointer comparison each beats any map.
        streams.iter().position(|m| m.is_some_and(|m| std::ptr::eq(m, tuple.meta()))).map(|i| i as u32)
    }
}

/// Encodes the frames of one connection's batches into a write buffer: several batches per
/// frame, frames closed at [`FRAME_TARGET_LENGTH`], any batch too large for one frame split.
#[derive(Debug)]
pub struct BatchEncoder {
    table: Arc<StreamTable>,
    /// Stream index of each tuple of the batch being encoded (`u32::MAX`: not sent).
    indices: Vec<u32>,
    /// Offset of the open frame's length prefix in the buffer.
    open: Option<usize>,
    batches: u32,
    max_frame: usize,
    target: usize,
    skipped: u64,
}

impl BatchEncoder {
    /// An encoder for a topology's tuples.
    pub fn new(table: Arc<StreamTable>) -> Self {
        Self::with_limits(table, MAX_FRAME_LENGTH, FRAME_TARGET_LENGTH)
    }

    /// An encoder with other frame sizes (tests).
    pub fn with_limits(table: Arc<StreamTable>, max_frame: usize, target: usize) -> Self {
        BatchEncoder { table, indices: Vec::new(), open: None, batches: 0, max_frame, target, skipped: 0 }
    }

    /// Appends a batch to the open frame (opening one if needed).
    pub fn push(&mut self, buf: &mut BytesMut, batch: &Batch) -> Result<(), WireError> {
        let mut indices = mem::take(&mut self.indices);
        indices.clear();
        indices.extend(batch.tuples.iter().map(|t| match self.table.stream_index(t) {
            Some(index) if t.values().iter().all(|v| nests_within(v, MAX_VALUE_DEPTH)) => index,
            _ => u32::MAX,
        }));
        self.skipped += indices.iter().filter(|i| **i == u32::MAX).count() as u64;
        let result = self.push_slices(buf, batch.task, &batch.tuples, &indices, &batch.control);
        self.indices = indices;
        result
    }

    /// Tuples and control messages dropped since the last call: ticks and unknown streams,
    /// which never cross the wire, single tuples larger than a frame, and tuples with a value
    /// nested deeper than [`MAX_VALUE_DEPTH`].
    pub fn take_skipped(&mut self) -> u64 {
        mem::take(&mut self.skipped)
    }

    /// Closes the open frame, if any: the buffer then holds only whole frames.
    pub fn finish(&mut self, buf: &mut BytesMut) {
        let Some(start) = self.open.take() else { return };
        if self.batches == 0 {
            buf.truncate(start);
            return;
        }
        let payload = (buf.len() - start - 4) as u32;
        buf[start..start + 4].copy_from_slice(&payload.to_be_bytes());
        buf[start + 7..start + 11].copy_from_slice(&self.batches.to_be_bytes());
        self.batches = 0;
    }

    fn push_slices(
        &mut self,
        buf: &mut BytesMut,
        task: TaskId,
        tuples: &[Tuple],
        indices: &[u32],
        control: &[Control],
    ) -> Result<(), WireError> {
        let sendable = indices.iter().filter(|i| **i != u32::MAX).count();
        if sendable == 0 && control.is_empty() {
            return Ok(());
        }
        let start = match self.open {
            Some(start) => start,
            None => {
                let start = buf.len();
                buf.put_u32(0);
                buf.put_u8(FIXARRAY_2);
                buf.put_u8(KIND_BATCHES);
                buf.put_u8(ARRAY32);
                buf.put_u32(0);
                self.open = Some(start);
                start
            }
        };
        let mark = buf.len();
        let wire = WireBatch { task, tuples, indices, sendable, control };
        if let Err(e) = write_batch(buf, &wire) {
            buf.truncate(mark);
            return Err(rmp_serde::encode::Error::from(e).into());
        }
        if buf.len() - start - 4 <= self.max_frame {
            self.batches += 1;
            if buf.len() - start - 4 >= self.target {
                self.finish(buf);
            }
            return Ok(());
        }
        // Too large for the open frame: close it and retry alone in a new one, or split.
        buf.truncate(mark);
        if self.batches > 0 {
            self.finish(buf);
            return self.push_slices(buf, task, tuples, indices, control);
        }
        buf.truncate(start);
        self.open = None;
        if tuples.len() >= 2 {
            let mid = tuples.len() / 2;
            self.push_slices(buf, task, &tuples[..mid], &indices[..mid], &[])?;
            self.push_slices(buf, task, &tuples[mid..], &indices[mid..], control)
        } else if !tuples.is_empty() && !control.is_empty() {
            self.push_slices(buf, task, tuples, indices, &[])?;
            self.push_slices(buf, task, &[], &[], control)
        } else if control.len() >= 2 {
            let mid = control.len() / 2;
            self.push_slices(buf, task, &[], &[], &control[..mid])?;
            self.push_slices(buf, task, &[], &[], &control[mid..])
        } else {
            // One tuple larger than a frame can never be sent; acking fails its tree.
            self.skipped += (sendable + control.len()) as u64;
            Ok(())
        }
    }
}

/// Appends a Hello frame.
pub fn encode_hello(buf: &mut BytesMut, hello: &Hello) -> Result<(), WireError> {
    encode_frame(buf, KIND_HELLO, hello)
}

/// Appends a Bye frame.
pub fn encode_bye(buf: &mut BytesMut) -> Result<(), WireError> {
    encode_frame(buf, KIND_BYE, &())
}

/// Appends a Reject frame.
pub fn encode_reject(buf: &mut BytesMut, reject: &Reject) -> Result<(), WireError> {
    encode_frame(buf, KIND_REJECT, &(reject.reason.code(), reject.message.as_str()))
}

fn encode_frame<T: Serialize>(buf: &mut BytesMut, kind: u8, body: &T) -> Result<(), WireError> {
    let start = buf.len();
    buf.put_u32(0);
    if let Err(e) = rmp_serde::encode::write(&mut (&mut *buf).writer(), &(kind, body)) {
        buf.truncate(start);
        return Err(e.into());
    }
    let payload = (buf.len() - start - 4) as u32;
    buf[start..start + 4].copy_from_slice(&payload.to_be_bytes());
    Ok(())
}

/// Decodes a frame's payload (without its length prefix). Batches are appended to `out`, each
/// tuple buffer coming from `buffer(task, size_hint)`, which returns `None` for a task this
/// connection may not feed (then the whole frame is refused). On error, `out` may hold part of
/// the frame's batches; drop them.
pub fn decode_frame(
    payload: &[u8],
    table: &StreamTable,
    out: &mut Vec<Batch>,
    buffer: &mut dyn FnMut(TaskId, usize) -> Option<Vec<Tuple>>,
) -> Result<Frame, WireError> {
    // Batches are read by hand (`batches`); the rare handshake frames through serde.
    let mut reader = Reader::new(payload);
    let is_batches = reader.array_len("a frame [kind, body]").is_ok_and(|len| len == 2)
        && reader.uint::<u8>("a frame's kind").is_ok_and(|kind| kind == KIND_BATCHES);
    if !is_batches {
        return decode(payload);
    }
    let budget = Budget(Cell::new(payload.len()));
    reader.batches(BatchContext { table, out, buffer }, &budget)?;
    if !reader.is_empty() {
        return Err(WireError::TrailingBytes);
    }
    Ok(Frame::Batches)
}

/// Decodes a frame that cannot carry batches: a Hello, Bye or Reject.
pub fn decode_control_frame(payload: &[u8]) -> Result<Frame, WireError> {
    decode(payload)
}

/// Decodes a handshake frame through serde; a batches frame is read past, unread.
fn decode(payload: &[u8]) -> Result<Frame, WireError> {
    // Borrowing from the payload, strings are read in place (a copying reader is ~20% slower).
    let mut de = rmp_serde::Deserializer::from_read_ref(payload);
    // Values refuse to nest deeper than `MAX_VALUE_DEPTH` with a clear error; this also bounds
    // what is skipped unread (extra fields, trailing bytes, batches in a handshake frame). It
    // lets in one level more than a value may have, which the value refuses with its message
    // (rmp-serde's limit `n` admits `n - 1` levels).
    de.set_max_depth(FRAME_LEVELS + MAX_VALUE_DEPTH + 2);
    let frame = FrameSeed.deserialize(&mut de)?;
    // That reader does not tell where it stopped: a frame is whole when nothing more can be read.
    match IgnoredAny::deserialize(&mut de) {
        Err(rmp_serde::decode::Error::InvalidMarkerRead(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
        _ => return Err(WireError::TrailingBytes),
    }
    frame.ok_or(WireError::Unexpected("batches"))
}

// ---- Encoding ----
//
// Batches are written by hand rather than through serde: serde has no way to say "this
// non-negative integer is signed", which an `I64` needs to read back as one. Each marker is a
// direct write into the frame buffer (an `io::Write` call per marker through `rmp` cost a
// sending spout a fifth of its time); the bytes are `rmp`'s, the smallest form of each length
// and integer, which a test checks.

struct WireBatch<'a> {
    task: TaskId,
    tuples: &'a [Tuple],
    indices: &'a [u32],
    sendable: usize,
    control: &'a [Control],
}

/// Where batches are written: small pieces gather on the stack and reach the frame buffer
/// together, flushed when full and on drop. A `BytesMut` write per marker (a capacity check
/// and a call each) cost a sending spout a fifth of its time.
struct Out<'a> {
    buf: &'a mut BytesMut,
    pending: [u8; PENDING],
    len: usize,
}

/// Bytes gathered before they are written to the frame buffer: a tuple of a few short values.
const PENDING: usize = 64;

impl<'a> Out<'a> {
    fn new(buf: &'a mut BytesMut) -> Self {
        Out { buf, pending: [0; PENDING], len: 0 }
    }

    #[inline]
    fn put<const N: usize>(&mut self, bytes: [u8; N]) {
        if self.len + N > PENDING {
            self.flush();
        }
        self.pending[self.len..self.len + N].copy_from_slice(&bytes);
        self.len += N;
    }

    fn put_u8(&mut self, v: u8) {
        self.put([v]);
    }

    /// A marker byte, then its payload (a number's big-endian bytes).
    fn put_marked<const N: usize>(&mut self, marker: u8, payload: [u8; N]) {
        self.put([marker]);
        self.put(payload);
    }

    fn put_slice(&mut self, bytes: &[u8]) {
        if bytes.len() <= PENDING - self.len {
            self.pending[self.len..self.len + bytes.len()].copy_from_slice(bytes);
            self.len += bytes.len();
        } else {
            self.flush();
            self.buf.extend_from_slice(bytes);
        }
    }

    fn flush(&mut self) {
        self.buf.extend_from_slice(&self.pending[..self.len]);
        self.len = 0;
    }
}

impl Drop for Out<'_> {
    fn drop(&mut self) {
        self.flush();
    }
}

type Written = Result<(), ValueWriteError>;

/// A length as MessagePack writes it (at most `u32::MAX`, far beyond any frame).
fn len32(len: usize) -> Result<u32, ValueWriteError> {
    u32::try_from(len).map_err(|_| ValueWriteError::InvalidDataWrite(io::Error::other("too many elements")))
}

/// A length with its marker: `fix | len` below `fix_max`, else `m16` with a u16 or `m16 + 1`
/// with a u32 (arrays and maps).
fn put_len(out: &mut Out<'_>, len: usize, fix: u8, fix_max: u32, m16: u8) -> Written {
    let len = len32(len)?;
    if len < fix_max {
        out.put_u8(fix | len as u8);
    } else {
        put_sized(out, len, m16 - 1, false);
    }
    Ok(())
}

/// A length in its smallest sized form: `m8` with a u8 (unless `m8` has no such form), `m8 + 1`
/// with a u16, `m8 + 2` with a u32.
fn put_sized(out: &mut Out<'_>, len: u32, m8: u8, has_u8: bool) {
    match (u8::try_from(len), u16::try_from(len)) {
        (Ok(len), _) if has_u8 => out.put_marked(m8, [len]),
        (_, Ok(len)) => out.put_marked(m8 + 1, len.to_be_bytes()),
        _ => out.put_marked(m8 + 2, len.to_be_bytes()),
    }
}

fn put_array_len(out: &mut Out<'_>, len: usize) -> Written {
    put_len(out, len, 0x90, 16, 0xdc)
}

fn put_uint(out: &mut Out<'_>, v: u64) {
    if v < 128 {
        out.put_u8(v as u8);
    } else if let Ok(v) = u8::try_from(v) {
        out.put_marked(0xcc, [v]);
    } else if let Ok(v) = u16::try_from(v) {
        out.put_marked(0xcd, v.to_be_bytes());
    } else if let Ok(v) = u32::try_from(v) {
        out.put_marked(0xce, v.to_be_bytes());
    } else {
        out.put_marked(0xcf, v.to_be_bytes());
    }
}

/// `[task, [tuple, ...], [control, ...]]`, the tuples whose index is not `u32::MAX`.
fn write_batch(buf: &mut BytesMut, batch: &WireBatch<'_>) -> Written {
    let out = &mut Out::new(buf);
    put_array_len(out, 3)?;
    put_uint(out, batch.task.into());
    put_array_len(out, batch.sendable)?;
    for (tuple, stream) in batch.tuples.iter().zip(batch.indices) {
        if *stream != u32::MAX {
            write_tuple(out, tuple, *stream)?;
        }
    }
    put_array_len(out, batch.control.len())?;
    for control in batch.control {
        write_control(out, control)?;
    }
    Ok(())
}

/// `[src_task, stream, [value, ...], [root, edge, ...]]`.
fn write_tuple(out: &mut Out<'_>, tuple: &Tuple, stream: u32) -> Written {
    put_array_len(out, 4)?;
    put_uint(out, tuple.source_task().into());
    put_uint(out, stream.into());
    put_array_len(out, tuple.values().len())?;
    for value in tuple.values() {
        write_value(out, value)?;
    }
    let anchors = tuple.message_id().anchors();
    put_array_len(out, anchors.len() * 2)?;
    for (root, edge) in anchors {
        put_uint(out, *root);
        put_uint(out, *edge);
    }
    Ok(())
}

/// A value as MessagePack's own types; lists and maps recursively (the caller checked the
/// depth with [`nests_within`]).
fn write_value(out: &mut Out<'_>, value: &Value) -> Written {
    match value {
        Value::Null => out.put_u8(0xc0),
        Value::Bool(v) => out.put_u8(if *v { 0xc3 } else { 0xc2 }),
        Value::I64(v) => write_signed(out, *v),
        Value::U64(v) => put_uint(out, *v),
        Value::F64(v) => out.put_marked(0xcb, v.to_be_bytes()),
        Value::Str(v) => {
            // fixstr below 32 bytes, then str8, str16, str32.
            if v.len() < 32 {
                out.put_u8(0xa0 | v.len() as u8);
            } else {
                put_sized(out, len32(v.len())?, 0xd9, true);
            }
            out.put_slice(v.as_bytes());
        }
        Value::Bytes(v) => {
            // bin8, bin16, bin32.
            put_sized(out, len32(v.len())?, 0xc4, true);
            out.put_slice(v);
        }
        Value::List(items) => {
            put_array_len(out, items.len())?;
            return items.iter().try_for_each(|item| write_value(out, item));
        }
        Value::Map(map) => {
            put_len(out, map.len(), 0x80, 16, 0xde)?;
            return map.iter().try_for_each(|(key, value)| {
                write_value(out, key)?;
                write_value(out, value)
            });
        }
    }
    Ok(())
}

/// A signed integer with a signed marker whatever its value: MessagePack's compact form of a
/// non-negative integer would read back as unsigned. A negative one takes its smallest form.
fn write_signed(out: &mut Out<'_>, v: i64) {
    if (-32..0).contains(&v) {
        out.put_u8(v as i8 as u8);
    } else if let Ok(v) = i8::try_from(v) {
        out.put_marked(0xd0, v.to_be_bytes());
    } else if let Ok(v) = i16::try_from(v) {
        out.put_marked(0xd1, v.to_be_bytes());
    } else if let Ok(v) = i32::try_from(v) {
        out.put_marked(0xd2, v.to_be_bytes());
    } else {
        out.put_marked(0xd3, v.to_be_bytes());
    }
}

/// Whether `value` nests lists and maps at most `levels` deep. Looks no deeper than that, so it
/// is cheap for scalars and safe for any value.
fn nests_within(value: &Value, levels: usize) -> bool {
    match value {
        Value::List(items) => levels > 0 && items.iter().all(|item| nests_within(item, levels - 1)),
        Value::Map(map) => {
            levels > 0 && map.iter().all(|(k, v)| nests_within(k, levels - 1) && nests_within(v, levels - 1))
        }
        _ => true,
    }
}

/// `[0, root, value, spout_task]` Init, `[1, root, value]` Ack, `[2, root]` Fail, `[3, root]`
/// ResetTimeout, `[7, root, value, spout_task]` Adopt (to ackers); `[4, root]` Acked, `[5, root]`
/// Failed, `[6, root]` ResetTimeout (to spouts). Enum variants by name would cost more than the message.
fn write_control(out: &mut Out<'_>, control: &Control) -> Written {
    let (kind, fields): (u8, &[u64]) = match *control {
        Control::Acker(AckerMessage::Init { root, value, spout_task }) => (0, &[root, value, spout_task.into()]),
        Control::Acker(AckerMessage::Ack { root, value }) => (1, &[root, value]),
        Control::Acker(AckerMessage::Fail { root }) => (2, &[root]),
        Control::Acker(AckerMessage::ResetTimeout { root }) => (3, &[root]),
        Control::Notice(SpoutNotice::Acked(root)) => (4, &[root]),
        Control::Notice(SpoutNotice::Failed(root)) => (5, &[root]),
        Control::Notice(SpoutNotice::ResetTimeout(root)) => (6, &[root]),
        Control::Acker(AckerMessage::Adopt { root, value, spout_task }) => (7, &[root, value, spout_task.into()]),
    };
    put_array_len(out, fields.len() + 1)?;
    put_uint(out, kind.into());
    fields.iter().for_each(|field| put_uint(out, *field));
    Ok(())
}

// ---- Decoding ----

struct BatchContext<'a, 'b> {
    table: &'a StreamTable,
    out: &'a mut Vec<Batch>,
    buffer: &'a mut (dyn FnMut(TaskId, usize) -> Option<Vec<Tuple>> + 'b),
}

/// How many elements a frame's decoding may still pre-allocate: it starts at the frame's length
/// in bytes, as every element takes at least one byte, and each pre-allocation takes its share.
/// An honest frame never runs out; headers claiming more than the frame holds get less.
struct Budget(Cell<usize>);

impl Budget {
    /// The capacity to pre-allocate for `hint` elements (a length read from the frame).
    fn take(&self, hint: usize) -> usize {
        let n = hint.min(self.0.get()).min(MAX_PREALLOCATION);
        self.0.set(self.0.get() - n);
        n
    }
}

/// `Some(frame)`, or `None` for batches.
struct FrameSeed;

impl<'de> DeserializeSeed<'de> for FrameSeed {
    type Value = Option<Frame>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for FrameSeed {
    type Value = Option<Frame>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a frame [kind, body]")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let kind: u8 = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(0, &self))?;
        let missing = || de::Error::custom("frame has no body");
        let frame = match kind {
            KIND_HELLO => Some(Frame::Hello(seq.next_element()?.ok_or_else(missing)?)),
            // Read by `batches::Reader`; here it is skipped, unread, and refused.
            KIND_BATCHES => {
                seq.next_element::<IgnoredAny>()?.ok_or_else(missing)?;
                None
            }
            KIND_BYE => {
                seq.next_element::<()>()?.ok_or_else(missing)?;
                Some(Frame::Bye)
            }
            KIND_REJECT => {
                let (code, message): (u8, String) = seq.next_element()?.ok_or_else(missing)?;
                let reason = RejectReason::from_code(code)
                    .ok_or_else(|| de::Error::custom(format_args!("unknown reject code {code}")))?;
                Some(Frame::Reject(Reject { reason, message }))
            }
            other => return Err(de::Error::custom(format_args!("unknown frame kind {other}"))),
        };
        Ok(frame)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use squall_topology::value::{from_value, to_value};
    use squall_topology::{MessageId, Str, TopologyBuilder, Values};
    use tokio_util::codec::Decoder;

    use super::*;
    use crate::test_components::{Sink, Words};

    /// Tasks: sink 1-2, words 3-4, acker 5.
    fn table() -> Arc<StreamTable> {
        let mut b = TopologyBuilder::new();
        b.spout("words", Words, 2);
        b.bolt("sink", Sink, 2).shuffle_grouping("words");
        let topology = b.build().unwrap();
        let layout = topology.layout().with_system(&[("__acker", 1)]);
        Arc::new(StreamTable::new(&topology, &layout))
    }

    fn word(table: &StreamTable, src: TaskId, w: &str, id: MessageId) -> Tuple {
        let meta = table.meta(src, 0).unwrap();
        let mut values = Values::new();
        values.push(Value::Str(Str::new(w)));
        Tuple::new(meta, src, values, id)
    }

    fn encode(table: &Arc<StreamTable>, batches: &[Batch]) -> BytesMut {
        let mut encoder = BatchEncoder::new(table.clone());
        let mut buf = BytesMut::new();
        for batch in batches {
            encoder.push(&mut buf, batch).unwrap();
        }
        encoder.finish(&mut buf);
        buf
    }

    /// A frame of one batch written by `write`.
    fn batch_frame(write: impl FnOnce(&mut BytesMut) -> Written) -> BytesMut {
        let mut buf = BytesMut::new();
        buf.put_u32(0);
        buf.put_u8(FIXARRAY_2);
        buf.put_u8(KIND_BATCHES);
        buf.put_u8(0x91);
        write(&mut buf).unwrap();
        let payload = (buf.len() - 4) as u32;
        buf[..4].copy_from_slice(&payload.to_be_bytes());
        buf
    }

    /// A frame of one batch for task 1 with one tuple of task 3 (`words`, stream 0), whose one
    /// value is `raw` MessagePack.
    fn raw_value_frame(raw: &[u8]) -> BytesMut {
        batch_frame(|out| {
            out.extend_from_slice(&[0x93, 0x01, 0x91, 0x94, 0x03, 0x00, 0x91]);
            out.extend_from_slice(raw);
            out.extend_from_slice(&[0x90, 0x90]);
            Ok(())
        })
    }

    /// A tuple of `words` (one field) from task 3 with this value.
    fn one_value(table: &StreamTable, value: Value) -> Tuple {
        let mut values = Values::new();
        values.push(value);
        Tuple::new(table.meta(3, 0).unwrap(), 3, values, MessageId::default())
    }

    /// A value nested `levels` deep: `[[[...[1]...]]]`.
    fn nested(levels: usize) -> Value {
        (0..levels).fold(Value::U64(1), |inner, _| Value::List(vec![inner].into()))
    }

    /// Decodes every frame of `buf` through the codec, as a reader does.
    fn decode_all(table: &StreamTable, mut buf: BytesMut) -> Result<Vec<Batch>, WireError> {
        let mut reader = codec();
        let mut out = Vec::new();
        while let Some(frame) = reader.decode(&mut buf).unwrap() {
            let decoded =
                decode_frame(&frame, table, &mut out, &mut |task, hint| (task <= 2).then(|| Vec::with_capacity(hint)))?;
            assert_eq!(decoded, Frame::Batches);
        }
        assert!(buf.is_empty(), "a partial frame is left");
        Ok(out)
    }

    #[test]
    fn tuples_and_control_round_trip_with_their_stream_and_types() {
        let table = table();
        let all = table.meta(4, 1).unwrap();
        let long = "a string longer than twenty-three bytes, shared";
        let mut values = Values::new();
        values.extend([
            Value::Null,
            Value::Bool(true),
            Value::I64(5),
            Value::I64(-70_000),
            Value::U64(u64::MAX),
            Value::F64(1.5),
            Value::Str(Str::new(long)),
        ]);
        let many = MessageId::from_anchors([(1, 2), (3, 4), (5, 6)]);
        let mut bytes_values = values.clone();
        bytes_values[0] = Value::Bytes(vec![0u8, 1, 255].into());
        let control = vec![
            Control::Acker(AckerMessage::Init { root: 1, value: u64::MAX, spout_task: 3 }),
            Control::Acker(AckerMessage::Ack { root: 2, value: 3 }),
            Control::Acker(AckerMessage::Fail { root: 4 }),
            Control::Acker(AckerMessage::ResetTimeout { root: 5 }),
            Control::Notice(SpoutNotice::Acked(6)),
            Control::Notice(SpoutNotice::Failed(7)),
            Control::Notice(SpoutNotice::ResetTimeout(8)),
            Control::Acker(AckerMessage::Adopt { root: 9, value: 10, spout_task: 11 }),
        ];
        let batches = vec![
            Batch {
                task: 1,
                tuples: vec![
                    word(&table, 3, "fox", MessageId::default()),
                    Tuple::new(all, 4, values.clone(), MessageId::from_anchors([(9, 10)])),
                    Tuple::new(all, 4, bytes_values.clone(), many.clone()),
                ],
                control: Vec::new(),
            },
            Batch { task: 2, tuples: Vec::new(), control: control.clone() },
        ];
        let decoded = decode_all(&table, encode(&table, &batches)).unwrap();
        assert_eq!(decoded.len(), 2);
        for (sent, got) in batches.iter().zip(&decoded) {
            assert_eq!(sent.task, got.task);
            assert_eq!(sent.control, got.control);
            assert_eq!(sent.tuples.len(), got.tuples.len());
            for (a, b) in sent.tuples.iter().zip(&got.tuples) {
                assert!(std::ptr::eq(a.meta(), b.meta()), "the same interned stream");
                assert_eq!(a.source_task(), b.source_task());
                assert_eq!(a.values(), b.values());
                assert_eq!(a.message_id(), b.message_id());
            }
        }
        // Types survive: an I64 stays an I64, a U64 a U64.
        assert!(matches!(decoded[0].tuples[1].values()[2], Value::I64(5)));
        assert_eq!(decoded[0].tuples[1].get_by_field("c"), Some(&Value::I64(5)));
        assert_eq!(decoded[0].tuples[0].source_component(), "words");
    }

    #[test]
    fn a_one_word_tuple_is_a_few_bytes() {
        let table = table();
        let frame_overhead = encode(&table, &[Batch { task: 1, tuples: Vec::new(), control: vec![] }]).len();
        assert_eq!(frame_overhead, 0, "an empty batch is not sent");
        let one = |id: MessageId| {
            let batch = Batch { task: 1, tuples: vec![word(&table, 3, "fox", id)], control: Vec::new() };
            encode(&table, &[batch]).len()
        };
        let two = |id: MessageId| {
            let tuples = vec![word(&table, 3, "fox", id.clone()), word(&table, 3, "fox", id)];
            encode(&table, &[Batch { task: 1, tuples, control: Vec::new() }]).len()
        };
        // Per tuple: array header, source task, stream, values header, string header + "fox",
        // empty id array.
        assert_eq!(two(MessageId::default()) - one(MessageId::default()), 6 + 3);
        // Tracked: the root and edge ids, 9 bytes each.
        let tracked = MessageId::from_anchors([(u64::MAX - 1, u64::MAX - 2)]);
        assert_eq!(two(tracked.clone()) - one(tracked), 24 + 3);
        // Frame: length, [kind, array32 of batches], batch [task, tuples, control].
        assert_eq!(one(MessageId::default()), 11 + 3 + 9 + 1);
    }

    #[test]
    fn ticks_never_cross_the_wire() {
        let table = table();
        let mut encoder = BatchEncoder::new(table.clone());
        let mut buf = BytesMut::new();
        let batch = Batch {
            task: 1,
            tuples: vec![Tuple::tick(1), word(&table, 3, "a", MessageId::default())],
            control: vec![],
        };
        encoder.push(&mut buf, &batch).unwrap();
        encoder.finish(&mut buf);
        assert_eq!(encoder.take_skipped(), 1);
        let decoded = decode_all(&table, buf).unwrap();
        assert_eq!(decoded[0].tuples.len(), 1);
        assert!(!decoded[0].tuples[0].is_tick());
    }

    #[test]
    fn frames_split_at_the_target_and_oversized_batches_split() {
        let table = table();
        let tuples: Vec<Tuple> =
            (0..100).map(|i| word(&table, 3, &format!("word{i}"), MessageId::from_anchors([(i, i)]))).collect();
        let batch = Batch { task: 2, tuples, control: vec![Control::Notice(SpoutNotice::Acked(1)); 10] };
        let mut encoder = BatchEncoder::with_limits(table.clone(), 300, 200);
        let mut buf = BytesMut::new();
        for _ in 0..3 {
            encoder.push(&mut buf, &batch).unwrap();
        }
        encoder.finish(&mut buf);
        assert_eq!(encoder.take_skipped(), 0);
        let mut frames = 0;
        let mut probe = buf.clone();
        while let Some(frame) = codec().decode(&mut probe).unwrap() {
            assert!(frame.len() <= 300);
            frames += 1;
        }
        assert!(frames > 10, "{frames} frames");
        let decoded = decode_all(&table, buf).unwrap();
        let words: Vec<&str> = decoded.iter().flat_map(|b| b.tuples.iter().map(|t| t.str(0).unwrap())).collect();
        let expected: Vec<String> = (0..3).flat_map(|_| (0..100).map(|i| format!("word{i}"))).collect();
        assert_eq!(words, expected);
        assert_eq!(decoded.iter().map(|b| b.control.len()).sum::<usize>(), 30);
        assert!(decoded.iter().all(|b| b.task == 2));

        // A single tuple larger than a frame is dropped, not sent, and counted.
        let mut encoder = BatchEncoder::with_limits(table.clone(), 64, 32);
        let mut buf = BytesMut::new();
        let big = word(&table, 3, &"x".repeat(100), MessageId::default());
        let small = word(&table, 3, "ok", MessageId::default());
        encoder.push(&mut buf, &Batch { task: 1, tuples: vec![big, small], control: vec![] }).unwrap();
        encoder.finish(&mut buf);
        assert_eq!(encoder.take_skipped(), 1);
        let decoded = decode_all(&table, buf).unwrap();
        assert_eq!(decoded.len(), 1);
        assert_eq!(decoded[0].tuples[0].str(0), Ok("ok"));
    }

    #[test]
    fn unknown_tasks_streams_and_arity_are_refused() {
        let table = table();
        let batch = |task, tuple| Batch { task, tuples: vec![tuple], control: vec![] };
        // Task 3 is not one this connection feeds (the decoder's callback says so).
        let err = decode_all(&table, encode(&table, &[batch(3, word(&table, 3, "a", MessageId::default()))]));
        assert!(err.unwrap_err().to_string().contains("task 3"));
        // A stream index the source component does not have.
        let bad_stream = |stream: u32| {
            let tuples = [word(&table, 3, "a", MessageId::default())];
            let wire = WireBatch { task: 1, tuples: &tuples, indices: &[stream], sendable: 1, control: &[] };
            decode_all(&table, batch_frame(|out| write_batch(out, &wire)))
        };
        assert!(bad_stream(0).is_ok());
        assert!(
            bad_stream(1)
                .unwrap_err()
                .to_string()
                .contains("tuple of 1 values on stream `all` of `words`, which has 7 fields")
        );
        assert!(bad_stream(7).unwrap_err().to_string().contains("unknown stream 7 of task 3"));
    }

    #[test]
    fn handshake_frames_round_trip() {
        let hello = Hello {
            topology_id: "wc-1".into(),
            worker: "127.0.0.1:6700".into(),
            component: "count".into(),
            fingerprint: 42,
            version: WIRE_VERSION,
        };
        let reject = Reject { reason: RejectReason::LaneClosed, message: "closed".into() };
        let mut buf = BytesMut::new();
        encode_hello(&mut buf, &hello).unwrap();
        encode_bye(&mut buf).unwrap();
        encode_reject(&mut buf, &reject).unwrap();
        let mut reader = codec();
        let mut next = || decode_control_frame(&reader.decode(&mut buf).unwrap().unwrap()).unwrap();
        assert_eq!(next(), Frame::Hello(hello));
        assert_eq!(next(), Frame::Bye);
        assert_eq!(next(), Frame::Reject(reject));
        // Batches are not a handshake frame.
        let table = table();
        let batches =
            encode(&table, &[Batch { task: 1, tuples: vec![], control: vec![Control::Notice(SpoutNotice::Acked(1))] }]);
        let frame = codec().decode(&mut batches.clone()).unwrap().unwrap();
        assert!(matches!(decode_control_frame(&frame), Err(WireError::Unexpected(_))));
    }

    #[test]
    fn garbage_never_panics() {
        let table = table();
        let tuples = (0..20).map(|i| word(&table, 4, &format!("w{i}"), MessageId::from_anchors([(i, i)]))).collect();
        let control = vec![Control::Acker(AckerMessage::Init { root: 1, value: 2, spout_task: 3 })];
        let valid = encode(&table, &[Batch { task: 1, tuples, control }]);
        let payload = &valid[4..];
        let mut out = Vec::new();
        let mut accept = |task: TaskId, hint: usize| (task <= 2).then(|| Vec::with_capacity(hint));
        assert!(decode_frame(payload, &table, &mut out, &mut accept).is_ok());
        // Every truncation, and random bit flips.
        for len in 0..payload.len() {
            out.clear();
            assert!(decode_frame(&payload[..len], &table, &mut out, &mut accept).is_err());
        }
        let mut trailing = payload.to_vec();
        trailing.push(0xc0);
        assert!(matches!(decode_frame(&trailing, &table, &mut out, &mut accept), Err(WireError::TrailingBytes)));
        for _ in 0..20_000 {
            let mut bytes = payload.to_vec();
            for _ in 0..fastrand::usize(1..4) {
                let i = fastrand::usize(..bytes.len());
                bytes[i] ^= 1 << fastrand::u8(..8);
            }
            out.clear();
            let _ = decode_frame(&bytes, &table, &mut out, &mut accept);
        }
        for _ in 0..20_000 {
            let bytes: Vec<u8> = (0..fastrand::usize(..64)).map(|_| fastrand::u8(..)).collect();
            out.clear();
            let _ = decode_frame(&bytes, &table, &mut out, &mut accept);
            let _ = decode_control_frame(&bytes);
        }
        // An array header claiming four billion batches does not allocate for them.
        let huge =
            [FIXARRAY_2, KIND_BATCHES, ARRAY32, 0xff, 0xff, 0xff, 0xff, 0x93, 0x01, 0xdd, 0xff, 0xff, 0xff, 0xff];
        assert!(decode_frame(&huge, &table, &mut out, &mut accept).is_err());
    }

    #[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq)]
    struct Address {
        street: String,
        zip: u32,
        lines: Vec<String>,
    }

    #[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq)]
    enum Shipping {
        Pickup,
        Post { address: Address, express: bool },
    }

    #[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq)]
    struct Order {
        id: u64,
        delta: i64,
        tags: HashMap<String, u64>,
        shipping: Vec<Shipping>,
    }

    #[test]
    fn nested_lists_maps_and_serde_structs_round_trip() {
        let table = table();
        let all = table.meta(4, 1).unwrap();
        let address = Address { street: "Main".into(), zip: 1234, lines: vec!["a".into(), "b".into()] };
        let order = Order {
            id: u64::MAX,
            delta: 5,
            tags: [("red".to_owned(), 1), ("blue".to_owned(), 2)].into(),
            shipping: vec![Shipping::Pickup, Shipping::Post { address, express: true }],
        };
        let long = "a string longer than twenty-three bytes, shared";
        let mut values = Values::new();
        values.extend([
            to_value(&order).unwrap(),
            // Signedness survives inside lists and maps, keys included.
            Value::list([Value::I64(0), Value::I64(127), Value::I64(128), Value::I64(40_000), Value::I64(1 << 40)]),
            Value::list([Value::U64(0), Value::U64(300), Value::I64(-1), Value::I64(i64::MIN), Value::I64(i64::MAX)]),
            Value::map([
                (Value::I64(1), Value::from("signed")),
                (Value::U64(1), Value::from("unsigned")),
                (Value::list([Value::Null, Value::Bool(true)]), Value::map([(long, Value::F64(-0.5))])),
                (Value::Bytes(vec![0, 255].into()), Value::list(Vec::<Value>::new())),
            ]),
            Value::list([Value::map(Vec::<(u64, u64)>::new()), Value::from(long), Value::Bytes(vec![7].into())]),
            nested(MAX_VALUE_DEPTH),
            Value::F64(f64::NAN),
        ]);
        let batch =
            Batch { task: 1, tuples: vec![Tuple::new(all, 4, values.clone(), MessageId::default())], control: vec![] };
        let decoded = decode_all(&table, encode(&table, &[batch])).unwrap();
        let got = decoded[0].tuples[0].values();
        assert_eq!(got, &values[..]);
        assert!(matches!(got[1].as_list().unwrap()[0], Value::I64(0)), "a non-negative I64 stays an I64");
        assert!(matches!(got[2].as_list().unwrap()[0], Value::U64(0)));
        assert_eq!(from_value::<Order>(&got[0]), Ok(order));
    }

    #[test]
    fn signed_integers_cost_no_more_than_before() {
        let table = table();
        let size = |value: Value| {
            let tuples = vec![one_value(&table, value)];
            encode(&table, &[Batch { task: 1, tuples, control: vec![] }]).len()
        };
        let nil = size(Value::Null);
        // A non-negative I64 takes a signed marker and its smallest width: as the one-element
        // array of version 1 did.
        assert_eq!(size(Value::I64(5)) - nil, 1);
        assert_eq!(size(Value::I64(200)) - nil, 2);
        assert_eq!(size(Value::I64(-5)) - nil, 0);
        assert_eq!(size(Value::U64(5)) - nil, 0);
        assert_eq!(size(Value::list([1u64, 2])) - nil, 2);
        assert_eq!(size(Value::map([(1u64, 2u64)])) - nil, 2);
    }

    #[test]
    fn values_nested_too_deep_are_not_sent_and_refused() {
        let table = table();
        // The encoder drops (and counts) the tuple rather than break the connection's frame.
        let mut encoder = BatchEncoder::new(table.clone());
        let mut buf = BytesMut::new();
        let tuples = vec![
            one_value(&table, nested(MAX_VALUE_DEPTH + 1)),
            one_value(&table, Value::map([(nested(MAX_VALUE_DEPTH), Value::Null)])),
            one_value(&table, nested(MAX_VALUE_DEPTH)),
        ];
        encoder.push(&mut buf, &Batch { task: 1, tuples, control: vec![] }).unwrap();
        encoder.finish(&mut buf);
        assert_eq!(encoder.take_skipped(), 2);
        let decoded = decode_all(&table, buf).unwrap();
        assert_eq!(decoded[0].tuples.len(), 1);
        assert_eq!(decoded[0].tuples[0].values()[0], nested(MAX_VALUE_DEPTH));

        // The decoder refuses a deeper value before descending into it: a frame of 100 000
        // nested arrays (or maps) is an error, not a stack overflow.
        let deep_arrays: Vec<u8> = std::iter::repeat_n(0x91, 100_000).chain([0xc0]).collect();
        let err = decode_all(&table, raw_value_frame(&deep_arrays)).unwrap_err();
        assert_eq!(err.to_string(), "malformed frame: value nested deeper than 64 levels");
        let deep_maps: Vec<u8> = std::iter::repeat_n([0x81, 0xc0], 100_000).flatten().chain([0xc0]).collect();
        let err = decode_all(&table, raw_value_frame(&deep_maps)).unwrap_err();
        assert_eq!(err.to_string(), "malformed frame: value nested deeper than 64 levels");
        // Exactly the deepest allowed decodes.
        let deepest: Vec<u8> = std::iter::repeat_n(0x91, MAX_VALUE_DEPTH).chain([0x01]).collect();
        let decoded = decode_all(&table, raw_value_frame(&deepest)).unwrap();
        assert_eq!(decoded[0].tuples[0].values()[0], nested(MAX_VALUE_DEPTH));
    }

    #[test]
    fn deep_nesting_where_no_value_is_expected_is_refused_too() {
        let table = table();
        let deep: Vec<u8> = std::iter::repeat_n(0x91, 100_000).chain([0xc0]).collect();
        // After a whole frame.
        let mut payload =
            encode(&table, &[Batch { task: 1, tuples: vec![], control: vec![Control::Notice(SpoutNotice::Acked(1))] }])
                [4..]
                .to_vec();
        payload.extend(&deep);
        let mut out = Vec::new();
        let mut accept = |task: TaskId, hint: usize| (task <= 2).then(|| Vec::with_capacity(hint));
        assert!(matches!(decode_frame(&payload, &table, &mut out, &mut accept), Err(WireError::TrailingBytes)));
        // As the body of a batches frame read as a handshake, and of a Hello.
        let batches: Vec<u8> = [FIXARRAY_2, KIND_BATCHES].into_iter().chain(deep.iter().copied()).collect();
        assert!(decode_control_frame(&batches).is_err());
        let hello: Vec<u8> = [FIXARRAY_2, KIND_HELLO].into_iter().chain(deep.iter().copied()).collect();
        assert!(decode_control_frame(&hello).is_err());
        // As an extra field of a control message.
        let control: Vec<u8> =
            [0x93, 0x02, 0x90, 0x91, 0x93, 0x04, 0x01].into_iter().chain(deep.iter().copied()).collect();
        let frame = batch_frame(|out| {
            out.extend_from_slice(&control);
            Ok(())
        });
        assert!(decode_all(&table, frame).is_err());
    }

    #[test]
    fn hostile_lengths_and_keys_are_refused() {
        let table = table();
        // Arrays and maps claiming four billion elements, nested: an error, and what was
        // pre-allocated for them is bounded by the frame's length.
        let mut claims = Vec::new();
        for _ in 0..MAX_VALUE_DEPTH {
            claims.extend([0xdd, 0xff, 0xff, 0xff, 0xff]);
        }
        assert!(decode_all(&table, raw_value_frame(&claims)).is_err());
        assert!(decode_all(&table, raw_value_frame(&[0xdf, 0xff, 0xff, 0xff, 0xff, 0xc0])).is_err());
        // A map with a key given twice.
        let err = decode_all(&table, raw_value_frame(&[0x82, 0x01, 0xc0, 0x01, 0xc3])).unwrap_err();
        assert_eq!(err.to_string(), "malformed frame: map with a key given twice");
        // A well-formed map, for contrast.
        let decoded = decode_all(&table, raw_value_frame(&[0x82, 0x01, 0xc0, 0x02, 0xc3])).unwrap();
        assert_eq!(decoded[0].tuples[0].values()[0], Value::map([(1u64, Value::Null), (2, Value::Bool(true))]));
        // Extension types are not values.
        assert!(decode_all(&table, raw_value_frame(&[0xd4, 0x01, 0x00])).is_err());
    }

    /// What `rmp`'s writers make of a value: the bytes the hand-written writers must match.
    fn rmp_value(out: &mut Vec<u8>, value: &Value) {
        use rmp::encode as e;
        match value {
            Value::Null => e::write_nil(out).unwrap(),
            Value::Bool(v) => e::write_bool(out, *v).unwrap(),
            Value::I64(v) if *v < 0 => drop(e::write_sint(out, *v).unwrap()),
            Value::I64(v) => match (i8::try_from(*v), i16::try_from(*v), i32::try_from(*v)) {
                (Ok(v), _, _) => e::write_i8(out, v).unwrap(),
                (_, Ok(v), _) => e::write_i16(out, v).unwrap(),
                (_, _, Ok(v)) => e::write_i32(out, v).unwrap(),
                _ => e::write_i64(out, *v).unwrap(),
            },
            Value::U64(v) => drop(e::write_uint(out, *v).unwrap()),
            Value::F64(v) => e::write_f64(out, *v).unwrap(),
            Value::Str(v) => e::write_str(out, v).unwrap(),
            Value::Bytes(v) => e::write_bin(out, v).unwrap(),
            Value::List(items) => {
                e::write_array_len(out, items.len() as u32).unwrap();
                items.iter().for_each(|item| rmp_value(out, item));
            }
            Value::Map(map) => {
                e::write_map_len(out, map.len() as u32).unwrap();
                map.iter().for_each(|(k, v)| {
                    rmp_value(out, k);
                    rmp_value(out, v);
                });
            }
        }
    }

    #[test]
    fn values_are_written_as_rmp_writes_them() {
        let mut values = Vec::new();
        for bits in 0..64 {
            for v in [(1u64 << bits) - 1, 1 << bits, (1 << bits) + 1] {
                values.push(Value::U64(v));
                values.push(Value::I64(v as i64));
                values.push(Value::I64((v as i64).wrapping_neg()));
            }
        }
        values.extend([Value::U64(u64::MAX), Value::I64(i64::MIN), Value::I64(-32), Value::I64(-33)]);
        values.extend([Value::Null, Value::Bool(true), Value::Bool(false), Value::F64(-0.25), Value::F64(f64::NAN)]);
        for len in [0, 1, 31, 32, 255, 256, 65_535, 65_536] {
            values.push(Value::Str("x".repeat(len).into()));
            values.push(Value::Bytes(vec![7; len].into()));
            values.push(Value::List(vec![Value::Null; len].into()));
        }
        for len in [0, 15, 16, 65_536] {
            values.push(Value::map((0..len as u64).map(|k| (k, Value::Null))));
        }
        values.push(Value::list([Value::map([(Value::from("k"), Value::list([Value::I64(-1)]))])]));
        for value in &values {
            let mut ours = BytesMut::new();
            write_value(&mut Out::new(&mut ours), value).unwrap();
            let mut reference = Vec::new();
            rmp_value(&mut reference, value);
            assert!(ours[..] == reference[..], "{value:?} is written differently");
        }
        // Control messages too.
        let controls = [
            Control::Acker(AckerMessage::Init { root: u64::MAX, value: 300, spout_task: 70_000 }),
            Control::Acker(AckerMessage::Ack { root: 1, value: 1 << 40 }),
            Control::Notice(SpoutNotice::ResetTimeout(200)),
        ];
        for control in &controls {
            let mut ours = BytesMut::new();
            write_control(&mut Out::new(&mut ours), control).unwrap();
            let (kind, fields): (u64, Vec<u64>) = match *control {
                Control::Acker(AckerMessage::Init { root, value, spout_task }) => {
                    (0, vec![root, value, spout_task.into()])
                }
                Control::Acker(AckerMessage::Ack { root, value }) => (1, vec![root, value]),
                Control::Notice(SpoutNotice::ResetTimeout(root)) => (6, vec![root]),
                _ => unreachable!(),
            };
            let mut reference = Vec::new();
            rmp::encode::write_array_len(&mut reference, fields.len() as u32 + 1).unwrap();
            for v in std::iter::once(kind).chain(fields) {
                rmp::encode::write_uint(&mut reference, v).unwrap();
            }
            assert_eq!(&ours[..], &reference[..]);
        }
    }

    #[test]
    fn any_integer_width_and_float32_are_read() {
        let table = table();
        // Task 1 as uint16, source task 3 as a signed int8, stream 0 as uint32; value f32 1.5;
        // the id [7, 9] as uint64 and int16.
        let frame = batch_frame(|out| {
            out.extend_from_slice(&[0x93, 0xcd, 0x00, 0x01, 0x91, 0x94, 0xd0, 0x03, 0xce, 0, 0, 0, 0, 0x91, 0xca]);
            out.extend_from_slice(&1.5f32.to_be_bytes());
            out.extend_from_slice(&[0x92, 0xcf, 0, 0, 0, 0, 0, 0, 0, 7, 0xd1, 0x00, 0x09, 0x90]);
            Ok(())
        });
        let decoded = decode_all(&table, frame).unwrap();
        let tuple = &decoded[0].tuples[0];
        assert_eq!((decoded[0].task, tuple.source_task()), (1, 3));
        assert_eq!(tuple.values(), &[Value::F64(1.5)]);
        assert_eq!(tuple.message_id().anchors(), &[(7, 9)]);
    }

    #[test]
    fn malformed_batches_name_what_is_wrong() {
        let table = table();
        let error = |raw: &[u8]| {
            let frame = batch_frame(|out| {
                out.extend_from_slice(raw);
                Ok(())
            });
            decode_all(&table, frame).unwrap_err().to_string()
        };
        // A negative task, a batch of four elements, a string that is not UTF-8, a control
        // message with an extra field, an unknown control kind, an id with a root and no edge.
        assert_eq!(error(&[0x93, 0xff, 0x90, 0x90]), "malformed frame: a batch's task out of range");
        assert_eq!(
            error(&[0x94, 0x01, 0x90, 0x90, 0x90]),
            "malformed frame: a batch [task, tuples, control] of 4 elements, not 3"
        );
        assert!(
            error(&[0x93, 0x01, 0x91, 0x94, 0x03, 0x00, 0x91, 0xa1, 0xff, 0x90, 0x90])
                .contains("a string that is not UTF-8")
        );
        assert_eq!(
            error(&[0x93, 0x01, 0x90, 0x91, 0x93, 0x04, 0x01, 0x02]),
            "malformed frame: control message of kind 4 with 3 fields, not 2"
        );
        assert_eq!(
            error(&[0x93, 0x01, 0x90, 0x91, 0x92, 0x09, 0x01]),
            "malformed frame: unknown control message kind 9"
        );
        assert_eq!(
            error(&[0x93, 0x01, 0x91, 0x94, 0x03, 0x00, 0x91, 0xc0, 0x91, 0x01, 0x90]),
            "malformed frame: message id with a root and no edge"
        );
    }

    #[test]
    fn the_preallocation_budget_is_the_frames_length() {
        let budget = Budget(Cell::new(100));
        assert_eq!(budget.take(30), 30);
        assert_eq!(budget.take(u32::MAX as usize), 70);
        assert_eq!(budget.take(5), 0);
        let budget = Budget(Cell::new(usize::MAX));
        assert_eq!(budget.take(usize::MAX), MAX_PREALLOCATION);
    }

    #[test]
    fn nested_values_survive_garbage() {
        let table = table();
        let value = Value::map([
            (Value::from("k"), Value::list([Value::I64(1), Value::map([(2u64, "x")]), Value::Bytes(vec![1].into())])),
            (Value::list([Value::F64(1.0)]), Value::Null),
        ]);
        let tuples = (0..5).map(|_| one_value(&table, value.clone())).collect();
        let valid = encode(&table, &[Batch { task: 1, tuples, control: vec![] }]);
        let payload = &valid[4..];
        let mut out = Vec::new();
        let mut accept = |task: TaskId, hint: usize| (task <= 2).then(|| Vec::with_capacity(hint));
        assert!(decode_frame(payload, &table, &mut out, &mut accept).is_ok());
        for len in 0..payload.len() {
            out.clear();
            assert!(decode_frame(&payload[..len], &table, &mut out, &mut accept).is_err());
        }
        for _ in 0..20_000 {
            let mut bytes = payload.to_vec();
            for _ in 0..fastrand::usize(1..4) {
                let i = fastrand::usize(..bytes.len());
                bytes[i] ^= 1 << fastrand::u8(..8);
            }
            out.clear();
            let _ = decode_frame(&bytes, &table, &mut out, &mut accept);
        }
    }
}

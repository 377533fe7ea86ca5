//! Reads fetched records in batches from one librdkafka queue of the task's own.
//!
//! rdkafka's `BaseConsumer::poll` hands over one message per call: an event, an `Arc` and three
//! clock reads each. The spout instead forwards each owned partition's fetch queue to a queue of
//! its own and takes up to a batch at a time with `rd_kafka_consume_batch_queue` (one clock read
//! per batch). Only fetched records and per-partition errors reach that queue; the consumer's own
//! queue keeps everything else (commit results, errors, logs), and the spout still polls it.

// FFI to librdkafka: the one place in the workspace that needs unsafe code.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_int, c_void};
use std::ptr;
use std::sync::{Arc, LazyLock};

use rdkafka::bindings as rd;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

/// The most records taken from librdkafka in one call.
const MAX_BATCH: usize = 10_000;

/// The task's queue that its partitions' fetch queues forward to.
pub(crate) struct FetchQueue {
    queue: *mut rd::rd_kafka_queue_t,
    /// Keeps the client alive for as long as the queue: librdkafka must not be destroyed before
    /// a queue of it.
    consumer: Arc<BaseConsumer>,
    batch: Vec<*mut rd::rd_kafka_message_t>,
}

// SAFETY: librdkafka queues are thread-safe; the batch buffer holds no message between calls.
unsafe impl Send for FetchQueue {}
// SAFETY: `&self` methods only call librdkafka's thread-safe queue functions.
unsafe impl Sync for FetchQueue {}

impl FetchQueue {
    /// A new queue of `consumer`'s client.
    pub(crate) fn new(consumer: Arc<BaseConsumer>) -> FetchQueue {
        // SAFETY: the client pointer is valid while `consumer` lives, and `self` keeps it.
        let queue = unsafe { rd::rd_kafka_queue_new(consumer.client().native_ptr()) };
        FetchQueue { queue, consumer, batch: Vec::new() }
    }

    /// Sends the records fetched for `topic`/`partition` here from now on. Call it before the
    /// partition is assigned: librdkafka keeps an application's forwarding when fetching starts
    /// and drops it when the partition is unassigned.
    pub(crate) fn route(&self, topic: &str, partition: i32) -> bool {
        let Ok(topic) = CString::new(topic) else { return false };
        // SAFETY: valid client and queue; the partition queue handle is released right away
        // (the forwarding stays with the partition).
        unsafe {
            let source =
                rd::rd_kafka_queue_get_partition(self.consumer.client().native_ptr(), topic.as_ptr(), partition);
            if source.is_null() {
                return false;
            }
            rd::rd_kafka_queue_forward(source, self.queue);
            rd::rd_kafka_queue_destroy(source);
        }
        true
    }

    /// Takes up to `max` records (or errors) that are ready, without waiting, and passes each to
    /// `each`; returns how many were taken.
    pub(crate) fn drain(&mut self, max: usize, mut each: impl FnMut(&Fetched)) -> usize {
        // The buffer is sized by the caller's limit: keep a huge `max_poll_records` from sizing it.
        let max = max.min(MAX_BATCH);
        self.batch.clear();
        self.batch.reserve(max);
        // SAFETY: the buffer has room for `max` pointers; librdkafka writes `n` of them.
        let n = unsafe { rd::rd_kafka_consume_batch_queue(self.queue, 0, self.batch.as_mut_ptr(), max) };
        let Ok(n) = usize::try_from(n) else { return 0 };
        // SAFETY: librdkafka initialised the first `n` entries.
        unsafe { self.batch.set_len(n.min(max)) };
        // Each message is destroyed right after its turn, while librdkafka's op is still in the
        // cache; those left are destroyed even should `each` panic.
        struct Release<'a> {
            batch: &'a mut Vec<*mut rd::rd_kafka_message_t>,
            done: usize,
        }
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                for &message in &self.batch[self.done..] {
                    // SAFETY: each pointer came from `rd_kafka_consume_batch_queue`, once, and
                    // those before `done` were destroyed already.
                    unsafe { rd::rd_kafka_message_destroy(message) };
                }
                self.batch.clear();
            }
        }
        let mut release = Release { batch: &mut self.batch, done: 0 };
        while let Some(&message) = release.batch.get(release.done) {
            // SAFETY: a valid message, not yet destroyed.
            each(unsafe { &*(message as *const Fetched) });
            release.done += 1;
            // SAFETY: as above; `done` moved past it first, so a panic cannot destroy it twice.
            unsafe { rd::rd_kafka_message_destroy(message) };
        }
        n
    }
}

impl Drop for FetchQueue {
    fn drop(&mut self) {
        // SAFETY: created in `new`, destroyed once, while the client is still alive.
        unsafe { rd::rd_kafka_queue_destroy(self.queue) };
    }
}

/// One fetched record or per-partition error, borrowed from librdkafka for one call.
#[repr(transparent)]
pub(crate) struct Fetched(rd::rd_kafka_message_t);

impl std::fmt::Debug for Fetched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetched")
            .field("topic", &self.topic())
            .field("partition", &self.partition())
            .field("offset", &self.offset())
            .finish_non_exhaustive()
    }
}

impl Fetched {
    /// The partition's error, if this is one rather than a record.
    pub(crate) fn error(&self) -> Option<KafkaError> {
        if self.0.err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return None;
        }
        Some(KafkaError::MessageConsumption(RDKafkaErrorCode::from(self.0.err)))
    }

    /// Identifies the topic while it is assigned: librdkafka's handle, compared by address.
    pub(crate) fn topic_key(&self) -> usize {
        self.0.rkt as usize
    }

    /// The topic's name.
    pub(crate) fn topic(&self) -> &str {
        if self.0.rkt.is_null() {
            return "";
        }
        // SAFETY: a message's topic handle and its name live as long as the message.
        unsafe { CStr::from_ptr(rd::rd_kafka_topic_name(self.0.rkt)) }.to_str().unwrap_or("")
    }

    pub(crate) fn partition(&self) -> i32 {
        self.0.partition
    }

    pub(crate) fn offset(&self) -> i64 {
        self.0.offset
    }

    pub(crate) fn key(&self) -> Option<&[u8]> {
        // SAFETY: librdkafka's pointer and length for the message's lifetime.
        unsafe { bytes(self.0.key, self.0.key_len) }
    }

    pub(crate) fn payload(&self) -> Option<&[u8]> {
        // SAFETY: as for the key.
        unsafe { bytes(self.0.payload, self.0.len) }
    }

    /// The timestamp in unix milliseconds, if the record has one.
    pub(crate) fn timestamp(&self) -> Option<i64> {
        let mut kind = rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        // SAFETY: a valid message; librdkafka only reads it.
        let ms = unsafe { rd::rd_kafka_message_timestamp(&self.0, &mut kind) };
        (kind != rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE && ms >= 0).then_some(ms)
    }

    /// The headers, in order.
    pub(crate) fn headers(&self) -> Vec<(&str, Option<&[u8]>)> {
        if !self.may_have_headers() {
            return Vec::new();
        }
        let mut headers = ptr::null_mut();
        // SAFETY: a valid message; the headers belong to it.
        if unsafe { rd::rd_kafka_message_headers(&self.0, &mut headers) }
            != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
        {
            return Vec::new();
        }
        let mut all = Vec::new();
        for index in 0.. {
            let (mut name, mut value, mut size) = (ptr::null(), ptr::null(), 0);
            // SAFETY: as above; librdkafka stops with an error past the last header.
            let err = unsafe { rd::rd_kafka_header_get_all(headers, index, &mut name, &mut value, &mut size) };
            if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                break;
            }
            // SAFETY: a header name is a NUL-terminated string owned by the headers.
            let name = unsafe { CStr::from_ptr(name) }.to_str().unwrap_or("");
            // SAFETY: the value and its size as librdkafka gives them.
            all.push((name, unsafe { bytes(value, size) }));
        }
        all
    }
}

impl Fetched {
    /// False when the record surely has no headers. librdkafka's own answer to that question
    /// parses the headers, allocating and freeing a buffer (600 bytes, zeroed) even when there
    /// are none, which is most records and a tenth of the spout's time. Its record struct tells
    /// without that: the unparsed headers begin with their count, a single 0 byte for none.
    fn may_have_headers(&self) -> bool {
        if !*KNOWN_LAYOUT {
            return true;
        }
        // SAFETY: a fetched record's `rd_kafka_message_t` is the first field of librdkafka's
        // `rd_kafka_msg_t`, laid out as `MsgLayout` in the librdkafka version checked above.
        let msg = unsafe { &*(&self.0 as *const rd::rd_kafka_message_t).cast::<MsgLayout>() };
        if !msg.parsed_headers.is_null() {
            return true;
        }
        let Ok(len) = usize::try_from(msg.header_bytes_len) else { return false };
        if len == 0 || msg.header_bytes.is_null() {
            return false;
        }
        // SAFETY: `len` (> 0) bytes of the fetched batch, alive with the message.
        unsafe { *msg.header_bytes != 0 }
    }
}

/// The librdkafka version whose record struct `MsgLayout` mirrors.
const LAYOUT_VERSION: c_int = 0x020c_01ff;

/// Whether the linked librdkafka is that version: otherwise headers are always asked for.
static KNOWN_LAYOUT: LazyLock<bool> = LazyLock::new(|| {
    // SAFETY: no arguments, no state.
    unsafe { rd::rd_kafka_version() == LAYOUT_VERSION }
});

/// The start of librdkafka 2.12.1's `rd_kafka_msg_t` (rdkafka_msg.h), up to a fetched record's
/// unparsed headers (`rkm_u.consumer.binhdrs`).
#[repr(C)]
#[allow(dead_code, reason = "fields before the headers are there for the layout only")]
struct MsgLayout {
    message: rd::rd_kafka_message_t,
    link: [*mut c_void; 2],
    flags: c_int,
    timestamp_type: c_int,
    timestamp: i64,
    parsed_headers: *mut c_void,
    status: c_int,
    broker_id: i32,
    header_bytes_len: i32,
    header_bytes: *const u8,
}

/// `len` bytes at `data`, or `None` for a null pointer.
///
/// # Safety
/// `data` must be null or point to `len` readable bytes that outlive `'a`.
unsafe fn bytes<'a>(data: *const c_void, len: usize) -> Option<&'a [u8]> {
    if data.is_null() {
        return None;
    }
    // SAFETY: the caller's promise.
    Some(unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Upgrading librdkafka turns the headers shortcut off until `MsgLayout` is checked against
    /// the new rdkafka_msg.h (and `LAYOUT_VERSION` moved): this says so.
    #[test]
    fn the_record_layout_is_that_of_the_linked_librdkafka() {
        assert!(*KNOWN_LAYOUT, "librdkafka is not {LAYOUT_VERSION:#x}: check MsgLayout against its rdkafka_msg.h");
    }
}

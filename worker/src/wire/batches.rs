//! Reads a batches frame's body straight from the bytes, without serde.
//!
//! Batches are most of what crosses the wire, and a receiving worker spends its time decoding
//! them: through serde every array, integer and value was a visitor call behind a generic
//! deserializer (about 60% of a receiving sink's time). This reader walks the format of the
//! [module docs](super) directly and keeps every guarantee of the serde path: each length only
//! bounds a loop, pre-allocations come out of the frame's [`Budget`], values nest at most
//! [`MAX_VALUE_DEPTH`] levels, and any deviation is an error that names what was wrong.

use std::collections::btree_map::Entry;
use std::sync::Arc;

use squall_topology::{AckerMessage, Control, MessageId, SpoutNotice, TaskId, Tuple, Value, ValueMap, Values};

use super::{BatchContext, Budget, MAX_VALUE_DEPTH, WireError};
use crate::inbox::Batch;

/// A cursor over the rest of a frame's payload.
pub(super) struct Reader<'a> {
    rest: &'a [u8],
}

/// The error for malformed input.
fn malformed(message: impl Into<String>) -> WireError {
    WireError::Malformed(message.into())
}

impl<'a> Reader<'a> {
    pub(super) fn new(payload: &'a [u8]) -> Self {
        Reader { rest: payload }
    }

    /// Whether every byte was read.
    pub(super) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.rest.len() < n {
            return Err(malformed("the frame ends in the middle of a value"));
        }
        let (taken, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(taken)
    }

    fn byte(&mut self) -> Result<u8, WireError> {
        let (&first, rest) =
            self.rest.split_first().ok_or_else(|| malformed("the frame ends in the middle of a value"))?;
        self.rest = rest;
        Ok(first)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let bytes = self.take(N)?;
        let mut array = [0; N];
        array.copy_from_slice(bytes);
        Ok(array)
    }

    /// A length of 1, 2 or 4 big-endian bytes (`width` 0, 1, 2: MessagePack's 8/16/32 forms).
    fn sized(&mut self, width: u8) -> Result<usize, WireError> {
        Ok(match width {
            0 => self.byte()?.into(),
            1 => u16::from_be_bytes(self.array()?).into(),
            // A length: on a 32-bit target one past `usize` cannot be in the frame anyway.
            _ => usize::try_from(u32::from_be_bytes(self.array()?)).unwrap_or(usize::MAX),
        })
    }

    /// The length of the array that comes next.
    pub(super) fn array_len(&mut self, what: &str) -> Result<usize, WireError> {
        match self.byte()? {
            marker @ 0x90..=0x9f => Ok(usize::from(marker & 0x0f)),
            marker @ 0xdc..=0xdd => self.sized(marker - 0xdb),
            _ => Err(malformed(format!("expected {what}"))),
        }
    }

    /// The array of exactly `len` elements that comes next.
    fn exact_array(&mut self, len: usize, what: &str) -> Result<(), WireError> {
        match self.array_len(what)? {
            n if n == len => Ok(()),
            n => Err(malformed(format!("{what} of {n} elements, not {len}"))),
        }
    }

    /// The integer that comes next, which must be `T` (any MessagePack integer width).
    pub(super) fn uint<T: TryFrom<u64>>(&mut self, what: &str) -> Result<T, WireError> {
        let value = match self.byte()? {
            marker @ 0x00..=0x7f => u64::from(marker),
            0xcc => u64::from(self.byte()?),
            0xcd => u64::from(u16::from_be_bytes(self.array()?)),
            0xce => u64::from(u32::from_be_bytes(self.array()?)),
            0xcf => u64::from_be_bytes(self.array()?),
            0xd0 => i64::from(i8::from_be_bytes(self.array()?)).try_into().map_err(|_| out_of_range(what))?,
            0xd1 => i64::from(i16::from_be_bytes(self.array()?)).try_into().map_err(|_| out_of_range(what))?,
            0xd2 => i64::from(i32::from_be_bytes(self.array()?)).try_into().map_err(|_| out_of_range(what))?,
            0xd3 => i64::from_be_bytes(self.array()?).try_into().map_err(|_| out_of_range(what))?,
            // A negative fixint.
            0xe0..=0xff => return Err(out_of_range(what)),
            _ => return Err(malformed(format!("expected {what}, an integer"))),
        };
        T::try_from(value).map_err(|_| out_of_range(what))
    }

    /// One value, inside `depth` lists and maps.
    fn value(&mut self, depth: usize, budget: &Budget) -> Result<Value, WireError> {
        let marker = self.byte()?;
        Ok(match marker {
            0x00..=0x7f => Value::U64(marker.into()),
            0x80..=0x8f => self.map(usize::from(marker & 0x0f), depth, budget)?,
            0x90..=0x9f => self.list(usize::from(marker & 0x0f), depth, budget)?,
            0xa0..=0xbf => self.str(usize::from(marker & 0x1f))?,
            0xc0 => Value::Null,
            0xc2 => Value::Bool(false),
            0xc3 => Value::Bool(true),
            0xc4..=0xc6 => {
                let len = self.sized(marker - 0xc4)?;
                self.bytes(len)?
            }
            0xca => Value::F64(f32::from_be_bytes(self.array()?).into()),
            0xcb => Value::F64(f64::from_be_bytes(self.array()?)),
            0xcc => Value::U64(self.byte()?.into()),
            0xcd => Value::U64(u16::from_be_bytes(self.array()?).into()),
            0xce => Value::U64(u32::from_be_bytes(self.array()?).into()),
            0xcf => Value::U64(u64::from_be_bytes(self.array()?)),
            0xd0 => Value::I64(i8::from_be_bytes(self.array()?).into()),
            0xd1 => Value::I64(i16::from_be_bytes(self.array()?).into()),
            0xd2 => Value::I64(i32::from_be_bytes(self.array()?).into()),
            0xd3 => Value::I64(i64::from_be_bytes(self.array()?)),
            0xd9..=0xdb => {
                let len = self.sized(marker - 0xd9)?;
                self.str(len)?
            }
            0xdc..=0xdd => {
                let len = self.sized(marker - 0xdb)?;
                self.list(len, depth, budget)?
            }
            0xde..=0xdf => {
                let len = self.sized(marker - 0xdd)?;
                self.map(len, depth, budget)?
            }
            0xe0..=0xff => Value::I64(i8::from_be_bytes([marker]).into()),
            // 0xc1 is never used; 0xc7-0xc9 and 0xd4-0xd8 are extension types.
            other => return Err(malformed(format!("marker {other:#04x} is not a value"))),
        })
    }

    fn str(&mut self, len: usize) -> Result<Value, WireError> {
        let text =
            std::str::from_utf8(self.take(len)?).map_err(|e| malformed(format!("a string that is not UTF-8: {e}")))?;
        // Words up to 23 bytes are inline: no allocation.
        Ok(Value::Str(text.into()))
    }

    fn bytes(&mut self, len: usize) -> Result<Value, WireError> {
        Ok(Value::Bytes(self.take(len)?.into()))
    }

    fn list(&mut self, len: usize, depth: usize, budget: &Budget) -> Result<Value, WireError> {
        let depth = nested(depth)?;
        let mut items = Vec::with_capacity(budget.take(len));
        for _ in 0..len {
            items.push(self.value(depth, budget)?);
        }
        Ok(Value::List(items.into()))
    }

    fn map(&mut self, len: usize, depth: usize, budget: &Budget) -> Result<Value, WireError> {
        let depth = nested(depth)?;
        let mut map = ValueMap::new();
        for _ in 0..len {
            let key = self.value(depth, budget)?;
            match map.entry(key) {
                Entry::Vacant(entry) => {
                    entry.insert(self.value(depth, budget)?);
                }
                Entry::Occupied(_) => return Err(malformed("map with a key given twice")),
            }
        }
        Ok(Value::Map(Arc::new(map)))
    }

    /// `[batch, ...]`, each batch appended to the context's `out`.
    pub(super) fn batches(&mut self, ctx: BatchContext<'_, '_>, budget: &Budget) -> Result<(), WireError> {
        let BatchContext { table, out, buffer } = ctx;
        let count = self.array_len("an array of batches")?;
        for _ in 0..count {
            // [task, [tuple, ...], [control, ...]]
            self.exact_array(3, "a batch [task, tuples, control]")?;
            let task: TaskId = self.uint("a batch's task")?;
            let len = self.array_len("an array of tuples")?;
            let mut tuples = buffer(task, budget.take(len))
                .ok_or_else(|| malformed(format!("batch for task {task} which this connection does not feed")))?;
            for _ in 0..len {
                // [src_task, stream, [value, ...], [root, edge, ...]]
                self.exact_array(4, "a tuple [src_task, stream, values, id]")?;
                let src: TaskId = self.uint("a tuple's source task")?;
                let stream: u32 = self.uint("a tuple's stream")?;
                let meta = table
                    .meta(src, stream)
                    .ok_or_else(|| malformed(format!("unknown stream {stream} of task {src}")))?;
                let arity = self.array_len("an array of values")?;
                if arity != meta.fields.len() {
                    return Err(malformed(format!(
                        "tuple of {arity} values on stream `{}` of `{}`, which has {} fields",
                        meta.stream,
                        meta.component,
                        meta.fields.len()
                    )));
                }
                // Up to two values are inline: no allocation for a typical tuple. More get one
                // exact allocation (the arity is the stream's, checked above, not the frame's).
                let mut values = Values::with_capacity(arity);
                for _ in 0..arity {
                    values.push(self.value(0, budget)?);
                }
                let id = self.message_id()?;
                tuples.push(Tuple::new(meta, src, values, id));
            }
            let control = self.controls(budget)?;
            out.push(Batch { task, tuples, control });
        }
        Ok(())
    }

    /// `[root, edge, root, edge, ...]`.
    fn message_id(&mut self) -> Result<MessageId, WireError> {
        let len = self.array_len("an array of (root, edge) ids")?;
        if len % 2 != 0 {
            return Err(malformed("message id with a root and no edge"));
        }
        let mut pair = || -> Result<(u64, u64), WireError> { Ok((self.uint("a root id")?, self.uint("an edge id")?)) };
        Ok(match len / 2 {
            0 => MessageId::Untracked,
            1 => MessageId::One([pair()?]),
            // Multi-anchored tuples are rare; they share one allocation locally too. The first
            // two pairs are read before anything is allocated for the rest.
            pairs => {
                let mut anchors = vec![pair()?, pair()?];
                for _ in 2..pairs {
                    anchors.push(pair()?);
                }
                MessageId::Many(anchors.into())
            }
        })
    }

    /// `[[kind, fields...], ...]`: see `write_control`.
    fn controls(&mut self, budget: &Budget) -> Result<Vec<Control>, WireError> {
        let len = self.array_len("an array of control messages")?;
        let mut control = Vec::with_capacity(budget.take(len));
        for _ in 0..len {
            let fields = self.array_len("a control message [kind, fields...]")?;
            let kind: u64 = if fields > 0 { self.uint("a control message's kind")? } else { u64::MAX };
            let expected = match kind {
                0 | 7 => 4,
                1 => 3,
                2..=6 => 2,
                other => return Err(malformed(format!("unknown control message kind {other}"))),
            };
            if fields != expected {
                return Err(malformed(format!("control message of kind {kind} with {fields} fields, not {expected}")));
            }
            let root = self.uint("a root id")?;
            let spout_task = |reader: &mut Self| reader.uint::<TaskId>("a spout task");
            control.push(match kind {
                0 => Control::Acker(AckerMessage::Init {
                    root,
                    value: self.uint("an ack value")?,
                    spout_task: spout_task(self)?,
                }),
                1 => Control::Acker(AckerMessage::Ack { root, value: self.uint("an ack value")? }),
                2 => Control::Acker(AckerMessage::Fail { root }),
                3 => Control::Acker(AckerMessage::ResetTimeout { root }),
                4 => Control::Notice(SpoutNotice::Acked(root)),
                5 => Control::Notice(SpoutNotice::Failed(root)),
                6 => Control::Notice(SpoutNotice::ResetTimeout(root)),
                _ => Control::Acker(AckerMessage::Adopt {
                    root,
                    value: self.uint("an ack value")?,
                    spout_task: spout_task(self)?,
                }),
            });
        }
        Ok(control)
    }
}

fn out_of_range(what: &str) -> WireError {
    malformed(format!("{what} out of range"))
}

/// The depth inside a list or map entered at `depth`, if values may nest that deep.
fn nested(depth: usize) -> Result<usize, WireError> {
    if depth >= MAX_VALUE_DEPTH {
        return Err(malformed(format!("value nested deeper than {MAX_VALUE_DEPTH} levels")));
    }
    Ok(depth + 1)
}

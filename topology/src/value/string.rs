//! [`Str`], the string a [`Value`](super::Value) holds.
//!
//! It replaces `smol_str::SmolStr`, whose representation it follows (inline, static or shared),
//! for one reason: making a short string. SmolStr copies the text into a byte buffer with a
//! `memcpy` of the text's length and then reads the buffer back in wider pieces at other offsets;
//! each such read of bytes just written stalls the CPU's store forwarding. A word count made
//! a quarter of its words' cost there. Here the text is read in at most three little-endian
//! words (overlapping loads, no byte loop), the length goes into the last byte, and the string is
//! those three words: written once, aligned, read back whole.

use std::borrow::{Borrow, Cow};
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::str::FromStr;
use std::sync::Arc;

/// The longest text kept inline.
const INLINE_CAP: usize = 23;

/// An immutable string with O(1) clone: up to 23 bytes inline, `&'static str` without copying,
/// longer strings shared by reference count. Words and keys never allocate.
///
/// It compares, orders and hashes as its text, so a `HashMap<Str, _>` is looked up by `&str`.
#[derive(Clone)]
pub struct Str(Repr);

#[derive(Clone)]
enum Repr {
    Inline(Inline),
    Static(&'static str),
    Heap(Arc<str>),
}

/// Text of at most [`INLINE_CAP`] bytes, then its length: 24 bytes, aligned like the three words
/// it is made of. The length's unused values are the niche that tells the variants of [`Repr`]
/// (and of `Value`) apart, so both stay 24 bytes.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct Inline {
    buf: [u8; INLINE_CAP],
    len: InlineLen,
}

/// A length from 0 to [`INLINE_CAP`].
#[allow(dead_code)] // Its variants are made by transmuting a length byte.
#[derive(Clone, Copy)]
#[repr(u8)]
enum InlineLen {
    L0 = 0,
    L1,
    L2,
    L3,
    L4,
    L5,
    L6,
    L7,
    L8,
    L9,
    L10,
    L11,
    L12,
    L13,
    L14,
    L15,
    L16,
    L17,
    L18,
    L19,
    L20,
    L21,
    L22,
    L23,
}

/// `b`'s first 8 bytes as a little-endian word.
#[inline(always)]
fn le8(b: &[u8]) -> u64 {
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// The bytes of `b` (at most 8) as a little-endian word, read with at most two overlapping
/// loads instead of a byte loop.
#[inline(always)]
fn le_partial(b: &[u8]) -> u64 {
    let n = b.len();
    if n >= 8 {
        return le8(b);
    }
    if n >= 4 {
        let lo = u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        let hi = u64::from(u32::from_le_bytes([b[n - 4], b[n - 3], b[n - 2], b[n - 1]]));
        return lo | hi << ((n - 4) * 8);
    }
    if n >= 2 {
        let lo = u64::from(u16::from_le_bytes([b[0], b[1]]));
        let hi = u64::from(u16::from_le_bytes([b[n - 2], b[n - 1]]));
        return lo | hi << ((n - 2) * 8);
    }
    b.first().map_or(0, |&b| u64::from(b))
}

impl Inline {
    /// `text`, which is at most [`INLINE_CAP`] bytes long.
    #[inline(always)]
    fn new(text: &str) -> Inline {
        let b = text.as_bytes();
        let n = b.len();
        debug_assert!(n <= INLINE_CAP);
        let (w0, w1, w2) = if n > 16 {
            (le8(b), le8(&b[8..]), le_partial(&b[16..]))
        } else if n > 8 {
            (le8(b), le_partial(&b[8..]), 0)
        } else {
            (le_partial(b), 0, 0)
        };
        // The text of a 23-byte string ends at byte 22, so the top byte of the last word is free.
        let w2 = w2 | (n.min(INLINE_CAP) as u64) << 56;
        let words = [w0.to_le(), w1.to_le(), w2.to_le()];
        // SAFETY: `Inline` is `repr(C)`, 24 bytes aligned to 8 with no padding: the text's 23
        // bytes, then the length byte. In little-endian order the words hold the text first
        // (zeros after it) and the length last, which is at most 23: a valid `InlineLen`.
        #[allow(unsafe_code)]
        unsafe {
            std::mem::transmute::<[u64; 3], Inline>(words)
        }
    }

    /// Its 24 bytes as three words.
    #[inline(always)]
    fn words(&self) -> [u64; 3] {
        // SAFETY: `Inline` is `repr(C)`, 24 bytes aligned to 8 with no padding (see `new`), and
        // every bit pattern is a valid `[u64; 3]`.
        #[allow(unsafe_code)]
        unsafe {
            std::mem::transmute::<Inline, [u64; 3]>(*self)
        }
    }

    #[inline(always)]
    fn as_str(&self) -> &str {
        let text = &self.buf[..(self.len as usize).min(INLINE_CAP)];
        // SAFETY: the bytes up to `len` were copied whole from a `str` (`Inline::new`).
        #[allow(unsafe_code)]
        unsafe {
            std::str::from_utf8_unchecked(text)
        }
    }
}

impl Str {
    /// A string with a copy of `text`: inline up to 23 bytes, otherwise in one shared allocation.
    // Always inlined: returned through memory, the three words were read back as a 16-byte
    // piece and an 8-byte one, which stalls store forwarding just the same.
    #[inline(always)]
    pub fn new(text: impl AsRef<str>) -> Str {
        let text = text.as_ref();
        if text.len() <= INLINE_CAP {
            return Str(Repr::Inline(Inline::new(text)));
        }
        Str::shared(text)
    }

    /// A string with a copy of `text` in a shared allocation.
    #[inline(never)]
    fn shared(text: &str) -> Str {
        Str(Repr::Heap(Arc::from(text)))
    }

    /// A string of a static text, never copied.
    #[inline(always)]
    pub const fn new_static(text: &'static str) -> Str {
        Str(Repr::Static(text))
    }

    /// Its text.
    #[inline(always)]
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Inline(inline) => inline.as_str(),
            Repr::Static(text) => text,
            Repr::Heap(text) => text,
        }
    }

    /// Its length in bytes.
    #[inline(always)]
    pub fn len(&self) -> usize {
        self.as_str().len()
    }

    /// Whether it is empty.
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether its text is in a shared allocation (longer than 23 bytes and not static).
    pub fn is_heap_allocated(&self) -> bool {
        matches!(self.0, Repr::Heap(_))
    }
}

impl Default for Str {
    fn default() -> Str {
        Str::new_static("")
    }
}

impl Deref for Str {
    type Target = str;

    #[inline(always)]
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Str {
    #[inline(always)]
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<[u8]> for Str {
    fn as_ref(&self) -> &[u8] {
        self.as_str().as_bytes()
    }
}

impl Borrow<str> for Str {
    #[inline(always)]
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for Str {
    #[inline(always)]
    fn eq(&self, other: &Str) -> bool {
        // Two inline texts are equal exactly when their words are: the bytes after the text are
        // zero and the length is the last byte. Three word compares instead of a `memcmp` call,
        // which a `HashMap<Str, _>` lookup by a `Str` makes for every hit.
        if let (Repr::Inline(a), Repr::Inline(b)) = (&self.0, &other.0) {
            return a.words() == b.words();
        }
        self.as_str() == other.as_str()
    }
}

impl Eq for Str {}

impl PartialOrd for Str {
    fn partial_cmp(&self, other: &Str) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Str {
    fn cmp(&self, other: &Str) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl Hash for Str {
    #[inline(always)]
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

/// Comparisons with the other string types, both ways round.
macro_rules! eq_with {
    ($($other:ty),*) => {$(
        impl PartialEq<$other> for Str {
            fn eq(&self, other: &$other) -> bool {
                self.as_str() == AsRef::<str>::as_ref(other)
            }
        }

        impl PartialEq<Str> for $other {
            fn eq(&self, other: &Str) -> bool {
                AsRef::<str>::as_ref(self) == other.as_str()
            }
        }
    )*};
}

eq_with!(str, &str, String, &String);

impl fmt::Debug for Str {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Str {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl From<&str> for Str {
    #[inline]
    fn from(text: &str) -> Str {
        Str::new(text)
    }
}

impl From<&mut str> for Str {
    fn from(text: &mut str) -> Str {
        Str::new(text)
    }
}

impl From<&String> for Str {
    fn from(text: &String) -> Str {
        Str::new(text)
    }
}

impl From<String> for Str {
    fn from(text: String) -> Str {
        if text.len() <= INLINE_CAP {
            return Str::new(text);
        }
        Str(Repr::Heap(Arc::from(text.into_boxed_str())))
    }
}

impl From<Box<str>> for Str {
    fn from(text: Box<str>) -> Str {
        if text.len() <= INLINE_CAP {
            return Str::new(text);
        }
        Str(Repr::Heap(Arc::from(text)))
    }
}

impl From<Arc<str>> for Str {
    fn from(text: Arc<str>) -> Str {
        if text.len() <= INLINE_CAP {
            return Str::new(text);
        }
        Str(Repr::Heap(text))
    }
}

impl From<Cow<'_, str>> for Str {
    fn from(text: Cow<'_, str>) -> Str {
        match text {
            Cow::Borrowed(text) => Str::new(text),
            Cow::Owned(text) => Str::from(text),
        }
    }
}

impl From<Str> for String {
    fn from(text: Str) -> String {
        text.as_str().to_owned()
    }
}

impl From<Str> for Arc<str> {
    fn from(text: Str) -> Arc<str> {
        match text.0 {
            Repr::Heap(text) => text,
            _ => Arc::from(text.as_str()),
        }
    }
}

impl FromStr for Str {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Str, Self::Err> {
        Ok(Str::new(text))
    }
}

impl FromIterator<char> for Str {
    fn from_iter<I: IntoIterator<Item = char>>(iter: I) -> Str {
        Str::from(iter.into_iter().collect::<String>())
    }
}

impl<'a> FromIterator<&'a str> for Str {
    fn from_iter<I: IntoIterator<Item = &'a str>>(iter: I) -> Str {
        Str::from(iter.into_iter().collect::<String>())
    }
}

impl FromIterator<String> for Str {
    fn from_iter<I: IntoIterator<Item = String>>(iter: I) -> Str {
        Str::from(iter.into_iter().collect::<String>())
    }
}

impl serde::Serialize for Str {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Str {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Str, D::Error> {
        struct Visitor;

        impl serde::de::Visitor<'_> for Visitor {
            type Value = Str;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Str, E> {
                Ok(Str::new(text))
            }

            fn visit_string<E: serde::de::Error>(self, text: String) -> Result<Str, E> {
                Ok(Str::from(text))
            }

            fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Str, E> {
                match std::str::from_utf8(bytes) {
                    Ok(text) => Ok(Str::new(text)),
                    Err(_) => Err(E::invalid_value(serde::de::Unexpected::Bytes(bytes), &self)),
                }
            }
        }

        deserializer.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::hash::BuildHasher;

    use super::*;

    #[test]
    fn every_length_reads_back_its_text() {
        let source = "abcdefghijklmnopqrstuvwxyz0123456789é→ü";
        for end in (0..=source.len()).filter(|&i| source.is_char_boundary(i)) {
            for start in (0..=end).filter(|&i| source.is_char_boundary(i)) {
                let text = &source[start..end];
                let s = Str::new(text);
                assert_eq!(s.as_str(), text);
                assert_eq!(s.len(), text.len());
                assert_eq!(s.is_heap_allocated(), text.len() > INLINE_CAP, "{text:?}");
                assert_eq!(Str::from(text.to_owned()).as_str(), text);
                assert_eq!(Str::from(Arc::<str>::from(text)).as_str(), text);
                assert_eq!(s.clone(), s);
            }
        }
    }

    #[test]
    fn strings_of_every_kind_stay_24_bytes_and_so_does_a_value() {
        assert_eq!(std::mem::size_of::<Str>(), 24);
        assert_eq!(std::mem::size_of::<Option<Str>>(), 24);
        assert_eq!(std::mem::size_of::<crate::Value>(), 24);
    }

    #[test]
    fn compares_orders_and_hashes_as_its_text() {
        let (a, b) = (Str::new("apple"), Str::new_static("apple"));
        let long = Str::new("apple, and a string longer than 23 bytes");
        assert_eq!(a, b);
        let (text, owned) = ("apple", String::from("apple"));
        assert_eq!(a, text);
        assert_eq!(text, a);
        assert_eq!(a, *text);
        assert_eq!(a, owned);
        assert_eq!(owned, a);
        assert!(a < long && long < Str::new("b"));
        let hasher = std::hash::RandomState::new();
        assert_eq!(hasher.hash_one(&a), hasher.hash_one("apple"));
        assert_eq!(hasher.hash_one(&long), hasher.hash_one(long.as_str()));
        let mut counts: HashMap<Str, u64> = HashMap::new();
        counts.insert(a, 1);
        assert_eq!(counts.get("apple"), Some(&1));
        assert_eq!(format!("{b} {b:?}"), "apple \"apple\"");
        assert_eq!(Str::default(), "");
    }

    #[test]
    fn inline_texts_compare_by_their_words_and_agree_with_every_kind() {
        let source = "abcdefghijklmnopqrstuvw";
        for i in 0..=source.len() {
            for j in 0..=source.len() {
                let (x, y) = (&source[..i], &source[..j]);
                assert_eq!(Str::new(x) == Str::new(y), x == y, "{x:?} {y:?}");
            }
        }
        // Same length, one byte apart, at the start, the middle and the last text byte.
        for at in [0, 11, 22] {
            let mut other = source.as_bytes().to_vec();
            other[at] = b'_';
            let other = std::str::from_utf8(&other).expect("ascii");
            assert_ne!(Str::new(source), Str::new(other));
        }
        // Equal texts are equal whichever way they are stored.
        let long = "a text longer than 23 bytes, shared";
        let heap = Str::new(long);
        assert!(heap.is_heap_allocated());
        assert_eq!(heap, Str::new_static(long));
        assert_eq!(Str::new_static(long), heap);
        assert_ne!(heap, Str::new(&long[..23]));
        assert_eq!(Str::new_static("apple"), Str::new("apple"));
        assert_eq!(Str::new("apple"), Str::new_static("apple"));
        assert_ne!(Str::new("apple"), Str::new_static("apples"));
    }

    #[test]
    fn serializes_as_a_string() {
        let s = Str::new("héllo");
        let json = serde_json::to_string(&s).expect("serializes");
        assert_eq!(json, "\"héllo\"");
        let back: Str = serde_json::from_str(&json).expect("deserializes");
        assert_eq!(back, s);
        let long: Str = serde_json::from_str("\"a string longer than twenty-three bytes\"").expect("deserializes");
        assert_eq!(long, "a string longer than twenty-three bytes");
        assert!(serde_json::from_str::<Str>("12").is_err());
    }
}

//! The JSON reader of one event: the text → a [`Document`] of the fields validation looks at.
//!
//! It accepts exactly what `serde_json` accepts (RFC 8259, nesting below 128 levels, numbers that
//! fit `f64`, strings without raw control characters and with paired surrogate escapes) and
//! refuses, in addition, a duplicate key in any object. What it keeps goes into fixed slots: the
//! top-level fields of wire format v1, and the fields of `item`, `applicant` and `actor` when
//! they are objects. Every other value is checked and dropped, so reading builds no tree and
//! allocates nothing for a usual event. Strings are borrowed from the text; the rare string
//! with a backslash escape, and a number with a fraction, an exponent or more than 19 digits,
//! are handed to `serde_json` itself, so the grammar's corners stay serde's.
//!
//! `event/reference.rs` (tests only) reads through a `serde_json` tree instead and must agree
//! with this reader on every input; a property test holds them to it.

use std::borrow::Cow;

/// A JSON value as far as validation needs it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Json<'a> {
    Null,
    Bool(bool),
    /// A number written without fraction or exponent that fits `i64`.
    Int(i64),
    /// Any other number.
    Number,
    Str(Cow<'a, str>),
    Array,
    /// An object: for `item`, `applicant` and `actor` at the top level its fields are in the
    /// document's slots for it; any other object is checked and dropped.
    Object,
}

/// The text is not one well-formed JSON object without duplicate keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed;

/// The objects whose fields are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    Top,
    Item,
    Applicant,
    Actor,
}

/// Every top-level field any event type reads, each with its slot.
const TOP_KEYS: [&str; 30] = [
    "version",
    "event_id",
    "case_id",
    "type",
    "occurred_at",
    "recorded_at",
    "source",
    "center_id",
    "window_id",
    "department",
    "item_code",
    "channel",
    "applicant",
    "item",
    "reason",
    "step",
    "result",
    "approved_days",
    "extra_days",
    "amount_cents",
    "standard_cents",
    "outcome",
    "on_site",
    "rating",
    "is_default",
    "action",
    "kind",
    "actor",
    "note",
    "response_days",
];
const ITEM_KEYS: [&str; 6] = [
    "code",
    "name",
    "kind",
    "promised_days",
    "legal_days",
    "day_unit",
];
const APPLICANT_KEYS: [&str; 2] = ["kind", "id_hash"];
const ACTOR_KEYS: [&str; 2] = ["id", "role"];

/// A perfect hash of the top-level keys (length and three bytes): one probe and one
/// comparison find a key's slot, or that it has none. A collision fails the build.
const TOP_TABLE_SIZE: usize = 64;
const EMPTY: u8 = u8::MAX;

const fn key_hash(b: &[u8]) -> usize {
    let n = b.len();
    if n == 0 {
        return 0;
    }
    (n + b[0] as usize * 12 + b[n - 1] as usize * 2 + b[n / 2] as usize * 10) % TOP_TABLE_SIZE
}

const TOP_TABLE: [u8; TOP_TABLE_SIZE] = {
    let mut table = [EMPTY; TOP_TABLE_SIZE];
    let mut k = 0;
    while k < TOP_KEYS.len() {
        let h = key_hash(TOP_KEYS[k].as_bytes());
        assert!(table[h] == EMPTY, "two top-level keys share a hash");
        table[h] = k as u8;
        k += 1;
    }
    table
};

/// The index of `key` in `keys`, at compile time.
const fn position(keys: &[&str], key: &str) -> usize {
    let mut k = 0;
    while k < keys.len() {
        if same_bytes(keys[k].as_bytes(), key.as_bytes()) {
            return k;
        }
        k += 1;
    }
    panic!("not a field validation reads")
}

const fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// `a == b` for the short strings of keys, without a call to `memcmp`.
#[inline]
fn same_short(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let word = |s: &[u8], at: usize| u64::from_le_bytes(s[at..at + 8].try_into().unwrap_or([0; 8]));
    match n {
        8..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        _ => a == b,
    }
}

/// A field validation reads: where its value is, and the path its reasons name.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field {
    layout: Layout,
    slot: usize,
    pub(crate) path: &'static str,
}

impl Field {
    /// `object` is `""` for a top-level field, else `item`, `applicant` or `actor`; a name
    /// that is not a slot fails the build (see [`field!`]).
    pub(crate) const fn new(object: &str, key: &str, path: &'static str) -> Field {
        let (layout, keys): (Layout, &[&str]) = if same_bytes(object.as_bytes(), b"item") {
            (Layout::Item, &ITEM_KEYS)
        } else if same_bytes(object.as_bytes(), b"applicant") {
            (Layout::Applicant, &APPLICANT_KEYS)
        } else if same_bytes(object.as_bytes(), b"actor") {
            (Layout::Actor, &ACTOR_KEYS)
        } else {
            (Layout::Top, &TOP_KEYS)
        };
        Field {
            layout,
            slot: position(keys, key),
            path,
        }
    }
}

/// A [`Field`] by its path, resolved at compile time: `field!(event_id)`, `field!(item.code)`.
macro_rules! field {
    ($object:ident . $key:tt) => {
        const {
            $crate::core::event::reader::Field::new(
                stringify!($object),
                stringify!($key),
                concat!(stringify!($object), ".", stringify!($key)),
            )
        }
    };
    ($key:tt) => {
        const { $crate::core::event::reader::Field::new("", stringify!($key), stringify!($key)) }
    };
}
pub(crate) use field;

impl Layout {
    /// The slot of `key` in this object, if validation reads it.
    pub(crate) fn slot(self, key: &str) -> Option<usize> {
        match self {
            Layout::Top => {
                let k = TOP_TABLE[key_hash(key.as_bytes())];
                let k = usize::from(k);
                (k < TOP_KEYS.len() && same_short(TOP_KEYS[k].as_bytes(), key.as_bytes()))
                    .then_some(k)
            }
            Layout::Item => ITEM_KEYS.iter().position(|k| *k == key),
            Layout::Applicant => APPLICANT_KEYS.iter().position(|k| *k == key),
            Layout::Actor => ACTOR_KEYS.iter().position(|k| *k == key),
        }
    }

    /// The layout of the object value kept for this object's `slot`, if it has one.
    pub(crate) fn nested(self, slot: usize) -> Option<Layout> {
        const ITEM: usize = position(&TOP_KEYS, "item");
        const APPLICANT: usize = position(&TOP_KEYS, "applicant");
        const ACTOR: usize = position(&TOP_KEYS, "actor");
        match (self, slot) {
            (Layout::Top, ITEM) => Some(Layout::Item),
            (Layout::Top, APPLICANT) => Some(Layout::Applicant),
            (Layout::Top, ACTOR) => Some(Layout::Actor),
            _ => None,
        }
    }
}

/// The kept fields of one event; `None` is a field the text does not have.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Document<'a> {
    top: [Option<Json<'a>>; 30],
    item: [Option<Json<'a>>; 6],
    applicant: [Option<Json<'a>>; 2],
    actor: [Option<Json<'a>>; 2],
}

impl<'a> Document<'a> {
    /// A field's value as written (JSON `null` included).
    pub(crate) fn field(&self, field: Field) -> Option<&Json<'a>> {
        self.slots(field.layout)[field.slot].as_ref()
    }

    /// The slots of one object.
    pub(crate) fn slots(&self, layout: Layout) -> &[Option<Json<'a>>] {
        match layout {
            Layout::Top => &self.top,
            Layout::Item => &self.item,
            Layout::Applicant => &self.applicant,
            Layout::Actor => &self.actor,
        }
    }

    pub(crate) fn slots_mut(&mut self, layout: Layout) -> &mut [Option<Json<'a>>] {
        match layout {
            Layout::Top => &mut self.top,
            Layout::Item => &mut self.item,
            Layout::Applicant => &mut self.applicant,
            Layout::Actor => &mut self.actor,
        }
    }
}

/// Reads `text` into `doc` (which must be empty).
pub(crate) fn read<'a>(text: &'a str, doc: &mut Document<'a>) -> Result<(), Malformed> {
    let mut r = Reader {
        text,
        bytes: text.as_bytes(),
        at: 0,
    };
    if r.peek_past_whitespace() != Some(b'{') {
        return Err(Malformed);
    }
    r.at += 1;
    r.object_into(1, Layout::Top, doc)?;
    match r.peek_past_whitespace() {
        None => Ok(()),
        Some(_) => Err(Malformed),
    }
}

/// `serde_json`'s nesting limit: the 128th level of arrays and objects is refused.
const MAX_DEPTH: u32 = 128;

/// Duplicate detection among the keys of one object that have no slot: a scan of the few
/// an object usually has, a hash set once it has more.
#[derive(Default)]
struct SeenKeys<'a> {
    few: Vec<Cow<'a, str>>,
    many: Option<hashbrown::HashSet<Cow<'a, str>>>,
}

impl<'a> SeenKeys<'a> {
    /// Scanned below this many keys.
    const SCAN: usize = 16;

    /// Records `key`; false if the object had it already.
    fn insert(&mut self, key: Cow<'a, str>) -> bool {
        if let Some(set) = &mut self.many {
            return set.insert(key);
        }
        if self.few.contains(&key) {
            return false;
        }
        self.few.push(key);
        if self.few.len() >= Self::SCAN {
            self.many = Some(self.few.drain(..).collect());
        }
        true
    }
}

struct Reader<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn peek_past_whitespace(&mut self) -> Option<u8> {
        while let Some(&c) = self.bytes.get(self.at) {
            if !matches!(c, b' ' | b'\n' | b'\t' | b'\r') {
                return Some(c);
            }
            self.at += 1;
        }
        None
    }

    /// Consumes `c` after optional whitespace.
    fn expect(&mut self, c: u8) -> Result<(), Malformed> {
        if self.peek_past_whitespace() == Some(c) {
            self.at += 1;
            Ok(())
        } else {
            Err(Malformed)
        }
    }

    /// The members of an object whose `{` was consumed, into `layout`'s slots.
    fn object_into(
        &mut self,
        depth: u32,
        layout: Layout,
        doc: &mut Document<'a>,
    ) -> Result<(), Malformed> {
        let mut unknown = SeenKeys::default();
        self.members(b'}', |r| {
            let key = r.key()?;
            let Some(i) = layout.slot(&key) else {
                return match unknown.insert(key) {
                    true => r.value(depth).map(drop),
                    false => Err(Malformed),
                };
            };
            if doc.slots(layout)[i].is_some() {
                return Err(Malformed);
            }
            let value = match layout.nested(i) {
                Some(inner) if r.peek_past_whitespace() == Some(b'{') => {
                    r.at += 1;
                    r.object_into(deeper(depth)?, inner, doc)?;
                    Json::Object
                }
                _ => r.value(depth)?,
            };
            doc.slots_mut(layout)[i] = Some(value);
            Ok(())
        })
    }

    /// The members of a container whose opening bracket was consumed, each read by `member`,
    /// separated by commas, up to `close`.
    fn members(
        &mut self,
        close: u8,
        mut member: impl FnMut(&mut Self) -> Result<(), Malformed>,
    ) -> Result<(), Malformed> {
        if self.peek_past_whitespace() == Some(close) {
            self.at += 1;
            return Ok(());
        }
        loop {
            member(self)?;
            match self.peek_past_whitespace() {
                Some(b',') => self.at += 1,
                Some(c) if c == close => {
                    self.at += 1;
                    return Ok(());
                }
                _ => return Err(Malformed),
            }
        }
    }

    /// An object member's key and its colon.
    fn key(&mut self) -> Result<Cow<'a, str>, Malformed> {
        if self.peek_past_whitespace() != Some(b'"') {
            return Err(Malformed);
        }
        let key = self.string()?;
        self.expect(b':')?;
        Ok(key)
    }

    /// Any value, inside a container at `depth`.
    fn value(&mut self, depth: u32) -> Result<Json<'a>, Malformed> {
        match self.peek_past_whitespace() {
            Some(b'"') => Ok(Json::Str(self.string()?)),
            Some(b'{') => {
                self.at += 1;
                self.skip_object(deeper(depth)?)?;
                Ok(Json::Object)
            }
            Some(b'[') => {
                self.at += 1;
                self.skip_array(deeper(depth)?)?;
                Ok(Json::Array)
            }
            Some(b't') => self.literal(b"true", Json::Bool(true)),
            Some(b'f') => self.literal(b"false", Json::Bool(false)),
            Some(b'n') => self.literal(b"null", Json::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(Malformed),
        }
    }

    fn literal(&mut self, word: &[u8], value: Json<'a>) -> Result<Json<'a>, Malformed> {
        if self.bytes[self.at..].starts_with(word) {
            self.at += word.len();
            Ok(value)
        } else {
            Err(Malformed)
        }
    }

    /// An object that is checked (grammar, duplicate keys) and dropped; `{` was consumed.
    fn skip_object(&mut self, depth: u32) -> Result<(), Malformed> {
        let mut keys = SeenKeys::default();
        self.members(b'}', |r| {
            let key = r.key()?;
            match keys.insert(key) {
                true => r.value(depth).map(drop),
                false => Err(Malformed),
            }
        })
    }

    /// An array whose `[` was consumed: its elements are checked and dropped.
    fn skip_array(&mut self, depth: u32) -> Result<(), Malformed> {
        self.members(b']', |r| r.value(depth).map(drop))
    }

    /// A string at its opening quote: borrowed when it has no escape.
    fn string(&mut self) -> Result<Cow<'a, str>, Malformed> {
        let open = self.at;
        let mut i = open + 1;
        // Eight bytes at a time up to the first that is a quote, a backslash or a control.
        while let Some(chunk) = self.bytes.get(i..i + 8) {
            let special = special_bytes(u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8])));
            if special != 0 {
                i += special.trailing_zeros() as usize / 8;
                break;
            }
            i += 8;
        }
        loop {
            match *self.bytes.get(i).ok_or(Malformed)? {
                b'"' => {
                    self.at = i + 1;
                    return Ok(Cow::Borrowed(&self.text[open + 1..i]));
                }
                b'\\' => return self.escaped_string(open, i),
                c if c < 0x20 => return Err(Malformed),
                _ => i += 1,
            }
        }
    }

    /// A string with an escape at `first_escape`: its extent is found here, its decoding and
    /// the escape rules (surrogate pairs included) are `serde_json`'s.
    #[cold]
    fn escaped_string(
        &mut self,
        open: usize,
        first_escape: usize,
    ) -> Result<Cow<'a, str>, Malformed> {
        let mut i = first_escape;
        loop {
            match *self.bytes.get(i).ok_or(Malformed)? {
                b'"' => break,
                b'\\' => i += 2,
                c if c < 0x20 => return Err(Malformed),
                _ => i += 1,
            }
        }
        let token = self.text.get(open..=i).ok_or(Malformed)?;
        let decoded: String = serde_json::from_str(token).map_err(|_| Malformed)?;
        self.at = i + 1;
        Ok(Cow::Owned(decoded))
    }

    /// A number at its first character (`-` or a digit).
    fn number(&mut self) -> Result<Json<'a>, Malformed> {
        let start = self.at;
        let b = self.bytes;
        let digits = |mut i: usize| {
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            i
        };
        let negative = b[start] == b'-';
        let int_start = start + usize::from(negative);
        let int_end = match b.get(int_start) {
            Some(b'0') if b.get(int_start + 1).is_some_and(u8::is_ascii_digit) => {
                return Err(Malformed)
            }
            Some(b'0') => int_start + 1,
            Some(b'1'..=b'9') => digits(int_start + 1),
            _ => return Err(Malformed),
        };
        let mut end = int_end;
        if b.get(end) == Some(&b'.') {
            let after = digits(end + 1);
            if after == end + 1 {
                return Err(Malformed);
            }
            end = after;
        }
        if matches!(b.get(end), Some(b'e' | b'E')) {
            let sign = usize::from(matches!(b.get(end + 1), Some(b'+' | b'-')));
            let after = digits(end + 1 + sign);
            if after == end + 1 + sign {
                return Err(Malformed);
            }
            end = after;
        }
        self.at = end;
        if end == int_end && int_end - int_start <= 19 {
            let magnitude = b[int_start..int_end]
                .iter()
                .fold(0u64, |v, d| v * 10 + u64::from(d - b'0'));
            return Ok(integer(negative, magnitude));
        }
        // A fraction, an exponent or a long integer: valid unless it overflows `f64`, as
        // serde decides; never an `Int`.
        serde_json::from_str::<f64>(&self.text[start..end]).map_err(|_| Malformed)?;
        Ok(Json::Number)
    }
}

/// The high bit of every byte of `w` that is `"`, `\` or below 0x20 (exact up to the first
/// such byte, which is all the caller uses: a borrow can only mark bytes above it).
fn special_bytes(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |v: u64| v.wrapping_sub(ONES) & !v;
    let quote = w ^ (ONES * u64::from(b'"'));
    let backslash = w ^ (ONES * u64::from(b'\\'));
    let control = w.wrapping_sub(ONES * 0x20) & !w;
    (zero_byte(quote) | zero_byte(backslash) | control) & HIGH
}

/// An integer of at most 19 digits as `serde_json` reports it: `Int` when it fits `i64`, and
/// `-0` is a float.
fn integer(negative: bool, magnitude: u64) -> Json<'static> {
    if negative {
        let value = (magnitude as i64).wrapping_neg();
        if value >= 0 {
            Json::Number
        } else {
            Json::Int(value)
        }
    } else {
        i64::try_from(magnitude).map_or(Json::Number, Json::Int)
    }
}

/// The depth of a container opened at `depth`, or the nesting limit's refusal.
fn deeper(depth: u32) -> Result<u32, Malformed> {
    if depth + 1 >= MAX_DEPTH {
        Err(Malformed)
    } else {
        Ok(depth + 1)
    }
}

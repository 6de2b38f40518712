//! The reference reader for tests: the event's JSON read into a `serde_json` tree (the
//! reader this crate used before `reader.rs`), then sorted into the same [`Document`]. The
//! property tests below hold `reader::read` to the same verdict and the same document on
//! valid events, mutated events and generated JSON with every corner of the grammar.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::reader::{Document, Json, Layout, Malformed};

/// `text` read through a `serde_json` tree.
pub(super) fn read(text: &str) -> Result<Document<'_>, Malformed> {
    let Tree::Object(fields) = serde_json::from_str(text).map_err(|_| Malformed)? else {
        return Err(Malformed);
    };
    let mut doc = Document::default();
    sort_into(&mut doc, Layout::Top, fields);
    Ok(doc)
}

/// The fields of an object into `layout`'s slots; nested kept objects into theirs.
fn sort_into<'a>(doc: &mut Document<'a>, layout: Layout, fields: Vec<(Cow<'a, str>, Tree<'a>)>) {
    for (key, value) in fields {
        let Some(slot) = layout.slot(&key) else {
            continue;
        };
        let value = match (value, layout.nested(slot)) {
            (Tree::Object(inner), Some(nested)) => {
                sort_into(doc, nested, inner);
                Json::Object
            }
            (value, _) => value.kept(),
        };
        doc.slots_mut(layout)[slot] = Some(value);
    }
}

impl<'a> Tree<'a> {
    /// What a slot keeps of a value.
    fn kept(self) -> Json<'a> {
        match self {
            Tree::Null => Json::Null,
            Tree::Bool(b) => Json::Bool(b),
            Tree::Int(v) => Json::Int(v),
            Tree::Number => Json::Number,
            Tree::Str(s) => Json::Str(s),
            Tree::Array => Json::Array,
            Tree::Object(_) => Json::Object,
        }
    }
}

/// A JSON value as far as validation needs it: strings borrowed where possible, integers
/// distinguished from other numbers, duplicate object keys refused while parsing.
#[derive(Debug)]
pub(super) enum Tree<'a> {
    Null,
    Bool(bool),
    /// A number written without fraction or exponent that fits `i64`.
    Int(i64),
    /// Any other number.
    Number,
    Str(Cow<'a, str>),
    Array,
    Object(Vec<(Cow<'a, str>, Tree<'a>)>),
}

impl<'de> Deserialize<'de> for Tree<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Tree<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Tree::Null)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Tree::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Tree::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Tree::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(i64::try_from(v).map_or(Tree::Number, Tree::Int))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Tree::Number)
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Tree::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Tree::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Tree::Str(Cow::Owned(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        // Elements are parsed (to catch duplicate keys inside them) but not kept.
        while seq.next_element::<Tree<'de>>()?.is_some() {}
        Ok(Tree::Array)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields: Vec<(Cow<'de, str>, Tree<'de>)> = Vec::with_capacity(16);
        let mut keys = KeySet::default();
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            if !keys.insert(&key, fields.iter().map(|(k, _)| k)) {
                return Err(de::Error::custom("duplicate key"));
            }
            let value = map.next_value::<Tree<'de>>()?;
            fields.push((key, value));
        }
        Ok(Tree::Object(fields))
    }
}

/// Duplicate-key detection in linear time: a scan of the few keys an object usually has,
/// a hash set once it has more.
#[derive(Default)]
struct KeySet {
    large: Option<hashbrown::HashSet<String>>,
}

impl KeySet {
    /// Scanned below this many keys.
    const SCAN: usize = 16;

    /// Records `key` after `before` (the object's keys so far); false if it is a duplicate.
    fn insert<'k>(
        &mut self,
        key: &str,
        before: impl ExactSizeIterator<Item = &'k Cow<'k, str>>,
    ) -> bool {
        if let Some(set) = &mut self.large {
            return set.insert(key.to_string());
        }
        if before.len() < Self::SCAN {
            let mut before = before;
            return !before.any(|k| k == key);
        }
        let mut set: hashbrown::HashSet<String> = before.map(|k| k.to_string()).collect();
        let fresh = set.insert(key.to_string());
        self.large = Some(set);
        fresh
    }
}

/// An object key, borrowed from the input when it has no escapes (serde's own `Cow<str>`
/// always allocates).
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Key(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Key(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Key(Cow::Owned(v)))
    }
}

#[cfg(test)]
mod tests {
    use super::super::reader;
    use super::*;
    use proptest::prelude::*;

    /// Both readers' verdicts and documents on `text`.
    fn agree(text: &str) -> Result<(), TestCaseError> {
        let mut doc = Document::default();
        let new = reader::read(text, &mut doc).map(|()| doc);
        let reference = read(text);
        prop_assert_eq!(&new, &reference, "text: {:?}", text);
        Ok(())
    }

    fn verdict(text: &str) -> bool {
        agree(text).unwrap();
        read(text).is_ok()
    }

    const EVENTS: [&str; 3] = [
        r#"{"version":1,"event_id":"e1","case_id":"c1","type":"accepted","occurred_at":"2018-10-15T10:00:00+08:00","source":"hall","center_id":"C1","window_id":"W1","department":"市场监管局","item":{"code":"I1","name":"营业执照","kind":"promised","promised_days":7,"legal_days":20},"applicant":{"kind":"person","id_hash":"ab12"},"channel":"window"}"#,
        r#"{"version":1,"event_id":"e2","case_id":"c1","type":"supervision","occurred_at":"2018-10-16T10:00:00Z","source":"supervision","center_id":"C1","action":"order","kind":"overdue","actor":{"id":"sup","role":"supervisor"},"note":"请于两日内答复\n谢谢","response_days":2,"extra":[1,{"x":null}]}"#,
        r#" { "version" : 1 , "event_id" : "e\u0033" , "case_id" : "c1" , "type" : "completed" , "occurred_at" : "2018-10-17T10:00:00.5-05:00" , "source" : "department" , "center_id" : "C1" , "outcome" : "approved" , "on_site" : true , "amount_cents" : -0 , "rating" : 1.5e3 } "#,
    ];

    #[test]
    fn the_grammar_corners_get_serdes_verdicts() {
        let nest = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        let with = |extra: &str| format!(r#"{{"version":1,"x":{extra}}}"#);
        // The top object is level 1: 126 arrays inside it reach level 127, 127 reach 128.
        assert!(verdict(&with(&nest(126))));
        assert!(!verdict(&with(&nest(127))));
        for (extra, ok) in [
            ("1e400", false),
            ("-1e400", false),
            ("1e-400", true),
            (&"9".repeat(400), false),
            (&"9".repeat(300), true),
            ("18446744073709551615", true),
            ("18446744073709551616", true),
            ("-9223372036854775808", true),
            ("-9223372036854775809", true),
            ("-0", true),
            ("01", false),
            ("-", false),
            ("1.", false),
            (".5", false),
            ("1e", false),
            ("1e+", false),
            ("+1", false),
            ("NaN", false),
            ("Infinity", false),
            ("tru", false),
            ("nulll", false),
            (r#""\ud83d\ude00""#, true),
            (r#""\ud800""#, false),
            (r#""\udc00""#, false),
            (r#""\ud800\u0041""#, false),
            (r#""\x""#, false),
            (r#""\u12""#, false),
            ("\"a\u{1}b\"", false),
            ("\"a\u{7f}b\"", true),
            (r#"{"a":1,"a":2}"#, false),
            (r#"{"a":1,"\u0061":2}"#, false),
            (r#"[1,]"#, false),
            (r#"{"a":1,}"#, false),
            (r#"{,}"#, false),
            ("[1 2]", false),
        ] {
            assert_eq!(verdict(&with(extra)), ok, "{extra}");
        }
        for text in [
            "",
            " ",
            "[]",
            "1",
            "\u{feff}{}",
            "{}",
            "{} x",
            "{}\n",
            r#"{"version":1,"version":1}"#,
            r#"{"ver\u0073ion":1,"version":1}"#,
            r#"{"item":{"kind":1,"kind":2}}"#,
            r#"{"item":1,"item":{}}"#,
            r#"{"item":{"code":"a"},"applicant":[],"actor":{"id":{"role":1}}}"#,
        ] {
            agree(text).unwrap();
        }
    }

    /// Pieces that make the grammar's corners when spliced into an event.
    const SNIPPETS: [&str; 24] = [
        "\\u00e9",
        "\\ud83d\\ude00",
        "\\ud800",
        "\\",
        "\"",
        "1e400",
        "-0",
        "01",
        "1.5",
        "[[",
        "]]",
        "{}",
        "{",
        "}",
        ",",
        ":",
        " ",
        "\u{1}",
        "null",
        "\"item\":{\"kind\":1},",
        "\"x\":1,\"x\":2,",
        "\"version\":1,",
        "é",
        "9999999999999999999",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn both_readers_agree_on_mutated_events(
            which in 0usize..EVENTS.len(),
            edits in proptest::collection::vec((any::<usize>(), 0usize..4, any::<u8>(), 0usize..SNIPPETS.len()), 1..4),
        ) {
            let mut text = EVENTS[which].to_string();
            for (at, how, byte, snippet) in edits {
                let boundaries: Vec<usize> = (0..=text.len()).filter(|i| text.is_char_boundary(*i)).collect();
                let at = boundaries[at % boundaries.len()];
                match how {
                    0 => text.insert_str(at, SNIPPETS[snippet]),
                    1 => {
                        let end = boundaries.iter().copied().find(|e| *e > at).unwrap_or(at);
                        text.replace_range(at..end, "");
                    }
                    2 => text.insert(at, char::from(byte & 0x7f)),
                    _ => text.truncate(at),
                }
            }
            agree(&text)?;
        }

        #[test]
        fn both_readers_agree_on_generated_json(value in json_value(), spaces in any::<bool>()) {
            let text = if spaces { format!("\t{value} \n") } else { value };
            agree(&text)?;
        }
    }

    /// JSON-like text built from keys validation reads and keys it does not, with every kind
    /// of number and string, nested, sometimes with a key twice.
    fn json_value() -> impl Strategy<Value = String> {
        let keys = prop::sample::select(vec![
            "version",
            "type",
            "item",
            "applicant",
            "actor",
            "kind",
            "code",
            "id",
            "role",
            "promised_days",
            "x",
            "",
            "ver\\u0073ion",
            "ité",
        ]);
        let leaf = prop::sample::select(vec![
            "1",
            "-1",
            "0",
            "-0",
            "7.0",
            "1e3",
            "1E-2",
            "12345678901234567890",
            "-9223372036854775808",
            "true",
            "false",
            "null",
            "\"\"",
            "\"abc\"",
            "\"a\\\"b\"",
            "\"\\u00e9\"",
            "\"\\ud83d\\ude00\"",
            "\"\\udc00\"",
            "\"多字节\"",
            "1e309",
            "[]",
            "{}",
        ])
        .prop_map(str::to_string);
        leaf.prop_recursive(5, 40, 6, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5)
                    .prop_map(|items| format!("[{}]", items.join(","))),
                proptest::collection::vec((keys.clone(), inner), 0..6).prop_map(|members| {
                    let body: Vec<String> = members
                        .iter()
                        .map(|(k, v)| format!("\"{k}\": {v}"))
                        .collect();
                    format!("{{{}}}", body.join(","))
                }),
            ]
        })
    }
}

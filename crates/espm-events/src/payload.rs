//! An event's `data` as the JSON text it was encoded to once.
//!
//! The normalizer encodes a typed struct straight to text; the journal stores that text inside the
//! event's line; a sink reads it back by validating it, not by building a tree, and writes the
//! same bytes to the wire. Before, `data` was a `serde_json::Value` tree that was built, encoded,
//! decoded by every sink and encoded again: about a fifth of a burst's CPU (issue 9).
//!
//! Code that reads fields (`data["accountId"]`, `data.get(..)`, `data.as_object()`) still can: it
//! derefs to a `Value` parsed from the text on first use and kept with it.

use std::fmt;
use std::ops::Deref;
use std::sync::OnceLock;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::Value;

/// An event's `data`: valid JSON text, and the `Value` it holds once something asked for it.
pub struct Data {
    raw: Box<RawValue>,
    parsed: OnceLock<Value>,
}

impl Data {
    /// `data` encoded to JSON. Our data types are plain structs of strings, numbers, maps and
    /// non-NaN floats, so encoding cannot fail; `null` would flag a bug.
    pub fn of<T: Serialize + ?Sized>(data: &T) -> Data {
        serde_json::value::to_raw_value(data)
            .map(Data::from_raw)
            .unwrap_or_else(|_| Data::from_raw(null()))
    }

    /// `data` as JSON text; `Err` when it is not JSON.
    pub fn from_json(json: &str) -> Result<Data, serde_json::Error> {
        serde_json::from_str::<Box<RawValue>>(json).map(Data::from_raw)
    }

    fn from_raw(raw: Box<RawValue>) -> Data {
        Data {
            raw,
            parsed: OnceLock::new(),
        }
    }

    /// The JSON text, as it goes on the wire.
    pub fn json(&self) -> &str {
        self.raw.get()
    }

    /// The JSON value, parsed on first use.
    pub fn value(&self) -> &Value {
        // The text was valid JSON when it was made (`of`, `from_json`, deserialising).
        self.parsed
            .get_or_init(|| serde_json::from_str(self.raw.get()).unwrap_or(Value::Null))
    }

    /// The JSON value, owned.
    pub fn into_value(self) -> Value {
        match self.parsed.into_inner() {
            Some(v) => v,
            None => serde_json::from_str(self.raw.get()).unwrap_or(Value::Null),
        }
    }

    /// Changes the value and encodes it again.
    pub fn edit<R>(&mut self, f: impl FnOnce(&mut Value) -> R) -> R {
        let mut v = std::mem::take(self).into_value();
        let r = f(&mut v);
        *self = Data::from(v);
        r
    }

    /// The top-level members named `fields` of an object, in the order of `fields` (`None` for
    /// each one that is absent, and for all of them when `data` is not an object); the last one
    /// wins when a name repeats, as in a `Value`. Reads the text without building the rest (a
    /// Kafka key per event, issue 9).
    pub fn members(&self, fields: &[&str]) -> Vec<Option<Value>> {
        if let Some(v) = self.parsed.get() {
            return fields.iter().map(|f| v.get(*f).cloned()).collect();
        }
        let mut de = serde_json::Deserializer::from_str(self.raw.get());
        Picker(fields)
            .deserialize(&mut de)
            .unwrap_or_else(|_| vec![None; fields.len()])
    }
}

fn null() -> Box<RawValue> {
    RawValue::NULL.to_owned()
}

impl Default for Data {
    fn default() -> Self {
        Data::from_raw(null())
    }
}

impl From<Value> for Data {
    fn from(v: Value) -> Self {
        let d = Data::of(&v);
        let _ = d.parsed.set(v);
        d
    }
}

impl Deref for Data {
    type Target = Value;
    fn deref(&self) -> &Value {
        self.value()
    }
}

impl Clone for Data {
    fn clone(&self) -> Self {
        Data {
            raw: self.raw.clone(),
            parsed: self.parsed.clone(),
        }
    }
}

/// The JSON text, as [`fmt::Display`] shows it.
impl fmt::Debug for Data {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Equal when they hold the same JSON value (key order and spacing aside).
impl PartialEq for Data {
    fn eq(&self, other: &Self) -> bool {
        self.raw.get() == other.raw.get() || self.value() == other.value()
    }
}

impl PartialEq<Value> for Data {
    fn eq(&self, other: &Value) -> bool {
        self.value() == other
    }
}

impl PartialEq<Data> for Value {
    fn eq(&self, other: &Data) -> bool {
        other == self
    }
}

/// The JSON text.
impl fmt::Display for Data {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.raw.get())
    }
}

impl Serialize for Data {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.raw.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Data {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(deserializer).map(Data::from_raw)
    }
}

/// Reads the members named in `.0` of a top-level object and skips the rest.
struct Picker<'f>(&'f [&'f str]);

impl<'de> DeserializeSeed<'de> for Picker<'_> {
    type Value = Vec<Option<Value>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Picker<'_> {
    type Value = Vec<Option<Value>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("JSON")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = vec![None; self.0.len()];
        while let Some(i) = map.next_key_seed(Key(self.0))? {
            match i {
                Some(i) => out[i] = Some(map.next_value::<Value>()?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(out)
    }
    // Anything but an object has no members.
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(vec![None; self.0.len()])
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(vec![None; self.0.len()])
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(vec![None; self.0.len()])
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(vec![None; self.0.len()])
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(vec![None; self.0.len()])
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(vec![None; self.0.len()])
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(vec![None; self.0.len()])
    }
}

/// A member name: its index in the wanted names, or `None`; no allocation for an unescaped name.
struct Key<'f>(&'f [&'f str]);

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = Option<usize>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a member name")
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        Ok(self.0.iter().position(|f| *f == s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "[a-z\"\\\\\n é]{0,8}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-c]{1,2}|accountId", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Reading members from the text answers what the parsed value answers.
        #[test]
        fn members_agree_with_the_value(v in arb_json()) {
            let fields = ["accountId", "a", "bc", "zz"];
            let want: Vec<Option<Value>> = fields.iter().map(|f| v.get(*f).cloned()).collect();
            let text = Data::from_json(&v.to_string()).unwrap();
            prop_assert_eq!(text.members(&fields), want.clone());
            // And once parsed, from the value.
            let _ = text.value();
            prop_assert_eq!(text.members(&fields), want);
        }

        /// Text, value, wire and back: one JSON value throughout.
        #[test]
        fn the_text_round_trips(v in arb_json()) {
            let d = Data::from(v.clone());
            prop_assert_eq!(&serde_json::from_str::<Value>(d.json()).unwrap(), &v);
            let back: Data = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
            prop_assert_eq!(back.value(), &v);
            prop_assert_eq!(back, d);
        }
    }

    #[test]
    fn a_repeated_member_reads_as_a_value_reads_it() {
        let d = Data::from_json(r#"{"accountId": 1, "x": [{"accountId": 3}], "accountId": 2}"#)
            .unwrap();
        assert_eq!(d.members(&["accountId"]), vec![Some(json!(2))]);
        assert_eq!(d["accountId"], 2);
    }

    #[test]
    fn edit_changes_the_text() {
        let mut d = Data::of(&json!({"a": 1}));
        d.edit(|v| v["b"] = json!("x"));
        assert_eq!(d.json(), r#"{"a":1,"b":"x"}"#);
        assert_eq!(Data::default().json(), "null");
        assert!(Data::from_json("{").is_err());
    }
}

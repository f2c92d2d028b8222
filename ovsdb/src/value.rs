//! The OVSDB data model of RFC 7047 §5.1: atoms, sets, maps and rows, and their JSON form.
//!
//! Sets and maps are kept ordered ([`BTreeSet`]/[`BTreeMap`]) because OVSDB gives them set
//! semantics: two values are equal regardless of the order the server listed the elements in, and
//! the replica's diff application (toggle an element, replace a key) becomes a simple lookup.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{Value as Json, json};
use thiserror::Error;
use uuid::Uuid;

/// A row as exchanged with the server: column name → value.
///
/// A `BTreeMap` so that rows compare and print deterministically.
pub type Row = BTreeMap<String, Value>;

/// Why a piece of JSON is not a valid OVSDB datum.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("invalid OVSDB {what} {json}: {reason}")]
pub struct DecodeError {
    /// What was being decoded (atom, value, row, …).
    pub what: &'static str,
    /// The offending JSON, shortened so that a huge message does not end up in a log line.
    pub json: String,
    /// What is wrong with it.
    pub reason: String,
}

impl DecodeError {
    pub(crate) fn new(what: &'static str, json: &Json, reason: impl Into<String>) -> Self {
        let mut text = json.to_string();
        if text.len() > 200 {
            let mut cut = 200;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push('…');
        }
        Self {
            what,
            json: text,
            reason: reason.into(),
        }
    }
}

/// One scalar OVSDB value.
///
/// `NamedUuid` only appears in requests: it names a row inserted earlier in the same transaction
/// so that later operations can refer to it before the server has assigned its real UUID.
#[derive(Debug, Clone)]
pub enum Atom {
    /// A 64-bit signed integer.
    Integer(i64),
    /// A double-precision real.
    Real(f64),
    /// A boolean.
    Boolean(bool),
    /// A UTF-8 string.
    String(String),
    /// A row reference or other UUID.
    Uuid(Uuid),
    /// A reference to a row inserted in the same transaction under this `uuid-name`.
    NamedUuid(String),
}

impl Atom {
    /// Variant rank, so that atoms of different types have a total order (needed for sets).
    fn rank(&self) -> u8 {
        match self {
            Atom::Integer(_) => 0,
            Atom::Real(_) => 1,
            Atom::Boolean(_) => 2,
            Atom::String(_) => 3,
            Atom::Uuid(_) => 4,
            Atom::NamedUuid(_) => 5,
        }
    }

    /// The RFC 7047 JSON form.
    ///
    /// A non-finite real has no JSON form; it is encoded as `null`, which the server rejects with
    /// a syntax error rather than us silently storing something else.
    pub fn to_json(&self) -> Json {
        match self {
            Atom::Integer(i) => Json::from(*i),
            Atom::Real(r) => serde_json::Number::from_f64(*r).map_or(Json::Null, Json::Number),
            Atom::Boolean(b) => Json::Bool(*b),
            Atom::String(s) => Json::String(s.clone()),
            Atom::Uuid(u) => json!(["uuid", u.to_string()]),
            Atom::NamedUuid(n) => json!(["named-uuid", n]),
        }
    }

    /// Decodes an atom without knowing the column type: a JSON number without fraction or
    /// exponent becomes an integer, any other number a real.
    pub fn from_json(json: &Json) -> Result<Self, DecodeError> {
        match json {
            Json::Bool(b) => Ok(Atom::Boolean(*b)),
            Json::String(s) => Ok(Atom::String(s.clone())),
            Json::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Ok(Atom::Integer(i))
                } else if n.is_u64() {
                    Err(DecodeError::new(
                        "atom",
                        json,
                        "integer out of the 64-bit signed range",
                    ))
                } else {
                    n.as_f64()
                        .map(Atom::Real)
                        .ok_or_else(|| DecodeError::new("atom", json, "unrepresentable number"))
                }
            }
            Json::Array(items) => match items.as_slice() {
                [Json::String(tag), Json::String(text)] if tag == "uuid" => Uuid::parse_str(text)
                    .map(Atom::Uuid)
                    .map_err(|e| DecodeError::new("atom", json, format!("bad UUID: {e}"))),
                [Json::String(tag), Json::String(name)] if tag == "named-uuid" => {
                    Ok(Atom::NamedUuid(name.clone()))
                }
                _ => Err(DecodeError::new(
                    "atom",
                    json,
                    "expected [\"uuid\", …] or [\"named-uuid\", …]",
                )),
            },
            Json::Null | Json::Object(_) => Err(DecodeError::new(
                "atom",
                json,
                "expected a number, boolean, string or UUID",
            )),
        }
    }

    /// The string, if this is a string atom.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Atom::String(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if this is an integer atom.
    pub fn as_integer(&self) -> Option<i64> {
        match self {
            Atom::Integer(i) => Some(*i),
            _ => None,
        }
    }

    /// The real, accepting integers too because the server prints integral reals without a
    /// fraction (so they arrive as JSON integers).
    pub fn as_real(&self) -> Option<f64> {
        match self {
            Atom::Real(r) => Some(*r),
            Atom::Integer(i) => Some(*i as f64),
            _ => None,
        }
    }

    /// The boolean, if this is a boolean atom.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Atom::Boolean(b) => Some(*b),
            _ => None,
        }
    }

    /// The UUID, if this is a (real, not named) UUID atom.
    pub fn as_uuid(&self) -> Option<Uuid> {
        match self {
            Atom::Uuid(u) => Some(*u),
            _ => None,
        }
    }
}

impl PartialEq for Atom {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Atom {}

impl PartialOrd for Atom {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A total order (reals by [`f64::total_cmp`]) so that atoms can live in sets and map keys.
impl Ord for Atom {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Atom::Integer(a), Atom::Integer(b)) => a.cmp(b),
            (Atom::Real(a), Atom::Real(b)) => a.total_cmp(b),
            (Atom::Boolean(a), Atom::Boolean(b)) => a.cmp(b),
            (Atom::String(a), Atom::String(b)) | (Atom::NamedUuid(a), Atom::NamedUuid(b)) => {
                a.cmp(b)
            }
            (Atom::Uuid(a), Atom::Uuid(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl fmt::Display for Atom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Atom::Integer(i) => write!(f, "{i}"),
            Atom::Real(r) => write!(f, "{r}"),
            Atom::Boolean(b) => write!(f, "{b}"),
            Atom::String(s) => write!(f, "{s:?}"),
            Atom::Uuid(u) => write!(f, "{u}"),
            Atom::NamedUuid(n) => write!(f, "@{n}"),
        }
    }
}

impl From<i64> for Atom {
    fn from(v: i64) -> Self {
        Atom::Integer(v)
    }
}
impl From<f64> for Atom {
    fn from(v: f64) -> Self {
        Atom::Real(v)
    }
}
impl From<bool> for Atom {
    fn from(v: bool) -> Self {
        Atom::Boolean(v)
    }
}
impl From<&str> for Atom {
    fn from(v: &str) -> Self {
        Atom::String(v.to_owned())
    }
}
impl From<String> for Atom {
    fn from(v: String) -> Self {
        Atom::String(v)
    }
}
impl From<Uuid> for Atom {
    fn from(v: Uuid) -> Self {
        Atom::Uuid(v)
    }
}
impl From<&String> for Atom {
    fn from(v: &String) -> Self {
        Atom::String(v.clone())
    }
}

/// A column value: a single atom, a set of atoms or a map between atoms.
///
/// RFC 7047 lets a one-element set be written as the bare atom; decoding without a schema keeps
/// whatever form arrived, while [`crate::schema::ColumnType::decode`] normalises to the column's
/// shape. Accessors such as [`Value::set_iter`] accept either form.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Value {
    /// A single atom (a scalar column, or a one-element set written bare).
    Atom(Atom),
    /// `["set", [...]]`.
    Set(BTreeSet<Atom>),
    /// `["map", [[k, v], ...]]`.
    Map(BTreeMap<Atom, Atom>),
}

impl Value {
    /// The empty set, which is how OVSDB writes "no value" for optional columns.
    pub fn empty_set() -> Self {
        Value::Set(BTreeSet::new())
    }

    /// A set from atoms.
    pub fn set<I, A>(atoms: I) -> Self
    where
        I: IntoIterator<Item = A>,
        A: Into<Atom>,
    {
        Value::Set(atoms.into_iter().map(Into::into).collect())
    }

    /// A map from key/value pairs.
    pub fn map<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<Atom>,
        V: Into<Atom>,
    {
        Value::Map(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    /// A reference to a row inserted earlier in the same transaction.
    pub fn named_uuid(name: impl Into<String>) -> Self {
        Value::Atom(Atom::NamedUuid(name.into()))
    }

    /// The RFC 7047 JSON form. Sets are always written as `["set", …]`, even with one element,
    /// so that decoding gives back exactly this value.
    pub fn to_json(&self) -> Json {
        match self {
            Value::Atom(a) => a.to_json(),
            Value::Set(s) => json!(["set", s.iter().map(Atom::to_json).collect::<Vec<_>>()]),
            Value::Map(m) => json!([
                "map",
                m.iter()
                    .map(|(k, v)| json!([k.to_json(), v.to_json()]))
                    .collect::<Vec<_>>()
            ]),
        }
    }

    /// Decodes without a schema (see [`Atom::from_json`] for the integer/real rule).
    pub fn from_json(json: &Json) -> Result<Self, DecodeError> {
        if let Json::Array(items) = json
            && let [Json::String(tag), Json::Array(elems)] = items.as_slice()
        {
            match tag.as_str() {
                "set" => {
                    return elems
                        .iter()
                        .map(Atom::from_json)
                        .collect::<Result<BTreeSet<_>, _>>()
                        .map(Value::Set);
                }
                "map" => {
                    let mut map = BTreeMap::new();
                    for pair in elems {
                        let Json::Array(kv) = pair else {
                            return Err(DecodeError::new("map", json, "pair is not an array"));
                        };
                        let [k, v] = kv.as_slice() else {
                            return Err(DecodeError::new("map", json, "pair is not [key, value]"));
                        };
                        map.insert(Atom::from_json(k)?, Atom::from_json(v)?);
                    }
                    return Ok(Value::Map(map));
                }
                _ => {}
            }
        }
        Atom::from_json(json).map(Value::Atom)
    }

    /// The single atom: the bare atom, or the only element of a one-element set.
    pub fn as_atom(&self) -> Option<&Atom> {
        match self {
            Value::Atom(a) => Some(a),
            Value::Set(s) if s.len() == 1 => s.iter().next(),
            _ => None,
        }
    }

    /// The elements when seen as a set (a bare atom is a one-element set); empty for maps.
    pub fn set_iter(&self) -> Box<dyn Iterator<Item = &Atom> + '_> {
        match self {
            Value::Atom(a) => Box::new(std::iter::once(a)),
            Value::Set(s) => Box::new(s.iter()),
            Value::Map(_) => Box::new(std::iter::empty()),
        }
    }

    /// The map, if this is one. An empty set also reads as an empty map, because `["set", []]`
    /// is a common way of writing "empty" regardless of column type.
    pub fn as_map(&self) -> Option<&BTreeMap<Atom, Atom>> {
        static EMPTY: BTreeMap<Atom, Atom> = BTreeMap::new();
        match self {
            Value::Map(m) => Some(m),
            Value::Set(s) if s.is_empty() => Some(&EMPTY),
            _ => None,
        }
    }

    /// The string of a string scalar.
    pub fn as_str(&self) -> Option<&str> {
        self.as_atom().and_then(Atom::as_str)
    }

    /// The UUID of a UUID scalar.
    pub fn as_uuid(&self) -> Option<Uuid> {
        self.as_atom().and_then(Atom::as_uuid)
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_json())
    }
}

macro_rules! value_from_atom {
    ($($ty:ty),*) => {$(
        impl From<$ty> for Value {
            fn from(v: $ty) -> Self {
                Value::Atom(v.into())
            }
        }
    )*};
}
value_from_atom!(i64, f64, bool, &str, String, Uuid, Atom);

/// The JSON object form of a row.
pub fn row_to_json(row: &Row) -> Json {
    Json::Object(
        row.iter()
            .map(|(column, value)| (column.clone(), value.to_json()))
            .collect(),
    )
}

/// Decodes a row without a schema.
pub fn row_from_json(json: &Json) -> Result<Row, DecodeError> {
    let Json::Object(columns) = json else {
        return Err(DecodeError::new("row", json, "expected a JSON object"));
    };
    columns
        .iter()
        .map(|(name, v)| Ok((name.clone(), Value::from_json(v)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn atom_strategy() -> impl Strategy<Value = Atom> {
        prop_oneof![
            any::<i64>().prop_map(Atom::Integer),
            any::<f64>()
                .prop_filter("JSON has no NaN/inf", |r| r.is_finite())
                .prop_map(Atom::Real),
            any::<bool>().prop_map(Atom::Boolean),
            ".*".prop_map(Atom::String),
            any::<u128>().prop_map(|n| Atom::Uuid(Uuid::from_u128(n))),
            "[a-z_][a-z0-9_]{0,8}".prop_map(Atom::NamedUuid),
        ]
    }

    fn value_strategy() -> impl Strategy<Value = Value> {
        prop_oneof![
            atom_strategy().prop_map(Value::Atom),
            proptest::collection::btree_set(atom_strategy(), 0..6).prop_map(Value::Set),
            proptest::collection::btree_map(atom_strategy(), atom_strategy(), 0..6)
                .prop_map(Value::Map),
        ]
    }

    proptest! {
        #[test]
        fn value_round_trips(value in value_strategy()) {
            let json = value.to_json();
            let text = serde_json::to_string(&json).expect("serialise");
            let reparsed: Json = serde_json::from_str(&text).expect("parse");
            prop_assert_eq!(Value::from_json(&reparsed).expect("decode"), value);
        }

        #[test]
        fn decode_never_panics(text in ".{0,64}") {
            if let Ok(json) = serde_json::from_str::<Json>(&text) {
                let _ = Value::from_json(&json);
            }
        }
    }

    #[test]
    fn rfc_examples() {
        let uuid = "36bf19c0-ad9d-4232-bb85-b3d73dfe2123";
        assert_eq!(
            Value::from_json(&json!(["uuid", uuid])).expect("uuid"),
            Value::Atom(Atom::Uuid(uuid.parse().expect("uuid")))
        );
        assert_eq!(
            Value::from_json(&json!(["named-uuid", "row0"])).expect("named"),
            Value::named_uuid("row0")
        );
        assert_eq!(
            Value::from_json(&json!(["set", [3, 1, 2]])).expect("set"),
            Value::set([1_i64, 2, 3])
        );
        assert_eq!(
            Value::from_json(&json!(["map", [["b", "2"], ["a", "1"]]])).expect("map"),
            Value::map([("a", "1"), ("b", "2")])
        );
        assert_eq!(
            Value::from_json(&json!(1.5)).expect("real"),
            Value::from(1.5)
        );
        assert_eq!(
            Value::from_json(&json!(7)).expect("int"),
            Value::from(7_i64)
        );
        assert_eq!(Value::from(1.0).to_json().to_string(), "1.0");
        assert_eq!(
            Value::set(["x"]).to_json(),
            json!(["set", ["x"]]),
            "one-element sets keep the explicit form"
        );
    }

    #[test]
    fn single_element_set_reads_both_ways() {
        let bare = Value::from_json(&json!("x")).expect("bare");
        let wrapped = Value::from_json(&json!(["set", ["x"]])).expect("wrapped");
        assert_eq!(bare.as_str(), Some("x"));
        assert_eq!(wrapped.as_str(), Some("x"));
        assert_eq!(
            bare.set_iter().collect::<Vec<_>>(),
            wrapped.set_iter().collect::<Vec<_>>()
        );
    }

    #[test]
    fn malformed() {
        for bad in [
            json!(null),
            json!({}),
            json!(["uuid", "not-a-uuid"]),
            json!(["uuid"]),
            json!(["set", [[1]]]),
            json!(["map", [[1]]]),
            json!(["map", [1]]),
            json!(["set", [{}]]),
            json!(u64::MAX),
        ] {
            assert!(Value::from_json(&bad).is_err(), "{bad}");
        }
        assert!(row_from_json(&json!([])).is_err());
        let err = Value::from_json(&json!(["map", [["k"]]])).expect_err("bad pair");
        assert!(err.to_string().contains("pair"), "{err}");
    }

    #[test]
    fn nan_encodes_as_null() {
        assert_eq!(Atom::Real(f64::NAN).to_json(), Json::Null);
    }
}

//! Database schemas (RFC 7047 §3.2) as returned by `get_schema`.
//!
//! The replica needs column types to apply `update2` diffs correctly (a scalar is replaced, a set
//! element toggled), to fill in the default values the server leaves out, and to tell an integral
//! real from an integer; the typed-row compatibility check needs them to catch schema drift.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::Value as Json;
use thiserror::Error;
use uuid::Uuid;

use crate::value::{Atom, DecodeError, Row, Value};

/// Why a schema document could not be understood.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("invalid OVSDB schema at {path}: {reason}")]
pub struct SchemaError {
    /// Where in the document, e.g. `tables.Logical_Switch.columns.ports.type`.
    pub path: String,
    /// What is wrong there.
    pub reason: String,
}

fn schema_err(path: &str, reason: impl Into<String>) -> SchemaError {
    SchemaError {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// The five OVSDB atomic types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AtomicType {
    /// 64-bit signed integer.
    Integer,
    /// Double-precision real.
    Real,
    /// Boolean.
    Boolean,
    /// UTF-8 string.
    String,
    /// UUID (row reference when `refTable` is set).
    Uuid,
}

impl AtomicType {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "integer" => AtomicType::Integer,
            "real" => AtomicType::Real,
            "boolean" => AtomicType::Boolean,
            "string" => AtomicType::String,
            "uuid" => AtomicType::Uuid,
            _ => return None,
        })
    }

    /// The RFC 7047 name.
    pub fn name(self) -> &'static str {
        match self {
            AtomicType::Integer => "integer",
            AtomicType::Real => "real",
            AtomicType::Boolean => "boolean",
            AtomicType::String => "string",
            AtomicType::Uuid => "uuid",
        }
    }

    /// The value OVSDB uses when a column is not set (and omits from `update2` rows).
    pub fn default_atom(self) -> Atom {
        match self {
            AtomicType::Integer => Atom::Integer(0),
            AtomicType::Real => Atom::Real(0.0),
            AtomicType::Boolean => Atom::Boolean(false),
            AtomicType::String => Atom::String(String::new()),
            AtomicType::Uuid => Atom::Uuid(Uuid::nil()),
        }
    }

    /// Decodes an atom of this type, accepting integers for reals (the server prints integral
    /// reals without a fraction).
    pub fn decode(self, json: &Json) -> Result<Atom, DecodeError> {
        let atom = Atom::from_json(json)?;
        match (self, atom) {
            (AtomicType::Integer, a @ Atom::Integer(_))
            | (AtomicType::Real, a @ Atom::Real(_))
            | (AtomicType::Boolean, a @ Atom::Boolean(_))
            | (AtomicType::String, a @ Atom::String(_))
            | (AtomicType::Uuid, a @ (Atom::Uuid(_) | Atom::NamedUuid(_))) => Ok(a),
            (AtomicType::Real, Atom::Integer(i)) => Ok(Atom::Real(i as f64)),
            (ty, _) => Err(DecodeError::new(
                "atom",
                json,
                format!("expected {}", ty.name()),
            )),
        }
    }
}

impl fmt::Display for AtomicType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether a reference keeps its target alive (RFC 7047 §3.2, `refType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RefType {
    /// Deleting a referenced row fails the transaction with a referential-integrity error.
    #[default]
    Strong,
    /// References to deleted rows silently disappear.
    Weak,
}

/// The type of a key or value, with its constraints.
#[derive(Debug, Clone, PartialEq)]
pub struct BaseType {
    /// The atomic type.
    pub atomic: AtomicType,
    /// Allowed values, if the column is an enumeration.
    pub enumeration: Option<BTreeSet<Atom>>,
    /// Integer range (`minInteger`/`maxInteger`).
    pub min_integer: Option<i64>,
    /// Upper integer bound.
    pub max_integer: Option<i64>,
    /// Real range (`minReal`/`maxReal`).
    pub min_real: Option<f64>,
    /// Upper real bound.
    pub max_real: Option<f64>,
    /// String length range in bytes (`minLength`/`maxLength`).
    pub min_length: Option<u64>,
    /// Upper string length bound.
    pub max_length: Option<u64>,
    /// Table referred to by a UUID.
    pub ref_table: Option<String>,
    /// Strength of that reference.
    pub ref_type: RefType,
}

impl BaseType {
    /// An unconstrained base type.
    pub fn new(atomic: AtomicType) -> Self {
        Self {
            atomic,
            enumeration: None,
            min_integer: None,
            max_integer: None,
            min_real: None,
            max_real: None,
            min_length: None,
            max_length: None,
            ref_table: None,
            ref_type: RefType::Strong,
        }
    }

    fn parse(json: &Json, path: &str) -> Result<Self, SchemaError> {
        match json {
            Json::String(name) => AtomicType::parse(name)
                .map(Self::new)
                .ok_or_else(|| schema_err(path, format!("unknown atomic type {name:?}"))),
            Json::Object(obj) => {
                let type_name = obj
                    .get("type")
                    .and_then(Json::as_str)
                    .ok_or_else(|| schema_err(path, "missing \"type\""))?;
                let atomic = AtomicType::parse(type_name).ok_or_else(|| {
                    schema_err(path, format!("unknown atomic type {type_name:?}"))
                })?;
                let mut base = Self::new(atomic);
                if let Some(e) = obj.get("enum") {
                    let value = Value::from_json(e)
                        .map_err(|err| schema_err(&format!("{path}.enum"), err.to_string()))?;
                    let mut set = BTreeSet::new();
                    for atom in value.set_iter() {
                        let atom = match (atomic, atom) {
                            (AtomicType::Real, Atom::Integer(i)) => Atom::Real(*i as f64),
                            _ => atom.clone(),
                        };
                        set.insert(atom);
                    }
                    base.enumeration = Some(set);
                }
                let int = |key: &str| -> Result<Option<i64>, SchemaError> {
                    obj.get(key)
                        .map(|v| {
                            v.as_i64().ok_or_else(|| {
                                schema_err(&format!("{path}.{key}"), "not an integer")
                            })
                        })
                        .transpose()
                };
                let real = |key: &str| -> Result<Option<f64>, SchemaError> {
                    obj.get(key)
                        .map(|v| {
                            v.as_f64()
                                .ok_or_else(|| schema_err(&format!("{path}.{key}"), "not a number"))
                        })
                        .transpose()
                };
                let uint = |key: &str| -> Result<Option<u64>, SchemaError> {
                    obj.get(key)
                        .map(|v| {
                            v.as_u64().ok_or_else(|| {
                                schema_err(&format!("{path}.{key}"), "not a non-negative integer")
                            })
                        })
                        .transpose()
                };
                base.min_integer = int("minInteger")?;
                base.max_integer = int("maxInteger")?;
                base.min_real = real("minReal")?;
                base.max_real = real("maxReal")?;
                base.min_length = uint("minLength")?;
                base.max_length = uint("maxLength")?;
                base.ref_table = obj
                    .get("refTable")
                    .map(|v| {
                        v.as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| schema_err(&format!("{path}.refTable"), "not a string"))
                    })
                    .transpose()?;
                base.ref_type = match obj.get("refType").and_then(Json::as_str) {
                    None | Some("strong") => RefType::Strong,
                    Some("weak") => RefType::Weak,
                    Some(other) => {
                        return Err(schema_err(
                            &format!("{path}.refType"),
                            format!("unknown refType {other:?}"),
                        ));
                    }
                };
                Ok(base)
            }
            _ => Err(schema_err(path, "expected a type name or object")),
        }
    }
}

/// The upper bound on the number of elements of a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MaxSize {
    /// At most this many.
    Limited(u64),
    /// `"unlimited"`.
    Unlimited,
}

impl MaxSize {
    /// Whether more than one element is allowed, which is what decides between "replace" and
    /// "toggle" semantics in `update2` diffs.
    pub fn is_multi(self) -> bool {
        match self {
            MaxSize::Limited(n) => n > 1,
            MaxSize::Unlimited => true,
        }
    }
}

impl fmt::Display for MaxSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaxSize::Limited(n) => write!(f, "{n}"),
            MaxSize::Unlimited => f.write_str("unlimited"),
        }
    }
}

/// A column type: key (and, for maps, value) type plus cardinality.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnType {
    /// Element type (or map key type).
    pub key: BaseType,
    /// Map value type; `None` for scalars and sets.
    pub value: Option<BaseType>,
    /// Minimum number of elements (0 or 1).
    pub min: u64,
    /// Maximum number of elements.
    pub max: MaxSize,
}

/// The shape a value of a column takes, which decides how it is decoded and diffed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Exactly one atom.
    Scalar,
    /// A set of atoms (including optional scalars, which are sets of 0 or 1).
    Set,
    /// A map.
    Map,
}

impl ColumnType {
    /// Parses a `<type>` (a bare atomic type name or an object).
    pub fn parse(json: &Json, path: &str) -> Result<Self, SchemaError> {
        match json {
            Json::String(_) => Ok(Self {
                key: BaseType::parse(json, path)?,
                value: None,
                min: 1,
                max: MaxSize::Limited(1),
            }),
            Json::Object(obj) => {
                let key = BaseType::parse(
                    obj.get("key")
                        .ok_or_else(|| schema_err(path, "missing \"key\""))?,
                    &format!("{path}.key"),
                )?;
                let value = obj
                    .get("value")
                    .map(|v| BaseType::parse(v, &format!("{path}.value")))
                    .transpose()?;
                let min = match obj.get("min") {
                    None => 1,
                    Some(v) => v
                        .as_u64()
                        .filter(|n| *n <= 1)
                        .ok_or_else(|| schema_err(&format!("{path}.min"), "must be 0 or 1"))?,
                };
                let max = match obj.get("max") {
                    None => MaxSize::Limited(1),
                    Some(Json::String(s)) if s == "unlimited" => MaxSize::Unlimited,
                    Some(v) => {
                        MaxSize::Limited(v.as_u64().filter(|n| *n >= 1).ok_or_else(|| {
                            schema_err(&format!("{path}.max"), "must be ≥ 1 or \"unlimited\"")
                        })?)
                    }
                };
                Ok(Self {
                    key,
                    value,
                    min,
                    max,
                })
            }
            _ => Err(schema_err(path, "expected a type name or object")),
        }
    }

    /// How values of this column are represented in a normalised row.
    pub fn shape(&self) -> Shape {
        if self.value.is_some() {
            Shape::Map
        } else if self.min == 1 && self.max == MaxSize::Limited(1) {
            Shape::Scalar
        } else {
            Shape::Set
        }
    }

    /// The value of a column that was never set; the server omits such columns from `initial`
    /// and `insert` rows.
    pub fn default_value(&self) -> Value {
        match self.shape() {
            Shape::Scalar => Value::Atom(self.key.atomic.default_atom()),
            Shape::Set => Value::empty_set(),
            Shape::Map => Value::Map(BTreeMap::new()),
        }
    }

    /// Decodes a value of this column into its normalised shape: scalars as
    /// [`Value::Atom`], sets (including a bare atom written for a one-element set) as
    /// [`Value::Set`], maps as [`Value::Map`].
    pub fn decode(&self, json: &Json) -> Result<Value, DecodeError> {
        let decode_set = |json: &Json| -> Result<BTreeSet<Atom>, DecodeError> {
            if let Json::Array(items) = json
                && let [Json::String(tag), Json::Array(elems)] = items.as_slice()
                && tag == "set"
            {
                elems.iter().map(|e| self.key.atomic.decode(e)).collect()
            } else {
                Ok(BTreeSet::from([self.key.atomic.decode(json)?]))
            }
        };
        match (self.shape(), &self.value) {
            (Shape::Map, Some(value_type)) => {
                let Json::Array(items) = json else {
                    return Err(DecodeError::new("map", json, "expected [\"map\", …]"));
                };
                match items.as_slice() {
                    [Json::String(tag), Json::Array(pairs)] if tag == "map" => {
                        let mut map = BTreeMap::new();
                        for pair in pairs {
                            let Some([k, v]) = pair.as_array().map(Vec::as_slice) else {
                                return Err(DecodeError::new(
                                    "map",
                                    json,
                                    "pair is not [key, value]",
                                ));
                            };
                            map.insert(self.key.atomic.decode(k)?, value_type.atomic.decode(v)?);
                        }
                        Ok(Value::Map(map))
                    }
                    // An empty map is sometimes written as an empty set.
                    [Json::String(tag), Json::Array(elems)] if tag == "set" && elems.is_empty() => {
                        Ok(Value::Map(BTreeMap::new()))
                    }
                    _ => Err(DecodeError::new("map", json, "expected [\"map\", …]")),
                }
            }
            (Shape::Scalar, _) => {
                let set = decode_set(json)?;
                let mut iter = set.into_iter();
                match (iter.next(), iter.next()) {
                    (Some(atom), None) => Ok(Value::Atom(atom)),
                    _ => Err(DecodeError::new(
                        "value",
                        json,
                        "scalar column needs exactly one value",
                    )),
                }
            }
            _ => decode_set(json).map(Value::Set),
        }
    }
}

/// One column of a table.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnSchema {
    /// Column name.
    pub name: String,
    /// Column type.
    pub ty: ColumnType,
    /// Not persisted across server restarts.
    pub ephemeral: bool,
    /// Whether `update`/`mutate` may change it after insertion.
    pub mutable: bool,
}

/// One table of a database.
#[derive(Debug, Clone, PartialEq)]
pub struct TableSchema {
    /// Table name.
    pub name: String,
    /// Columns by name (without the implicit `_uuid` and `_version`).
    pub columns: BTreeMap<String, ColumnSchema>,
    /// Root tables keep rows alive without references; rows of other tables are garbage
    /// collected when nothing refers to them any more.
    pub is_root: bool,
    /// Maximum number of rows, if limited.
    pub max_rows: Option<u64>,
    /// Sets of columns whose values must be unique across rows.
    pub indexes: Vec<Vec<String>>,
}

impl TableSchema {
    /// A column by name.
    pub fn column(&self, name: &str) -> Option<&ColumnSchema> {
        self.columns.get(name)
    }

    /// Decodes a `<row>` (as found in monitor updates and select results) with column types,
    /// ignoring `_uuid`/`_version` and columns unknown to the schema (a newer server may have
    /// more).
    pub fn decode_row(&self, json: &Json) -> Result<Row, DecodeError> {
        let Json::Object(columns) = json else {
            return Err(DecodeError::new("row", json, "expected a JSON object"));
        };
        let mut row = Row::new();
        for (name, value) in columns {
            if let Some(column) = self.columns.get(name) {
                let value = column.ty.decode(value).map_err(|mut e| {
                    e.reason = format!("column {}.{name}: {}", self.name, e.reason);
                    e
                })?;
                row.insert(name.clone(), value);
            }
        }
        Ok(row)
    }
}

/// A whole database schema.
#[derive(Debug, Clone, PartialEq)]
pub struct DatabaseSchema {
    /// Database name, e.g. `OVN_Northbound`.
    pub name: String,
    /// Schema version (`x.y.z`); the way to tell OVN releases apart.
    pub version: String,
    /// Optional checksum.
    pub cksum: Option<String>,
    /// Tables by name.
    pub tables: BTreeMap<String, TableSchema>,
}

impl DatabaseSchema {
    /// Parses a `get_schema` result or an `.ovsschema` file.
    pub fn from_json(json: &Json) -> Result<Self, SchemaError> {
        let obj = json
            .as_object()
            .ok_or_else(|| schema_err("(root)", "expected a JSON object"))?;
        let name = obj
            .get("name")
            .and_then(Json::as_str)
            .ok_or_else(|| schema_err("name", "missing or not a string"))?
            .to_owned();
        let version = obj
            .get("version")
            .and_then(Json::as_str)
            .unwrap_or_default()
            .to_owned();
        let cksum = obj.get("cksum").and_then(Json::as_str).map(str::to_owned);
        let tables_json = obj
            .get("tables")
            .and_then(Json::as_object)
            .ok_or_else(|| schema_err("tables", "missing or not an object"))?;
        let mut tables = BTreeMap::new();
        for (table_name, table_json) in tables_json {
            let path = format!("tables.{table_name}");
            let t = table_json
                .as_object()
                .ok_or_else(|| schema_err(&path, "expected an object"))?;
            let columns_json = t.get("columns").and_then(Json::as_object).ok_or_else(|| {
                schema_err(&format!("{path}.columns"), "missing or not an object")
            })?;
            let mut columns = BTreeMap::new();
            for (column_name, column_json) in columns_json {
                let cpath = format!("{path}.columns.{column_name}");
                let c = column_json
                    .as_object()
                    .ok_or_else(|| schema_err(&cpath, "expected an object"))?;
                let ty = ColumnType::parse(
                    c.get("type")
                        .ok_or_else(|| schema_err(&cpath, "missing \"type\""))?,
                    &format!("{cpath}.type"),
                )?;
                columns.insert(
                    column_name.clone(),
                    ColumnSchema {
                        name: column_name.clone(),
                        ty,
                        ephemeral: c.get("ephemeral").and_then(Json::as_bool).unwrap_or(false),
                        mutable: c.get("mutable").and_then(Json::as_bool).unwrap_or(true),
                    },
                );
            }
            let indexes = match t.get("indexes") {
                None => Vec::new(),
                Some(Json::Array(list)) => list
                    .iter()
                    .map(|index| {
                        index
                            .as_array()
                            .and_then(|cols| {
                                cols.iter()
                                    .map(|c| c.as_str().map(str::to_owned))
                                    .collect::<Option<Vec<_>>>()
                            })
                            .ok_or_else(|| {
                                schema_err(
                                    &format!("{path}.indexes"),
                                    "expected arrays of column names",
                                )
                            })
                    })
                    .collect::<Result<_, _>>()?,
                Some(_) => return Err(schema_err(&format!("{path}.indexes"), "expected an array")),
            };
            tables.insert(
                table_name.clone(),
                TableSchema {
                    name: table_name.clone(),
                    columns,
                    is_root: t.get("isRoot").and_then(Json::as_bool).unwrap_or(false),
                    max_rows: t.get("maxRows").and_then(Json::as_u64),
                    indexes,
                },
            );
        }
        Ok(Self {
            name,
            version,
            cksum,
            tables,
        })
    }

    /// A table by name.
    pub fn table(&self, name: &str) -> Option<&TableSchema> {
        self.tables.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> DatabaseSchema {
        DatabaseSchema::from_json(&json!({
            "name": "Test",
            "version": "1.2.3",
            "cksum": "123 456",
            "tables": {
                "Parent": {
                    "isRoot": true,
                    "indexes": [["name"]],
                    "columns": {
                        "name": {"type": "string"},
                        "children": {"type": {"key": {"type": "uuid", "refTable": "Child", "refType": "weak"}, "min": 0, "max": "unlimited"}},
                        "opts": {"type": {"key": "string", "value": "string", "min": 0, "max": "unlimited"}},
                        "kind": {"type": {"key": {"type": "string", "enum": ["set", ["a", "b"]]}}},
                        "one": {"type": {"key": {"type": "string", "enum": "only"}, "min": 0, "max": 1}},
                        "prio": {"type": {"key": {"type": "integer", "minInteger": 0, "maxInteger": 32767}}},
                        "weight": {"type": {"key": "real", "min": 0, "max": 1}},
                        "frozen": {"type": "integer", "mutable": false},
                        "eph": {"type": "boolean", "ephemeral": true}
                    }
                },
                "Child": {"maxRows": 5, "columns": {"label": {"type": {"key": {"type": "string", "maxLength": 63}}}}}
            }
        }))
        .expect("valid schema")
    }

    #[test]
    fn parses_tables_columns_and_constraints() {
        let s = sample();
        assert_eq!(s.name, "Test");
        assert_eq!(s.version, "1.2.3");
        assert_eq!(s.cksum.as_deref(), Some("123 456"));
        let parent = s.table("Parent").expect("Parent");
        assert!(parent.is_root);
        assert_eq!(parent.indexes, vec![vec!["name".to_owned()]]);
        let children = &parent.column("children").expect("children").ty;
        assert_eq!(children.key.atomic, AtomicType::Uuid);
        assert_eq!(children.key.ref_table.as_deref(), Some("Child"));
        assert_eq!(children.key.ref_type, RefType::Weak);
        assert_eq!((children.min, children.max), (0, MaxSize::Unlimited));
        assert_eq!(children.shape(), Shape::Set);
        let opts = &parent.column("opts").expect("opts").ty;
        assert_eq!(opts.shape(), Shape::Map);
        assert_eq!(
            opts.value.as_ref().map(|v| v.atomic),
            Some(AtomicType::String)
        );
        let kind = &parent.column("kind").expect("kind").ty;
        assert_eq!(kind.shape(), Shape::Scalar);
        assert_eq!(
            kind.key.enumeration,
            Some(BTreeSet::from([Atom::from("a"), Atom::from("b")]))
        );
        let one = &parent.column("one").expect("one").ty;
        assert_eq!(
            one.key.enumeration,
            Some(BTreeSet::from([Atom::from("only")]))
        );
        let prio = &parent.column("prio").expect("prio").ty;
        assert_eq!(
            (prio.key.min_integer, prio.key.max_integer),
            (Some(0), Some(32767))
        );
        assert!(!parent.column("frozen").expect("frozen").mutable);
        assert!(parent.column("eph").expect("eph").ephemeral);
        let child = s.table("Child").expect("Child");
        assert_eq!(child.max_rows, Some(5));
        assert!(!child.is_root);
        assert_eq!(
            child.column("label").expect("label").ty.key.max_length,
            Some(63)
        );
    }

    #[test]
    fn decode_normalises_to_column_shape() {
        let s = sample();
        let t = s.table("Parent").expect("Parent");
        let row = t
            .decode_row(&json!({
                "_uuid": ["uuid", "36bf19c0-ad9d-4232-bb85-b3d73dfe2123"],
                "name": "p",
                "children": ["uuid", "36bf19c0-ad9d-4232-bb85-b3d73dfe2123"],
                "weight": 2,
                "opts": ["set", []],
                "one": ["set", ["only"]],
                "unknown_new_column": 1
            }))
            .expect("row");
        assert_eq!(row["name"], Value::from("p"));
        assert_eq!(
            row["children"],
            Value::set(["36bf19c0-ad9d-4232-bb85-b3d73dfe2123"
                .parse::<Uuid>()
                .expect("uuid")])
        );
        assert_eq!(row["weight"], Value::set([2.0]));
        assert_eq!(row["opts"], Value::Map(BTreeMap::new()));
        assert_eq!(row["one"], Value::set(["only"]));
        assert!(!row.contains_key("_uuid"));
        assert!(!row.contains_key("unknown_new_column"));

        let err = t.decode_row(&json!({"prio": "x"})).expect_err("type");
        assert!(err.to_string().contains("Parent.prio"), "{err}");
        assert!(t.decode_row(&json!({"prio": ["set", [1, 2]]})).is_err());
        assert!(t.decode_row(&json!({"opts": "x"})).is_err());
    }

    #[test]
    fn defaults() {
        let s = sample();
        let t = s.table("Parent").expect("Parent");
        let ty = |c: &str| t.column(c).expect("column").ty.default_value();
        assert_eq!(ty("name"), Value::from(""));
        assert_eq!(ty("prio"), Value::from(0_i64));
        assert_eq!(ty("children"), Value::empty_set());
        assert_eq!(ty("opts"), Value::Map(BTreeMap::new()));
        assert_eq!(ty("eph"), Value::from(false));
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            json!([]),
            json!({"tables": {}}),
            json!({"name": "x"}),
            json!({"name": "x", "tables": {"T": {}}}),
            json!({"name": "x", "tables": {"T": {"columns": {"c": {}}}}}),
            json!({"name": "x", "tables": {"T": {"columns": {"c": {"type": "float"}}}}}),
            json!({"name": "x", "tables": {"T": {"columns": {"c": {"type": {"key": "string", "min": 2}}}}}}),
            json!({"name": "x", "tables": {"T": {"columns": {"c": {"type": {"key": "string", "max": 0}}}}}}),
            json!({"name": "x", "tables": {"T": {"columns": {"c": {"type": {"key": {"type": "uuid", "refType": "medium"}}}}}}}),
            json!({"name": "x", "tables": {"T": {"columns": {}, "indexes": [[1]]}}}),
        ] {
            assert!(DatabaseSchema::from_json(&bad).is_err(), "{bad}");
        }
        let err = DatabaseSchema::from_json(
            &json!({"name": "x", "tables": {"T": {"columns": {"c": {"type": "float"}}}}}),
        )
        .expect_err("bad type");
        assert!(err.path.contains("tables.T.columns.c"), "{err}");
    }
}

//! Mapping between Rust structs and OVSDB rows.
//!
//! Typed rows catch typos in column names at compile time and keep value-shape juggling (bare
//! atom vs one-element set, empty set for "none") in one place. Each typed table also declares
//! the column types it assumes ([`ColumnSpec`]), so [`check_schema`] can tell at connect time (and
//! a test at build time) whether the server's schema still matches what the code was written
//! against.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use thiserror::Error;
use uuid::Uuid;

use crate::schema::{AtomicType, DatabaseSchema, MaxSize};
use crate::transact::{Condition, Operation};
use crate::value::{Atom, Row, Value};

/// Why a row could not be turned into a typed struct.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("column {table}.{column}: {reason}")]
pub struct RowError {
    /// Table name.
    pub table: &'static str,
    /// Column name.
    pub column: &'static str,
    /// What is wrong with the value.
    pub reason: String,
}

/// How many values a Rust field type holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cardinality {
    /// Exactly one (`min 1, max 1`).
    One,
    /// Zero or one (`min 0, max 1`), an `Option`.
    Optional,
    /// Any number (`max > 1`), a set or map.
    Many,
}

/// The column type a typed field assumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColumnKind {
    /// Key (or element) type.
    pub key: AtomicType,
    /// Value type for maps.
    pub value: Option<AtomicType>,
    /// Cardinality.
    pub cardinality: Cardinality,
}

impl fmt::Display for ColumnKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.value, self.cardinality) {
            (Some(v), _) => write!(f, "map {}→{v}", self.key),
            (None, Cardinality::One) => write!(f, "{}", self.key),
            (None, Cardinality::Optional) => write!(f, "optional {}", self.key),
            (None, Cardinality::Many) => write!(f, "set of {}", self.key),
        }
    }
}

/// One column of a typed table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColumnSpec {
    /// Column name.
    pub name: &'static str,
    /// Assumed type.
    pub kind: ColumnKind,
    /// For UUID columns: the table referred to.
    pub ref_table: Option<&'static str>,
    /// Whether [`TypedRow::to_row`] writes it. Status columns that another component owns
    /// (e.g. `Logical_Switch_Port.up`, set by `ovn-northd`) are read but never written, so an
    /// update built from a typed row cannot clobber them.
    pub writable: bool,
}

/// A Rust type that represents one OVSDB column value.
pub trait ColumnValue: Sized {
    /// The column type this Rust type corresponds to.
    const KIND: ColumnKind;
    /// Converts from a column value (accepting either form of one-element sets).
    fn from_value(value: &Value) -> Result<Self, String>;
    /// Converts to the column value.
    fn to_value(&self) -> Value;
}

/// A Rust type that represents one atom.
pub trait AtomValue: Sized + Ord + Clone {
    /// The atomic type.
    const ATOMIC: AtomicType;
    /// Converts from an atom.
    fn from_atom(atom: &Atom) -> Option<Self>;
    /// Converts to an atom.
    fn to_atom(&self) -> Atom;
}

impl AtomValue for String {
    const ATOMIC: AtomicType = AtomicType::String;
    fn from_atom(atom: &Atom) -> Option<Self> {
        atom.as_str().map(str::to_owned)
    }
    fn to_atom(&self) -> Atom {
        Atom::String(self.clone())
    }
}

impl AtomValue for i64 {
    const ATOMIC: AtomicType = AtomicType::Integer;
    fn from_atom(atom: &Atom) -> Option<Self> {
        atom.as_integer()
    }
    fn to_atom(&self) -> Atom {
        Atom::Integer(*self)
    }
}

impl AtomValue for bool {
    const ATOMIC: AtomicType = AtomicType::Boolean;
    fn from_atom(atom: &Atom) -> Option<Self> {
        atom.as_bool()
    }
    fn to_atom(&self) -> Atom {
        Atom::Boolean(*self)
    }
}

impl AtomValue for Uuid {
    const ATOMIC: AtomicType = AtomicType::Uuid;
    fn from_atom(atom: &Atom) -> Option<Self> {
        atom.as_uuid()
    }
    fn to_atom(&self) -> Atom {
        Atom::Uuid(*self)
    }
}

fn type_error<T: AtomValue>(value: &Value) -> String {
    format!("expected {}, found {value}", T::ATOMIC)
}

macro_rules! scalar_column {
    ($($ty:ty),*) => {$(
        impl ColumnValue for $ty {
            const KIND: ColumnKind = ColumnKind {
                key: <$ty as AtomValue>::ATOMIC,
                value: None,
                cardinality: Cardinality::One,
            };
            fn from_value(value: &Value) -> Result<Self, String> {
                value
                    .as_atom()
                    .and_then(<$ty as AtomValue>::from_atom)
                    .ok_or_else(|| type_error::<$ty>(value))
            }
            fn to_value(&self) -> Value {
                Value::Atom(self.to_atom())
            }
        }
    )*};
}
scalar_column!(String, i64, bool, Uuid);

/// A real column. `f64` is not `Ord`, so it is a column type but not an [`AtomValue`].
impl ColumnValue for f64 {
    const KIND: ColumnKind = ColumnKind {
        key: AtomicType::Real,
        value: None,
        cardinality: Cardinality::One,
    };
    fn from_value(value: &Value) -> Result<Self, String> {
        value
            .as_atom()
            .and_then(Atom::as_real)
            .ok_or_else(|| format!("expected real, found {value}"))
    }
    fn to_value(&self) -> Value {
        Value::Atom(Atom::Real(*self))
    }
}

impl<T: AtomValue> ColumnValue for Option<T> {
    const KIND: ColumnKind = ColumnKind {
        key: T::ATOMIC,
        value: None,
        cardinality: Cardinality::Optional,
    };
    fn from_value(value: &Value) -> Result<Self, String> {
        if matches!(value, Value::Map(m) if !m.is_empty()) {
            return Err(format!("expected an optional {}, found a map", T::ATOMIC));
        }
        let mut iter = value.set_iter();
        match (iter.next(), iter.next()) {
            (None, _) => Ok(None),
            (Some(atom), None) => T::from_atom(atom)
                .map(Some)
                .ok_or_else(|| type_error::<T>(value)),
            _ => Err(format!("expected at most one {}, found {value}", T::ATOMIC)),
        }
    }
    fn to_value(&self) -> Value {
        Value::Set(self.iter().map(AtomValue::to_atom).collect())
    }
}

impl<T: AtomValue> ColumnValue for BTreeSet<T> {
    const KIND: ColumnKind = ColumnKind {
        key: T::ATOMIC,
        value: None,
        cardinality: Cardinality::Many,
    };
    fn from_value(value: &Value) -> Result<Self, String> {
        if let Value::Map(m) = value
            && !m.is_empty()
        {
            return Err(format!("expected a set of {}, found a map", T::ATOMIC));
        }
        value
            .set_iter()
            .map(|atom| T::from_atom(atom).ok_or_else(|| type_error::<T>(value)))
            .collect()
    }
    fn to_value(&self) -> Value {
        Value::Set(self.iter().map(AtomValue::to_atom).collect())
    }
}

impl<K: AtomValue, V: AtomValue> ColumnValue for BTreeMap<K, V> {
    const KIND: ColumnKind = ColumnKind {
        key: K::ATOMIC,
        value: Some(V::ATOMIC),
        cardinality: Cardinality::Many,
    };
    fn from_value(value: &Value) -> Result<Self, String> {
        let map = value
            .as_map()
            .ok_or_else(|| format!("expected a map, found {value}"))?;
        map.iter()
            .map(|(k, v)| {
                Ok((
                    K::from_atom(k).ok_or_else(|| format!("bad map key {k}"))?,
                    V::from_atom(v).ok_or_else(|| format!("bad map value {v}"))?,
                ))
            })
            .collect()
    }
    fn to_value(&self) -> Value {
        Value::Map(
            self.iter()
                .map(|(k, v)| (k.to_atom(), v.to_atom()))
                .collect(),
        )
    }
}

/// Reads one field; a missing column reads as the type's default, because the server leaves out
/// columns that hold their default value and callers may select a subset of columns.
pub fn read_column<T: ColumnValue + Default>(
    row: &Row,
    table: &'static str,
    column: &'static str,
) -> Result<T, RowError> {
    match row.get(column) {
        None => Ok(T::default()),
        Some(value) => T::from_value(value).map_err(|reason| RowError {
            table,
            column,
            reason,
        }),
    }
}

/// A struct that maps to rows of one table.
pub trait TypedRow: Sized {
    /// Table name.
    const TABLE: &'static str;
    /// The columns the struct maps, with the types assumed.
    const COLUMNS: &'static [ColumnSpec];
    /// Reads a row (missing columns read as defaults).
    fn from_row(row: &Row) -> Result<Self, RowError>;
    /// The writable columns as a row, for `insert` and `update`.
    fn to_row(&self) -> Row;

    /// `insert` of this row, named so later operations can refer to it.
    fn insert_op(&self, uuid_name: &str) -> Operation {
        Operation::insert_named(Self::TABLE, self.to_row(), uuid_name)
    }

    /// `update` of the row with this UUID to the writable columns of `self`.
    fn update_op(&self, uuid: Uuid) -> Operation {
        Operation::update(Self::TABLE, vec![Condition::uuid(uuid)], self.to_row())
    }
}

/// A mismatch between a typed table and a server schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaMismatch {
    /// Table.
    pub table: &'static str,
    /// Column, if the problem is with a column.
    pub column: Option<&'static str>,
    /// What differs.
    pub problem: String,
}

impl fmt::Display for SchemaMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.column {
            Some(column) => write!(f, "{}.{column}: {}", self.table, self.problem),
            None => write!(f, "{}: {}", self.table, self.problem),
        }
    }
}

/// Checks typed tables against a schema: every table and column must exist, with the same key
/// and value types, a compatible cardinality (one ↔ min 1 max 1, optional ↔ min 0 max 1, many ↔
/// max > 1) and the same reference target.
pub fn check_schema(
    schema: &DatabaseSchema,
    tables: &[(&'static str, &'static [ColumnSpec])],
) -> Vec<SchemaMismatch> {
    let mut problems = Vec::new();
    for (table, columns) in tables {
        let Some(table_schema) = schema.table(table) else {
            problems.push(SchemaMismatch {
                table,
                column: None,
                problem: format!("table missing from {} {}", schema.name, schema.version),
            });
            continue;
        };
        for spec in *columns {
            let mismatch = |problem: String| SchemaMismatch {
                table,
                column: Some(spec.name),
                problem,
            };
            let Some(column) = table_schema.column(spec.name) else {
                problems.push(mismatch("column missing".into()));
                continue;
            };
            let ty = &column.ty;
            let server_value = ty.value.as_ref().map(|v| v.atomic);
            let cardinality_ok = match spec.kind.cardinality {
                Cardinality::One => ty.min == 1 && ty.max == MaxSize::Limited(1),
                Cardinality::Optional => ty.min == 0 && ty.max == MaxSize::Limited(1),
                Cardinality::Many => ty.max.is_multi(),
            };
            if ty.key.atomic != spec.kind.key || server_value != spec.kind.value || !cardinality_ok
            {
                problems.push(mismatch(format!(
                    "code expects {}, server has key {} value {} min {} max {}",
                    spec.kind,
                    ty.key.atomic,
                    server_value.map_or_else(|| "-".to_owned(), |v| v.to_string()),
                    ty.min,
                    ty.max
                )));
            }
            if spec.kind.key == AtomicType::Uuid && ty.key.ref_table.as_deref() != spec.ref_table {
                problems.push(mismatch(format!(
                    "code expects references to {:?}, server has {:?}",
                    spec.ref_table, ty.key.ref_table
                )));
            }
        }
    }
    problems
}

/// Declares a typed table: the struct, its [`TypedRow`] impl and its column specs.
///
/// Field syntax: `field: Type = "column"`, optionally followed by `=> "RefTable"` for references
/// and `[status]` for columns that are read but never written.
#[macro_export]
macro_rules! typed_table {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident in $table:literal {
            $(
                $(#[$fmeta:meta])*
                $field:ident : $ty:ty = $column:literal $(=> $ref_table:literal)? $([$status:ident])?
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default, PartialEq)]
        $vis struct $name {
            $(
                $(#[$fmeta])*
                pub $field: $ty,
            )*
        }

        impl $crate::typed::TypedRow for $name {
            const TABLE: &'static str = $table;
            const COLUMNS: &'static [$crate::typed::ColumnSpec] = &[
                $(
                    $crate::typed::ColumnSpec {
                        name: $column,
                        kind: <$ty as $crate::typed::ColumnValue>::KIND,
                        ref_table: $crate::typed_table!(@ref $($ref_table)?),
                        writable: $crate::typed_table!(@writable $($status)?),
                    },
                )*
            ];

            fn from_row(row: &$crate::value::Row) -> ::std::result::Result<Self, $crate::typed::RowError> {
                Ok(Self {
                    $( $field: $crate::typed::read_column(row, $table, $column)?, )*
                })
            }

            fn to_row(&self) -> $crate::value::Row {
                let mut row = $crate::value::Row::new();
                $(
                    if $crate::typed_table!(@writable $($status)?) {
                        row.insert(
                            $column.to_owned(),
                            $crate::typed::ColumnValue::to_value(&self.$field),
                        );
                    }
                )*
                row
            }
        }
    };
    (@ref) => { None };
    (@ref $ref_table:literal) => { Some($ref_table) };
    (@writable) => { true };
    (@writable status) => { false };
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    typed_table! {
        /// Test table.
        struct Thing in "Thing" {
            /// Name.
            name: String = "name",
            /// Optional peer.
            peer: Option<Uuid> = "peer" => "Thing",
            /// Tags.
            tags: BTreeSet<String> = "tags",
            /// Options.
            options: BTreeMap<String, String> = "options",
            /// Count.
            count: i64 = "count",
            /// Up.
            up: Option<bool> = "up" [status],
            /// Weight.
            weight: f64 = "weight",
        }
    }

    #[test]
    fn round_trip_and_status_columns() {
        let peer = Uuid::from_u128(7);
        let thing = Thing {
            name: "t".into(),
            peer: Some(peer),
            tags: BTreeSet::from(["a".to_owned(), "b".to_owned()]),
            options: BTreeMap::from([("k".to_owned(), "v".to_owned())]),
            count: 3,
            up: Some(true),
            weight: 1.5,
        };
        let row = thing.to_row();
        assert!(!row.contains_key("up"), "status columns are not written");
        assert_eq!(row["peer"], Value::set([peer]));
        let mut read = Thing::from_row(&row).expect("from_row");
        assert_eq!(read.up, None);
        read.up = Some(true);
        assert_eq!(read, thing);
    }

    #[test]
    fn lenient_shapes_and_errors() {
        let mut row = Row::new();
        row.insert("name".into(), Value::set(["n"]));
        row.insert("peer".into(), Value::from(Uuid::from_u128(1)));
        row.insert("tags".into(), Value::from("single"));
        row.insert("options".into(), Value::empty_set());
        row.insert("weight".into(), Value::from(2_i64));
        let t = Thing::from_row(&row).expect("lenient");
        assert_eq!(t.name, "n");
        assert_eq!(t.peer, Some(Uuid::from_u128(1)));
        assert_eq!(t.tags.len(), 1);
        assert!(t.options.is_empty());
        assert!((t.weight - 2.0).abs() < f64::EPSILON);
        assert_eq!(t.count, 0, "missing column reads as default");

        row.insert("count".into(), Value::from("three"));
        let err = Thing::from_row(&row).expect_err("bad type");
        assert_eq!(err.column, "count");
        assert!(err.to_string().starts_with("column Thing.count:"), "{err}");
        row.insert("count".into(), Value::from(3_i64));
        row.insert(
            "peer".into(),
            Value::set([Uuid::from_u128(1), Uuid::from_u128(2)]),
        );
        assert!(Thing::from_row(&row).is_err());
    }

    #[test]
    fn schema_check() {
        let good = DatabaseSchema::from_json(&json!({
            "name": "Db", "version": "1",
            "tables": {"Thing": {"columns": {
                "name": {"type": "string"},
                "peer": {"type": {"key": {"type": "uuid", "refTable": "Thing"}, "min": 0, "max": 1}},
                "tags": {"type": {"key": "string", "min": 1, "max": "unlimited"}},
                "options": {"type": {"key": "string", "value": "string", "min": 0, "max": "unlimited"}},
                "count": {"type": {"key": {"type": "integer", "minInteger": 0}}},
                "up": {"type": {"key": "boolean", "min": 0, "max": 1}},
                "weight": {"type": "real"}
            }}}
        }))
        .expect("schema");
        assert_eq!(check_schema(&good, &[("Thing", Thing::COLUMNS)]), vec![]);

        let bad = DatabaseSchema::from_json(&json!({
            "name": "Db", "version": "2",
            "tables": {"Thing": {"columns": {
                "name": {"type": {"key": "string", "min": 0, "max": 1}},
                "peer": {"type": {"key": {"type": "uuid", "refTable": "Other"}, "min": 0, "max": 1}},
                "tags": {"type": {"key": "integer", "min": 0, "max": "unlimited"}},
                "options": {"type": {"key": "string", "value": "integer", "min": 0, "max": "unlimited"}},
                "count": {"type": "integer"},
                "weight": {"type": "real"}
            }}}
        }))
        .expect("schema");
        let problems: Vec<String> = check_schema(&bad, &[("Thing", Thing::COLUMNS), ("Gone", &[])])
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(problems.len(), 6, "{problems:#?}");
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("Thing.up: column missing"))
        );
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("Thing.peer: code expects references"))
        );
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("Gone: table missing"))
        );
        assert!(problems.iter().any(|p| p.starts_with(
            "Thing.name: code expects string, server has key string value - min 0 max 1"
        )));
    }
}

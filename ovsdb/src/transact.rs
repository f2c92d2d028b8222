//! `transact` operations (RFC 7047 §5.2) and the interpretation of their results.
//!
//! The server answers a failed transaction with a *successful* JSON-RPC response whose result
//! array carries an `error` object at the failing position (or one element past the end when the
//! commit itself failed, e.g. a referential-integrity violation). Callers almost never want to
//! dig through that array, so [`parse_results`] turns it into a [`TransactionError`] that names the
//! failing operation.

use std::fmt;
use std::time::Duration;

use serde_json::{Map, Value as Json, json};
use thiserror::Error;
use uuid::Uuid;

use crate::value::{DecodeError, Row, Value, row_from_json, row_to_json};

/// A comparison function of a `where` clause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `>=`
    Ge,
    /// `>`
    Gt,
    /// `includes` (set/map contains all given elements)
    Includes,
    /// `excludes` (set/map contains none of the given elements)
    Excludes,
}

impl Function {
    fn as_str(self) -> &'static str {
        match self {
            Function::Lt => "<",
            Function::Le => "<=",
            Function::Eq => "==",
            Function::Ne => "!=",
            Function::Ge => ">=",
            Function::Gt => ">",
            Function::Includes => "includes",
            Function::Excludes => "excludes",
        }
    }
}

/// One clause of a `where`: `[column, function, value]`. Clauses of a `where` are ANDed.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// Column name (`_uuid` selects by row UUID).
    pub column: String,
    /// Comparison.
    pub function: Function,
    /// Value to compare with.
    pub value: Value,
}

impl Condition {
    /// A clause.
    pub fn new(column: impl Into<String>, function: Function, value: impl Into<Value>) -> Self {
        Self {
            column: column.into(),
            function,
            value: value.into(),
        }
    }

    /// `column == value`, the common case.
    pub fn eq(column: impl Into<String>, value: impl Into<Value>) -> Self {
        Self::new(column, Function::Eq, value)
    }

    /// `_uuid == uuid`: selects one row by identity.
    pub fn uuid(uuid: Uuid) -> Self {
        Self::eq("_uuid", uuid)
    }

    /// The JSON form.
    pub fn to_json(&self) -> Json {
        json!([self.column, self.function.as_str(), self.value.to_json()])
    }
}

/// A mutator of a `mutate` operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutator {
    /// `+=`
    Add,
    /// `-=`
    Subtract,
    /// `*=`
    Multiply,
    /// `/=`
    Divide,
    /// `%=`
    Modulo,
    /// `insert` elements into a set or pairs into a map (existing keys are kept).
    Insert,
    /// `delete` elements from a set, or pairs/keys from a map.
    Delete,
}

impl Mutator {
    fn as_str(self) -> &'static str {
        match self {
            Mutator::Add => "+=",
            Mutator::Subtract => "-=",
            Mutator::Multiply => "*=",
            Mutator::Divide => "/=",
            Mutator::Modulo => "%=",
            Mutator::Insert => "insert",
            Mutator::Delete => "delete",
        }
    }
}

/// One mutation: `[column, mutator, value]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mutation {
    /// Column name.
    pub column: String,
    /// What to do.
    pub mutator: Mutator,
    /// Operand.
    pub value: Value,
}

impl Mutation {
    /// A mutation.
    pub fn new(column: impl Into<String>, mutator: Mutator, value: impl Into<Value>) -> Self {
        Self {
            column: column.into(),
            mutator,
            value: value.into(),
        }
    }

    /// The JSON form.
    pub fn to_json(&self) -> Json {
        json!([self.column, self.mutator.as_str(), self.value.to_json()])
    }
}

/// Whether a `wait` waits for the rows to become equal or not equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitUntil {
    /// `"=="`: the selected rows' columns must equal `rows`.
    Equal,
    /// `"!="`: they must differ.
    NotEqual,
}

/// One operation of a transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    /// Insert a row; `uuid_name` lets later operations refer to it as [`Value::named_uuid`].
    Insert {
        /// Table.
        table: String,
        /// Column values; unspecified columns get defaults.
        row: Row,
        /// Name for the new row within this transaction.
        uuid_name: Option<String>,
    },
    /// Read rows.
    Select {
        /// Table.
        table: String,
        /// Conditions (ANDed; empty selects all rows).
        conditions: Vec<Condition>,
        /// Columns to return; `None` for all.
        columns: Option<Vec<String>>,
    },
    /// Overwrite columns of matching rows.
    Update {
        /// Table.
        table: String,
        /// Conditions.
        conditions: Vec<Condition>,
        /// New column values.
        row: Row,
    },
    /// Change columns of matching rows relative to their current value (no read-modify-write
    /// race).
    Mutate {
        /// Table.
        table: String,
        /// Conditions.
        conditions: Vec<Condition>,
        /// Mutations.
        mutations: Vec<Mutation>,
    },
    /// Delete matching rows.
    Delete {
        /// Table.
        table: String,
        /// Conditions.
        conditions: Vec<Condition>,
    },
    /// Make the transaction depend on the current content (optimistic concurrency); fails
    /// with `timed out` if the condition does not hold within `timeout`.
    Wait {
        /// Table.
        table: String,
        /// Conditions selecting the rows to compare.
        conditions: Vec<Condition>,
        /// Columns to compare.
        columns: Vec<String>,
        /// Equal or not equal.
        until: WaitUntil,
        /// Expected rows (only `columns` are compared).
        rows: Vec<Row>,
        /// How long the server may wait; `None` waits forever, zero fails immediately.
        timeout: Option<Duration>,
    },
    /// Ask for the commit to be durable (on disk) before the reply.
    Commit {
        /// Durability requested.
        durable: bool,
    },
    /// Abort the transaction (useful for testing).
    Abort,
    /// A comment recorded in the database log, to tell who changed what.
    Comment(String),
    /// Fail unless this session holds the named lock.
    Assert {
        /// Lock name.
        lock: String,
    },
}

impl Operation {
    /// `insert` without a name.
    pub fn insert(table: impl Into<String>, row: Row) -> Self {
        Operation::Insert {
            table: table.into(),
            row,
            uuid_name: None,
        }
    }

    /// `insert` with a `uuid-name`.
    pub fn insert_named(table: impl Into<String>, row: Row, uuid_name: impl Into<String>) -> Self {
        Operation::Insert {
            table: table.into(),
            row,
            uuid_name: Some(uuid_name.into()),
        }
    }

    /// `select` of all columns.
    pub fn select(table: impl Into<String>, conditions: Vec<Condition>) -> Self {
        Operation::Select {
            table: table.into(),
            conditions,
            columns: None,
        }
    }

    /// `update`.
    pub fn update(table: impl Into<String>, conditions: Vec<Condition>, row: Row) -> Self {
        Operation::Update {
            table: table.into(),
            conditions,
            row,
        }
    }

    /// `mutate`.
    pub fn mutate(
        table: impl Into<String>,
        conditions: Vec<Condition>,
        mutations: Vec<Mutation>,
    ) -> Self {
        Operation::Mutate {
            table: table.into(),
            conditions,
            mutations,
        }
    }

    /// `delete`.
    pub fn delete(table: impl Into<String>, conditions: Vec<Condition>) -> Self {
        Operation::Delete {
            table: table.into(),
            conditions,
        }
    }

    /// The `op` name.
    pub fn name(&self) -> &'static str {
        match self {
            Operation::Insert { .. } => "insert",
            Operation::Select { .. } => "select",
            Operation::Update { .. } => "update",
            Operation::Mutate { .. } => "mutate",
            Operation::Delete { .. } => "delete",
            Operation::Wait { .. } => "wait",
            Operation::Commit { .. } => "commit",
            Operation::Abort => "abort",
            Operation::Comment(_) => "comment",
            Operation::Assert { .. } => "assert",
        }
    }

    /// The table the operation works on, if any.
    pub fn table(&self) -> Option<&str> {
        match self {
            Operation::Insert { table, .. }
            | Operation::Select { table, .. }
            | Operation::Update { table, .. }
            | Operation::Mutate { table, .. }
            | Operation::Delete { table, .. }
            | Operation::Wait { table, .. } => Some(table),
            _ => None,
        }
    }

    /// The JSON form.
    pub fn to_json(&self) -> Json {
        fn conds(c: &[Condition]) -> Json {
            Json::Array(c.iter().map(Condition::to_json).collect())
        }
        let mut obj = Map::new();
        obj.insert("op".into(), self.name().into());
        if let Some(table) = self.table() {
            obj.insert("table".into(), table.into());
        }
        match self {
            Operation::Insert { row, uuid_name, .. } => {
                obj.insert("row".into(), row_to_json(row));
                if let Some(name) = uuid_name {
                    obj.insert("uuid-name".into(), name.as_str().into());
                }
            }
            Operation::Select {
                conditions,
                columns,
                ..
            } => {
                obj.insert("where".into(), conds(conditions));
                if let Some(columns) = columns {
                    obj.insert("columns".into(), json!(columns));
                }
            }
            Operation::Update {
                conditions, row, ..
            } => {
                obj.insert("where".into(), conds(conditions));
                obj.insert("row".into(), row_to_json(row));
            }
            Operation::Mutate {
                conditions,
                mutations,
                ..
            } => {
                obj.insert("where".into(), conds(conditions));
                obj.insert(
                    "mutations".into(),
                    Json::Array(mutations.iter().map(Mutation::to_json).collect()),
                );
            }
            Operation::Delete { conditions, .. } => {
                obj.insert("where".into(), conds(conditions));
            }
            Operation::Wait {
                conditions,
                columns,
                until,
                rows,
                timeout,
                ..
            } => {
                obj.insert("where".into(), conds(conditions));
                obj.insert("columns".into(), json!(columns));
                obj.insert(
                    "until".into(),
                    match until {
                        WaitUntil::Equal => "==",
                        WaitUntil::NotEqual => "!=",
                    }
                    .into(),
                );
                obj.insert(
                    "rows".into(),
                    Json::Array(rows.iter().map(row_to_json).collect()),
                );
                if let Some(timeout) = timeout {
                    obj.insert(
                        "timeout".into(),
                        u64::try_from(timeout.as_millis())
                            .unwrap_or(u64::MAX)
                            .into(),
                    );
                }
            }
            Operation::Commit { durable } => {
                obj.insert("durable".into(), (*durable).into());
            }
            Operation::Abort => {}
            Operation::Comment(comment) => {
                obj.insert("comment".into(), comment.as_str().into());
            }
            Operation::Assert { lock } => {
                obj.insert("lock".into(), lock.as_str().into());
            }
        }
        Json::Object(obj)
    }
}

/// The outcome of one successful operation.
#[derive(Debug, Clone, PartialEq)]
pub enum OperationResult {
    /// `insert`: the new row's UUID.
    Inserted(Uuid),
    /// `select`: the rows, decoded without schema (see [`crate::Value`] on one-element sets).
    Rows(Vec<Row>),
    /// `update`, `mutate`, `delete`: number of matching rows.
    Count(u64),
    /// Operations without output.
    Empty,
}

impl OperationResult {
    /// The UUID of an insert.
    pub fn uuid(&self) -> Option<Uuid> {
        match self {
            OperationResult::Inserted(u) => Some(*u),
            _ => None,
        }
    }

    /// The rows of a select.
    pub fn rows(&self) -> Option<&[Row]> {
        match self {
            OperationResult::Rows(r) => Some(r),
            _ => None,
        }
    }

    /// The count of an update, mutate or delete.
    pub fn count(&self) -> Option<u64> {
        match self {
            OperationResult::Count(c) => Some(*c),
            _ => None,
        }
    }
}

/// The RFC 7047 error categories, so callers can react (e.g. retry on `timed out`, report a
/// bug on `syntax error`) without matching strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// A constraint (type, enum, range, index uniqueness, min/max) would be violated.
    ConstraintViolation,
    /// A strong reference would dangle.
    ReferentialIntegrity,
    /// Referenced column/table/uuid-name unknown or otherwise malformed request.
    SyntaxError,
    /// A `wait` did not succeed in time.
    TimedOut,
    /// An `assert` on a lock this session does not hold.
    NotOwner,
    /// The server is out of resources.
    ResourcesExhausted,
    /// An I/O error on the server.
    IoError,
    /// Mutation arithmetic out of range or invalid.
    DomainError,
    /// Mutation result out of range.
    RangeError,
    /// Two inserts used the same `uuid-name`.
    DuplicateUuidName,
    /// The operation is not allowed (e.g. writing a read-only column, or a follower in a cluster
    /// refused).
    NotAllowed,
    /// The transaction was explicitly aborted.
    Aborted,
    /// Anything else, verbatim.
    Other(String),
}

impl ErrorKind {
    fn parse(error: &str) -> Self {
        match error {
            "constraint violation" => ErrorKind::ConstraintViolation,
            "referential integrity violation" => ErrorKind::ReferentialIntegrity,
            "syntax error" | "unknown column" | "unknown table" => ErrorKind::SyntaxError,
            "timed out" => ErrorKind::TimedOut,
            "not owner" => ErrorKind::NotOwner,
            "resources exhausted" => ErrorKind::ResourcesExhausted,
            "I/O error" => ErrorKind::IoError,
            "domain error" => ErrorKind::DomainError,
            "range error" => ErrorKind::RangeError,
            "duplicate uuid-name" => ErrorKind::DuplicateUuidName,
            "not allowed" | "permission error" => ErrorKind::NotAllowed,
            "aborted" => ErrorKind::Aborted,
            other => ErrorKind::Other(other.to_owned()),
        }
    }
}

/// A transaction the server refused; nothing of it was committed.
#[derive(Debug, Clone, PartialEq, Error)]
pub struct TransactionError {
    /// Index of the failing operation in the request, `None` when the commit failed after all
    /// operations succeeded (typically referential integrity or a constraint checked at commit).
    pub operation_index: Option<usize>,
    /// The failing operation's `op` name, when it is known.
    pub operation: Option<&'static str>,
    /// The failing operation's table, when it has one.
    pub table: Option<String>,
    /// The error category.
    pub kind: ErrorKind,
    /// The server's `error` string.
    pub error: String,
    /// The server's `details`, which says which row/column and why.
    pub details: Option<String>,
}

impl fmt::Display for TransactionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.operation_index, self.operation) {
            (Some(index), Some(op)) => {
                write!(f, "transaction failed at operation #{index} ({op}")?;
                if let Some(table) = &self.table {
                    write!(f, " on {table}")?;
                }
                write!(f, "): {}", self.error)?;
            }
            (Some(index), None) => {
                write!(
                    f,
                    "transaction failed at operation #{index}: {}",
                    self.error
                )?;
            }
            (None, _) => write!(f, "transaction failed to commit: {}", self.error)?,
        }
        if let Some(details) = &self.details {
            write!(f, ": {details}")?;
        }
        Ok(())
    }
}

/// Why a `transact` reply could not be used.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum TransactResultError {
    /// The server refused the transaction.
    #[error(transparent)]
    Failed(Box<TransactionError>),
    /// The reply does not look like a transact result.
    #[error("malformed transact reply: {0}")]
    Malformed(#[from] DecodeError),
}

impl From<TransactionError> for TransactResultError {
    fn from(e: TransactionError) -> Self {
        TransactResultError::Failed(Box::new(e))
    }
}

/// Interprets a `transact` result array for the given operations.
pub fn parse_results(
    operations: &[Operation],
    result: &Json,
) -> Result<Vec<OperationResult>, TransactResultError> {
    let Json::Array(items) = result else {
        return Err(DecodeError::new("transact result", result, "expected an array").into());
    };
    // Errors first: a failed transaction has null entries after the failing operation.
    for (index, item) in items.iter().enumerate() {
        if let Some(error) = item.get("error") {
            let error_text = error
                .as_str()
                .map_or_else(|| error.to_string(), str::to_owned);
            let op = operations.get(index);
            return Err(TransactionError {
                operation_index: op.map(|_| index),
                operation: op.map(Operation::name),
                table: op.and_then(Operation::table).map(str::to_owned),
                kind: ErrorKind::parse(&error_text),
                error: error_text,
                details: item
                    .get("details")
                    .and_then(Json::as_str)
                    .map(str::to_owned),
            }
            .into());
        }
    }
    if items.len() < operations.len() {
        return Err(DecodeError::new(
            "transact result",
            result,
            format!(
                "{} results for {} operations",
                items.len(),
                operations.len()
            ),
        )
        .into());
    }
    items
        .iter()
        .take(operations.len())
        .map(|item| {
            if let Some(uuid) = item.get("uuid") {
                let value = Value::from_json(uuid)?;
                value
                    .as_uuid()
                    .map(OperationResult::Inserted)
                    .ok_or_else(|| {
                        DecodeError::new("insert result", item, "uuid is not a UUID").into()
                    })
            } else if let Some(rows) = item.get("rows") {
                rows.as_array()
                    .ok_or_else(|| DecodeError::new("select result", item, "rows is not an array"))?
                    .iter()
                    .map(row_from_json)
                    .collect::<Result<Vec<_>, _>>()
                    .map(OperationResult::Rows)
                    .map_err(Into::into)
            } else if let Some(count) = item.get("count") {
                count.as_u64().map(OperationResult::Count).ok_or_else(|| {
                    DecodeError::new("count result", item, "count is not a number").into()
                })
            } else if item.is_object() {
                Ok(OperationResult::Empty)
            } else {
                Err(DecodeError::new("operation result", item, "expected an object").into())
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_json() {
        let mut row = Row::new();
        row.insert("name".into(), Value::from("ls0"));
        let ops = [
            Operation::insert_named("Logical_Switch", row.clone(), "new"),
            Operation::Select {
                table: "T".into(),
                conditions: vec![Condition::eq("name", "x")],
                columns: Some(vec!["name".into()]),
            },
            Operation::update("T", vec![], row.clone()),
            Operation::mutate(
                "T",
                vec![Condition::new("n", Function::Ge, 3_i64)],
                vec![Mutation::new(
                    "ports",
                    Mutator::Insert,
                    Value::named_uuid("p"),
                )],
            ),
            Operation::delete("T", vec![Condition::uuid(Uuid::nil())]),
            Operation::Wait {
                table: "T".into(),
                conditions: vec![],
                columns: vec!["name".into()],
                until: WaitUntil::NotEqual,
                rows: vec![row],
                timeout: Some(Duration::from_millis(0)),
            },
            Operation::Commit { durable: true },
            Operation::Abort,
            Operation::Comment("why".into()),
            Operation::Assert { lock: "l".into() },
        ];
        let json: Vec<Json> = ops.iter().map(Operation::to_json).collect();
        assert_eq!(
            json,
            vec![
                json!({"op": "insert", "table": "Logical_Switch", "row": {"name": "ls0"}, "uuid-name": "new"}),
                json!({"op": "select", "table": "T", "where": [["name", "==", "x"]], "columns": ["name"]}),
                json!({"op": "update", "table": "T", "where": [], "row": {"name": "ls0"}}),
                json!({"op": "mutate", "table": "T", "where": [["n", ">=", 3]], "mutations": [["ports", "insert", ["named-uuid", "p"]]]}),
                json!({"op": "delete", "table": "T", "where": [["_uuid", "==", ["uuid", "00000000-0000-0000-0000-000000000000"]]]}),
                json!({"op": "wait", "table": "T", "where": [], "columns": ["name"], "until": "!=", "rows": [{"name": "ls0"}], "timeout": 0}),
                json!({"op": "commit", "durable": true}),
                json!({"op": "abort"}),
                json!({"op": "comment", "comment": "why"}),
                json!({"op": "assert", "lock": "l"}),
            ]
        );
    }

    #[test]
    fn results_and_errors() {
        let ops = vec![
            Operation::insert("A", Row::new()),
            Operation::select("A", vec![]),
            Operation::delete("A", vec![]),
            Operation::Comment("c".into()),
        ];
        let ok = parse_results(
            &ops,
            &json!([
                {"uuid": ["uuid", "36bf19c0-ad9d-4232-bb85-b3d73dfe2123"]},
                {"rows": [{"name": "x"}]},
                {"count": 2},
                {}
            ]),
        )
        .expect("success");
        assert_eq!(
            ok[0].uuid(),
            Some(
                "36bf19c0-ad9d-4232-bb85-b3d73dfe2123"
                    .parse()
                    .expect("uuid")
            )
        );
        assert_eq!(ok[1].rows().map(<[Row]>::len), Some(1));
        assert_eq!(ok[2].count(), Some(2));
        assert_eq!(ok[3], OperationResult::Empty);

        let err = parse_results(
            &ops,
            &json!([{"uuid": ["uuid", "36bf19c0-ad9d-4232-bb85-b3d73dfe2123"]}, {"error": "constraint violation", "details": "bad name"}, null, null]),
        )
        .expect_err("op error");
        let TransactResultError::Failed(err) = err else {
            panic!("wrong error {err:?}")
        };
        assert_eq!(err.operation_index, Some(1));
        assert_eq!(err.kind, ErrorKind::ConstraintViolation);
        assert_eq!(
            err.to_string(),
            "transaction failed at operation #1 (select on A): constraint violation: bad name"
        );

        let err = parse_results(
            &ops,
            &json!([{"uuid": ["uuid", "36bf19c0-ad9d-4232-bb85-b3d73dfe2123"]}, {"rows": []}, {"count": 0}, {}, {"error": "referential integrity violation", "details": "dangling"}]),
        )
        .expect_err("commit error");
        let TransactResultError::Failed(err) = err else {
            panic!("wrong error {err:?}")
        };
        assert_eq!(err.operation_index, None);
        assert_eq!(err.kind, ErrorKind::ReferentialIntegrity);
        assert!(err.to_string().starts_with("transaction failed to commit"));

        assert!(matches!(
            parse_results(&ops, &json!([{}])),
            Err(TransactResultError::Malformed(_))
        ));
        assert!(parse_results(&ops, &json!({})).is_err());
    }
}

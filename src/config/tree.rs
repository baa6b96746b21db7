//! The configuration as a tree of keys and values, built by serialising it: what
//! `diff` compares. A serde `Serializer` of its own rather than `toml::Value` or
//! `serde_json::Value`, because those sort the keys of a table (their order-keeping
//! features are off), and because the tree keeps two facts the diff prints by:
//!
//! - whether a table is a struct, whose keys are the schema's (`health_check.interval`),
//!   or a map, whose keys are data such as upstream or header names
//!   (`set_headers x-via`);
//! - whether a string is text, shown quoted as the file writes it (`"old"`), or a
//!   word, number with a unit or address, shown bare (`30s`, `round_robin`).
//!   Serialisers mark the latter with [`bare`]; file formats see a plain string.

use std::fmt::{self, Display, Write as _};

use serde::ser::{self, Serialize};

/// The newtype-struct name that marks a string as bare. Serialisers that do not
/// know it (toml, serde_json) serialise the string inside, unchanged.
const BARE: &str = "switchyard::config::tree::Bare";

/// Serialises `value`'s text as a bare word (a `serialize_with` helper).
pub(super) fn bare<T: Display + ?Sized, S: ser::Serializer>(
    value: &T,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_newtype_struct(BARE, &value.to_string())
}

/// A serialised value.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Node {
    Bool(bool),
    Int(i64),
    Float(f64),
    /// Free text: names, header values, file paths. Shown quoted.
    Text(String),
    /// A word, a number with a unit, an address. Shown as is.
    Bare(String),
    List(Vec<Node>),
    Table(Table),
}

/// A table's entries in the order they were serialised.
#[derive(Debug, Clone, PartialEq, Default)]
pub(super) struct Table {
    pub entries: Vec<(String, Node)>,
    /// A map's keys are data (upstream names, header names); a struct's are the
    /// schema's.
    pub data_keys: bool,
}

impl Table {
    pub(super) fn get(&self, key: &str) -> Option<&Node> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub(super) fn get_mut(&mut self, key: &str) -> Option<&mut Node> {
        self.entries
            .iter_mut()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }
}

impl Node {
    pub(super) fn as_table(&self) -> Option<&Table> {
        match self {
            Node::Table(t) => Some(t),
            _ => None,
        }
    }

    pub(super) fn as_list(&self) -> Option<&[Node]> {
        match self {
            Node::List(l) => Some(l),
            _ => None,
        }
    }

    /// The string of a text or bare value.
    pub(super) fn as_str(&self) -> Option<&str> {
        match self {
            Node::Text(s) | Node::Bare(s) => Some(s),
            _ => None,
        }
    }
}

/// As the file would write the value, but bare words unquoted: `30s`, `"old"`,
/// `[error, timeout]`, `{ sni = "origin.example", verify = true }`.
impl Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Bool(b) => write!(f, "{b}"),
            Node::Int(i) => write!(f, "{i}"),
            // Debug keeps the ".0" of a whole number, as TOML writes a float.
            Node::Float(x) => write!(f, "{x:?}"),
            Node::Text(s) => write!(f, "{s:?}"),
            Node::Bare(s) => f.write_str(s),
            Node::List(items) => {
                f.write_char('[')?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_char(']')
            }
            Node::Table(t) if t.entries.is_empty() => f.write_str("{}"),
            Node::Table(t) => {
                f.write_str("{ ")?;
                for (i, (k, v)) in t.entries.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k} = {v}")?;
                }
                f.write_str(" }")
            }
        }
    }
}

/// Serialises `value` into a tree; `None` for a value that serialises to nothing
/// (`None`, `()`).
pub(super) fn to_node<T: Serialize + ?Sized>(value: &T) -> Result<Option<Node>, Error> {
    value.serialize(NodeSerializer)
}

/// What cannot be put in a tree (nothing the configuration serialises).
#[derive(Debug)]
pub(super) struct Error(String);

impl Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl ser::Error for Error {
    fn custom<T: Display>(msg: T) -> Self {
        Error(msg.to_string())
    }
}

fn unsupported<T>(what: &str) -> Result<T, Error> {
    Err(Error(format!(
        "{what} cannot be put in a configuration tree"
    )))
}

struct NodeSerializer;

type Out = Result<Option<Node>, Error>;

impl ser::Serializer for NodeSerializer {
    type Ok = Option<Node>;
    type Error = Error;
    type SerializeSeq = SeqBuilder;
    type SerializeTuple = SeqBuilder;
    type SerializeTupleStruct = SeqBuilder;
    type SerializeTupleVariant = ser::Impossible<Option<Node>, Error>;
    type SerializeMap = TableBuilder;
    type SerializeStruct = TableBuilder;
    type SerializeStructVariant = ser::Impossible<Option<Node>, Error>;

    fn serialize_bool(self, v: bool) -> Out {
        Ok(Some(Node::Bool(v)))
    }
    fn serialize_i8(self, v: i8) -> Out {
        self.serialize_i64(v.into())
    }
    fn serialize_i16(self, v: i16) -> Out {
        self.serialize_i64(v.into())
    }
    fn serialize_i32(self, v: i32) -> Out {
        self.serialize_i64(v.into())
    }
    fn serialize_i64(self, v: i64) -> Out {
        Ok(Some(Node::Int(v)))
    }
    fn serialize_u8(self, v: u8) -> Out {
        self.serialize_i64(v.into())
    }
    fn serialize_u16(self, v: u16) -> Out {
        self.serialize_i64(v.into())
    }
    fn serialize_u32(self, v: u32) -> Out {
        self.serialize_i64(v.into())
    }
    fn serialize_u64(self, v: u64) -> Out {
        // TOML integers are i64; a larger value could not be written to the file.
        match i64::try_from(v) {
            Ok(i) => self.serialize_i64(i),
            Err(_) => unsupported("an integer above i64::MAX"),
        }
    }
    fn serialize_f32(self, v: f32) -> Out {
        self.serialize_f64(v.into())
    }
    fn serialize_f64(self, v: f64) -> Out {
        Ok(Some(Node::Float(v)))
    }
    fn serialize_char(self, v: char) -> Out {
        Ok(Some(Node::Text(v.to_string())))
    }
    fn serialize_str(self, v: &str) -> Out {
        Ok(Some(Node::Text(v.to_owned())))
    }
    fn serialize_bytes(self, _: &[u8]) -> Out {
        unsupported("bytes")
    }
    fn serialize_none(self) -> Out {
        Ok(None)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Out {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Out {
        Ok(None)
    }
    fn serialize_unit_struct(self, _: &'static str) -> Out {
        Ok(None)
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> Out {
        // Enums of names (`round_robin`, `json`) are words.
        Ok(Some(Node::Bare(variant.to_owned())))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, name: &'static str, value: &T) -> Out {
        let node = value.serialize(NodeSerializer)?;
        Ok(match node {
            Some(Node::Text(s)) if name == BARE => Some(Node::Bare(s)),
            other => other,
        })
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> Out {
        let entries = value
            .serialize(NodeSerializer)?
            .map(|v| vec![(variant.to_owned(), v)])
            .unwrap_or_default();
        Ok(Some(Node::Table(Table {
            entries,
            data_keys: false,
        })))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<SeqBuilder, Error> {
        Ok(SeqBuilder(Vec::with_capacity(len.unwrap_or(0))))
    }
    fn serialize_tuple(self, len: usize) -> Result<SeqBuilder, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(self, _: &'static str, len: usize) -> Result<SeqBuilder, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Error> {
        unsupported("a tuple variant")
    }
    /// A map of data (upstream names, header names) comes with its length, as
    /// `collect_map` gives it; serde's derive serialises a struct with a
    /// `#[serde(flatten)]` field (a route) as a map of unknown length, and its keys
    /// are the schema's.
    fn serialize_map(self, len: Option<usize>) -> Result<TableBuilder, Error> {
        Ok(TableBuilder::new(len.is_some()))
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<TableBuilder, Error> {
        Ok(TableBuilder::new(false))
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Error> {
        unsupported("a struct variant")
    }
}

struct SeqBuilder(Vec<Node>);

impl SeqBuilder {
    fn push<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        match value.serialize(NodeSerializer)? {
            Some(v) => {
                self.0.push(v);
                Ok(())
            }
            // TOML arrays have no holes either.
            None => unsupported("an empty element in a list"),
        }
    }
}

impl ser::SerializeSeq for SeqBuilder {
    type Ok = Option<Node>;
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.push(value)
    }
    fn end(self) -> Out {
        Ok(Some(Node::List(self.0)))
    }
}

impl ser::SerializeTuple for SeqBuilder {
    type Ok = Option<Node>;
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.push(value)
    }
    fn end(self) -> Out {
        Ok(Some(Node::List(self.0)))
    }
}

impl ser::SerializeTupleStruct for SeqBuilder {
    type Ok = Option<Node>;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.push(value)
    }
    fn end(self) -> Out {
        Ok(Some(Node::List(self.0)))
    }
}

struct TableBuilder {
    table: Table,
    key: Option<String>,
}

impl TableBuilder {
    fn new(data_keys: bool) -> Self {
        TableBuilder {
            table: Table {
                entries: Vec::new(),
                data_keys,
            },
            key: None,
        }
    }

    /// Adds an entry; a value that serialises to nothing leaves the key out, as
    /// TOML does with `None`.
    fn insert<T: Serialize + ?Sized>(&mut self, key: String, value: &T) -> Result<(), Error> {
        if let Some(v) = value.serialize(NodeSerializer)? {
            self.table.entries.push((key, v));
        }
        Ok(())
    }

    fn end(self) -> Out {
        Ok(Some(Node::Table(self.table)))
    }
}

impl ser::SerializeMap for TableBuilder {
    type Ok = Option<Node>;
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        let key = match key.serialize(NodeSerializer)? {
            Some(Node::Text(s) | Node::Bare(s)) => s,
            Some(Node::Int(i)) => i.to_string(),
            _ => return unsupported("a map key that is not a string"),
        };
        self.key = Some(key);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        let key = self
            .key
            .take()
            .ok_or_else(|| Error("a map value without its key".to_owned()))?;
        self.insert(key, value)
    }
    fn end(self) -> Out {
        TableBuilder::end(self)
    }
}

impl ser::SerializeStruct for TableBuilder {
    type Ok = Option<Node>;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.insert(key.to_owned(), value)
    }
    fn end(self) -> Out {
        TableBuilder::end(self)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Serialize;

    use super::*;

    #[derive(Serialize)]
    struct Example {
        zeta: u32,
        #[serde(serialize_with = "bare")]
        timeout: String,
        name: String,
        missing: Option<u32>,
        headers: BTreeMap<String, String>,
        list: Vec<f64>,
    }

    #[test]
    fn keeps_field_order_and_tells_bare_from_text_and_maps_from_structs() {
        let e = Example {
            zeta: 1,
            timeout: "30s".into(),
            name: "x y".into(),
            missing: None,
            headers: [("x-via".to_owned(), "a".to_owned())].into(),
            list: vec![1.0, 1.25],
        };
        let Some(Node::Table(t)) = to_node(&e).unwrap() else {
            panic!("a table")
        };
        assert!(!t.data_keys);
        let keys: Vec<&str> = t.entries.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["zeta", "timeout", "name", "headers", "list"]);
        assert_eq!(t.get("timeout").unwrap().to_string(), "30s");
        assert_eq!(t.get("name").unwrap().to_string(), "\"x y\"");
        assert_eq!(t.get("list").unwrap().to_string(), "[1.0, 1.25]");
        let headers = t.get("headers").unwrap().as_table().unwrap();
        assert!(headers.data_keys);
        assert_eq!(
            Node::Table(headers.clone()).to_string(),
            "{ x-via = \"a\" }"
        );
    }

    #[test]
    fn file_formats_see_a_plain_string() {
        #[derive(Serialize)]
        struct T {
            #[serde(serialize_with = "bare")]
            d: &'static str,
        }
        assert_eq!(toml::to_string(&T { d: "5s" }).unwrap(), "d = \"5s\"\n");
    }
}

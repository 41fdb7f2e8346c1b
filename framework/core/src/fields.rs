//! [`Fields`]: the ordered, named values of a record or a map value.
//!
//! Most records hold a handful of fields, so `Fields` is a vector of
//! `(name, value)` pairs searched from the front, with no hash table to build,
//! grow or free: making, extending and dropping a record costs one
//! allocation. Past [`INDEXED_ABOVE`] fields (wide CSV rows, feature maps) a
//! hash index is built beside the vector, so lookups and inserts stay O(1)
//! however wide a record grows. Insertion order is kept either way.
//!
//! The API follows `IndexMap`'s where they overlap (`get`, `insert`,
//! `shift_remove`, `get_index`, `iter`, ...), and equality ignores order as
//! `IndexMap`'s does.

use std::fmt;
use std::hash::BuildHasher;
use std::ops::Index as IndexOp;

use hashbrown::HashTable;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::value::{Name, Value};

/// Above this many fields a hash index is kept beside the entries.
pub const INDEXED_ABOVE: usize = 12;

/// The ordered fields of a record: names are unique, insertion order is kept.
#[derive(Clone, Default)]
pub struct Fields {
    entries: Vec<(Name, Value)>,
    index: Option<Box<Lookup>>,
}

/// Positions of the entries by name hash (wide maps only).
#[derive(Clone)]
struct Lookup {
    state: foldhash::fast::RandomState,
    table: HashTable<usize>,
}

impl Lookup {
    fn build(entries: &[(Name, Value)]) -> Box<Lookup> {
        let state = foldhash::fast::RandomState::default();
        let mut table = HashTable::with_capacity(entries.len());
        for (i, (k, _)) in entries.iter().enumerate() {
            let h = state.hash_one(k.as_str());
            table.insert_unique(h, i, |&j| state.hash_one(entries[j].0.as_str()));
        }
        Box::new(Lookup { state, table })
    }

    fn find(&self, entries: &[(Name, Value)], key: &str) -> Option<usize> {
        self.table
            .find(self.state.hash_one(key), |&i| entries[i].0 == key)
            .copied()
    }
}

type Pair = (Name, Value);

/// Iterator over `(&name, &value)`.
pub type Iter<'a> =
    std::iter::Map<std::slice::Iter<'a, Pair>, fn(&'a Pair) -> (&'a Name, &'a Value)>;
/// Iterator over `(&name, &mut value)`.
pub type IterMut<'a> =
    std::iter::Map<std::slice::IterMut<'a, Pair>, fn(&'a mut Pair) -> (&'a Name, &'a mut Value)>;

/// Iterator over the names.
pub type Keys<'a> = std::iter::Map<std::slice::Iter<'a, Pair>, fn(&'a Pair) -> &'a Name>;
/// Iterator over the values.
pub type Values<'a> = std::iter::Map<std::slice::Iter<'a, Pair>, fn(&'a Pair) -> &'a Value>;
/// Iterator over the values, to change them.
pub type ValuesMut<'a> =
    std::iter::Map<std::slice::IterMut<'a, Pair>, fn(&'a mut Pair) -> &'a mut Value>;

#[inline]
fn pair_key(p: &Pair) -> &Name {
    &p.0
}

#[inline]
fn pair_value(p: &Pair) -> &Value {
    &p.1
}

#[inline]
fn pair_value_mut(p: &mut Pair) -> &mut Value {
    &mut p.1
}

#[inline]
fn pair_ref(p: &Pair) -> (&Name, &Value) {
    (&p.0, &p.1)
}

#[inline]
fn pair_mut(p: &mut Pair) -> (&Name, &mut Value) {
    (&p.0, &mut p.1)
}

impl Fields {
    /// No fields.
    pub fn new() -> Fields {
        Fields::default()
    }

    /// Room for `n` fields before the entries grow.
    #[inline]
    pub fn with_capacity(n: usize) -> Fields {
        Fields {
            entries: Vec::with_capacity(n),
            index: None,
        }
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.entries.capacity()
    }

    /// Makes room for `n` more fields.
    #[inline]
    pub fn reserve(&mut self, n: usize) {
        self.entries.reserve(n);
        if let Some(ix) = &mut self.index {
            let entries = &self.entries;
            ix.table
                .reserve(n, |&j| ix.state.hash_one(entries[j].0.as_str()));
        }
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.index = None;
    }

    /// The position of field `key`.
    #[inline]
    pub fn get_index_of(&self, key: &str) -> Option<usize> {
        match &self.index {
            Some(ix) => ix.find(&self.entries, key),
            None => self.entries.iter().position(|(k, _)| k == key),
        }
    }

    #[inline]
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.get_index_of(key).map(|i| &self.entries[i].1)
    }

    #[inline]
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Value> {
        self.get_index_of(key).map(|i| &mut self.entries[i].1)
    }

    /// The position, name and value of field `key`.
    pub fn get_full(&self, key: &str) -> Option<(usize, &Name, &Value)> {
        self.get_index_of(key)
            .map(|i| (i, &self.entries[i].0, &self.entries[i].1))
    }

    pub fn get_key_value(&self, key: &str) -> Option<(&Name, &Value)> {
        self.get_index_of(key).map(|i| pair_ref(&self.entries[i]))
    }

    #[inline]
    pub fn contains_key(&self, key: &str) -> bool {
        self.get_index_of(key).is_some()
    }

    /// The field at position `i`.
    #[inline]
    pub fn get_index(&self, i: usize) -> Option<(&Name, &Value)> {
        self.entries.get(i).map(pair_ref)
    }

    pub fn get_index_mut(&mut self, i: usize) -> Option<(&Name, &mut Value)> {
        self.entries.get_mut(i).map(pair_mut)
    }

    pub fn first(&self) -> Option<(&Name, &Value)> {
        self.entries.first().map(pair_ref)
    }

    pub fn last(&self) -> Option<(&Name, &Value)> {
        self.entries.last().map(pair_ref)
    }

    /// Sets field `key`: a new field goes last; an existing one keeps its
    /// place and its old value is returned.
    #[inline]
    pub fn insert(&mut self, key: Name, value: Value) -> Option<Value> {
        self.insert_full(key, value).1
    }

    /// [`Fields::insert`], also giving the field's position.
    #[inline]
    pub fn insert_full(&mut self, key: Name, value: Value) -> (usize, Option<Value>) {
        if let Some(i) = self.get_index_of(&key) {
            return (i, Some(std::mem::replace(&mut self.entries[i].1, value)));
        }
        let i = self.entries.len();
        match &mut self.index {
            Some(ix) => {
                let h = ix.state.hash_one(key.as_str());
                self.entries.push((key, value));
                let entries = &self.entries;
                ix.table
                    .insert_unique(h, i, |&j| ix.state.hash_one(entries[j].0.as_str()));
            }
            None => {
                self.entries.push((key, value));
                if self.entries.len() > INDEXED_ABOVE {
                    self.index = Some(Lookup::build(&self.entries));
                }
            }
        }
        (i, None)
    }

    /// Removes field `key`, keeping the others in order.
    pub fn shift_remove(&mut self, key: &str) -> Option<Value> {
        self.shift_remove_entry(key).map(|(_, v)| v)
    }

    pub fn shift_remove_entry(&mut self, key: &str) -> Option<(Name, Value)> {
        let i = self.get_index_of(key)?;
        Some(self.shift_remove_index(i))
    }

    /// Removes the field at position `i` (which must exist), keeping the
    /// others in order.
    pub fn shift_remove_index(&mut self, i: usize) -> (Name, Value) {
        let removed = self.entries.remove(i);
        self.reindex();
        removed
    }

    /// Keeps the fields for which `keep` is true, in order.
    pub fn retain(&mut self, mut keep: impl FnMut(&Name, &mut Value) -> bool) {
        let before = self.entries.len();
        self.entries.retain_mut(|(k, v)| keep(k, v));
        if self.entries.len() != before {
            self.reindex();
        }
    }

    /// Sorts the fields by name.
    pub fn sort_keys(&mut self) {
        self.entries.sort_by(|a, b| a.0.cmp(&b.0));
        self.reindex();
    }

    /// Rebuilds the index after positions changed (or drops it when the
    /// map got narrow).
    fn reindex(&mut self) {
        self.index = (self.entries.len() > INDEXED_ABOVE).then(|| Lookup::build(&self.entries));
    }

    #[inline]
    pub fn iter(&self) -> Iter<'_> {
        self.entries.iter().map(pair_ref as _)
    }

    pub fn iter_mut(&mut self) -> IterMut<'_> {
        self.entries.iter_mut().map(pair_mut as _)
    }

    pub fn keys(&self) -> Keys<'_> {
        self.entries.iter().map(pair_key as _)
    }

    pub fn values(&self) -> Values<'_> {
        self.entries.iter().map(pair_value as _)
    }

    pub fn values_mut(&mut self) -> ValuesMut<'_> {
        self.entries.iter_mut().map(pair_value_mut as _)
    }

    pub fn into_keys(self) -> std::iter::Map<std::vec::IntoIter<Pair>, fn(Pair) -> Name> {
        self.entries.into_iter().map((|(k, _)| k) as _)
    }

    pub fn into_values(self) -> std::iter::Map<std::vec::IntoIter<Pair>, fn(Pair) -> Value> {
        self.entries.into_iter().map((|(_, v)| v) as _)
    }
}

impl PartialEq for Fields {
    /// The same names with equal values, in any order (as `IndexMap`).
    fn eq(&self, other: &Fields) -> bool {
        self.len() == other.len() && self.iter().all(|(k, v)| other.get(k) == Some(v))
    }
}

impl fmt::Debug for Fields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl IndexOp<&str> for Fields {
    type Output = Value;

    /// The value of field `key`; panics when there is none.
    fn index(&self, key: &str) -> &Value {
        self.get(key).unwrap_or_else(|| panic!("no field `{key}`"))
    }
}

impl Extend<(Name, Value)> for Fields {
    fn extend<I: IntoIterator<Item = (Name, Value)>>(&mut self, iter: I) {
        let iter = iter.into_iter();
        let (lower, _) = iter.size_hint();
        self.reserve(if self.is_empty() {
            lower
        } else {
            lower.div_ceil(2)
        });
        for (k, v) in iter {
            self.insert(k, v);
        }
    }
}

impl FromIterator<(Name, Value)> for Fields {
    fn from_iter<I: IntoIterator<Item = (Name, Value)>>(iter: I) -> Fields {
        let mut f = Fields::new();
        f.extend(iter);
        f
    }
}

impl<const N: usize> From<[(Name, Value); N]> for Fields {
    fn from(pairs: [(Name, Value); N]) -> Fields {
        pairs.into_iter().collect()
    }
}

impl IntoIterator for Fields {
    type Item = (Name, Value);
    type IntoIter = std::vec::IntoIter<(Name, Value)>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

impl<'a> IntoIterator for &'a Fields {
    type Item = (&'a Name, &'a Value);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl<'a> IntoIterator for &'a mut Fields {
    type Item = (&'a Name, &'a mut Value);
    type IntoIter = IterMut<'a>;

    fn into_iter(self) -> IterMut<'a> {
        self.iter_mut()
    }
}

impl Serialize for Fields {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Fields, D::Error> {
        struct FieldsVisitor;

        impl<'de> Visitor<'de> for FieldsVisitor {
            type Value = Fields;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of field names to values")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
                let _level =
                    crate::limits::DepthGuard::enter().map_err(serde::de::Error::custom)?;
                // a hostile length prefix must not reserve gigabytes
                let mut f = Fields::with_capacity(map.size_hint().unwrap_or(0).min(4096));
                while let Some((k, v)) = map.next_entry::<Name, Value>()? {
                    f.insert(k, v);
                }
                Ok(f)
            }
        }

        d.deserialize_map(FieldsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(i: usize) -> Name {
        format!("f{i}").into()
    }

    #[test]
    fn narrow_and_wide_maps_agree_on_every_operation() {
        for width in [0, 1, 5, INDEXED_ABOVE, INDEXED_ABOVE + 1, 100] {
            let mut f = Fields::new();
            for i in 0..width {
                assert_eq!(f.insert(name(i), Value::Int(i as i64)), None);
            }
            assert_eq!(f.len(), width);
            assert_eq!(f.index.is_some(), width > INDEXED_ABOVE, "width {width}");
            for i in 0..width {
                assert_eq!(
                    f.get(&name(i)),
                    Some(&Value::Int(i as i64)),
                    "width {width}"
                );
                assert_eq!(f.get_index_of(&name(i)), Some(i));
            }
            assert_eq!(f.get("nope"), None);
            // replacing keeps the place
            if width > 2 {
                assert_eq!(f.insert(name(1), Value::Null), Some(Value::Int(1)));
                assert_eq!(f.get_index(1).unwrap(), (&name(1), &Value::Null));
                // removing shifts the later ones down, and lookups follow
                assert_eq!(f.shift_remove(&name(0)), Some(Value::Int(0)));
                assert_eq!(f.get_index_of(&name(2)), Some(1));
                assert_eq!(f.get(&name(width - 1)), Some(&Value::Int(width as i64 - 1)));
                assert_eq!(f.get(&name(0)), None);
                assert_eq!(f.len(), width - 1);
                f.retain(|k, _| k.as_str() != "f2");
                assert_eq!(f.get(&name(2)), None);
                assert_eq!(f.get_index_of(&name(3)), Some(1));
            }
            let order: Vec<&Name> = f.keys().collect();
            let mut sorted = order.clone();
            sorted.sort_by_key(|n| n[1..].parse::<usize>().unwrap());
            assert_eq!(order, sorted, "insertion order kept");
        }
    }

    #[test]
    fn equality_ignores_order_and_serde_keeps_it() {
        let a: Fields = [("x".into(), Value::Int(1)), ("y".into(), Value::Int(2))].into();
        let b: Fields = [("y".into(), Value::Int(2)), ("x".into(), Value::Int(1))].into();
        assert_eq!(a, b);
        let c: Fields = [("y".into(), Value::Int(3)), ("x".into(), Value::Int(1))].into();
        assert_ne!(a, c);
        let json = serde_json::to_string(&b).unwrap();
        assert_eq!(json, r#"{"y":{"Int":2},"x":{"Int":1}}"#);
        let back: Fields = serde_json::from_str(&json).unwrap();
        assert_eq!(back.first().unwrap().0, "y");
    }

    #[test]
    fn a_duplicate_name_in_input_keeps_one_field() {
        let f: Fields = [("x".into(), Value::Int(1)), ("x".into(), Value::Int(2))].into();
        assert_eq!(f.len(), 1);
        assert_eq!(f["x"], Value::Int(2));
    }
}

//! Parses only the parts of a payload a mapping reads.
//!
//! Building a whole `serde_json::Value` for every message allocates every key and
//! value, and made the mapping more than twice as costly as the compiled plugin it
//! replaces (a serde struct reads the keys it needs and skips the rest). This parser
//! walks the payload with the tree of the mapping's pointers ([`Needed`]): keys nobody
//! reads are skipped without allocating, objects on a pointer's way become a slot per
//! needed key (no key strings, no map), and the value a pointer ends at is kept whole
//! as a `serde_json::Value`. Each pointer carries its route through the tree
//! ([`Route`]), so that it finds in the result what it would find in the full value.

use std::fmt;

use serde::de::{
    value::SeqAccessDeserializer, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess,
    Visitor,
};
use serde_json::Value as J;

/// The keys the mapping reads below one point of the payload.
#[derive(Debug, Clone, Default)]
pub(crate) struct Needed {
    /// Keep this value whole (a pointer ends here).
    whole: bool,
    /// Keys read below this point; few, so a list beats a hash map.
    children: Vec<(String, Needed)>,
}

impl Needed {
    /// Adds the path of one pointer.
    pub fn add(&mut self, tokens: &[String]) {
        if self.whole {
            return;
        }
        match tokens.split_first() {
            None => {
                self.whole = true;
                self.children.clear();
            }
            Some((t, rest)) => {
                let at = match self.children.iter().position(|(k, _)| k == t) {
                    Some(i) => i,
                    None => {
                        self.children.push((t.clone(), Needed::default()));
                        self.children.len() - 1
                    }
                };
                self.children[at].1.add(rest);
            }
        }
    }

    /// The payload with what this tree needs.
    pub fn parse(&self, text: &str) -> Result<Part, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(text);
        let v = self.deserialize(&mut de)?;
        de.end()?;
        Ok(v)
    }

    /// The route of a pointer added before: the child index at each level down to the
    /// node that keeps its value whole.
    pub fn route(&self, tokens: &[String]) -> Route {
        let mut node = self;
        let mut steps = Vec::new();
        for t in tokens {
            if node.whole {
                break;
            }
            let i = node
                .children
                .iter()
                .position(|(k, _)| k == t)
                .expect("route of a pointer that was added");
            steps.push(i);
            node = &node.children[i].1;
        }
        Route {
            steps,
            tokens: tokens.to_vec(),
        }
    }
}

/// The parsed payload: at a needed object, one slot per needed key (in [`Needed`]'s
/// order); where a pointer ends, or where the payload is not an object, the value.
#[derive(Debug)]
pub(crate) enum Part {
    Whole(J),
    Object(Vec<Option<Part>>),
}

/// Where a pointer's value lies in a [`Part`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Route {
    steps: Vec<usize>,
    tokens: Vec<String>,
}

impl Route {
    pub fn find<'p>(&self, mut part: &'p Part) -> Option<&'p J> {
        for (depth, &i) in self.steps.iter().enumerate() {
            match part {
                Part::Object(slots) => part = slots[i].as_ref()?,
                Part::Whole(j) => return walk(j, &self.tokens[depth..]),
            }
        }
        match part {
            Part::Whole(j) => walk(j, &self.tokens[self.steps.len()..]),
            // A route ends at a node kept whole; an object here is a tree mismatch.
            Part::Object(_) => None,
        }
    }
}

fn walk<'j>(j: &'j J, tokens: &[String]) -> Option<&'j J> {
    crate::compile::walk(j, tokens)
}

impl<'de> DeserializeSeed<'de> for &Needed {
    type Value = Part;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Part, D::Error> {
        if self.whole {
            return serde::Deserialize::deserialize(d).map(Part::Whole);
        }
        d.deserialize_any(Sparse(self))
    }
}

/// Builds the value at an inner point of the tree: an object keeps the needed keys;
/// anything else (an array a pointer indexes into, a scalar where an object was
/// expected) is kept whole, so that lookups behave as on the full value.
struct Sparse<'a>(&'a Needed);

impl<'de> Visitor<'de> for Sparse<'_> {
    type Value = Part;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Part, A::Error> {
        let mut slots: Vec<Option<Part>> = Vec::with_capacity(self.0.children.len());
        slots.resize_with(self.0.children.len(), || None);
        while let Some(found) = map.next_key_seed(Key(self.0))? {
            match found {
                // A key given twice: the last wins, as in serde_json's maps.
                Some(i) => slots[i] = Some(map.next_value_seed(&self.0.children[i].1)?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Part::Object(slots))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Part, A::Error> {
        serde::Deserialize::deserialize(SeqAccessDeserializer::new(seq)).map(Part::Whole)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Part, E> {
        Ok(Part::Whole(J::Bool(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Part, E> {
        Ok(Part::Whole(J::from(v)))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Part, E> {
        Ok(Part::Whole(J::from(v)))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Part, E> {
        Ok(Part::Whole(
            serde_json::Number::from_f64(v).map_or(J::Null, J::Number),
        ))
    }

    fn visit_str<E>(self, v: &str) -> Result<Part, E> {
        Ok(Part::Whole(J::String(v.to_string())))
    }

    fn visit_unit<E>(self) -> Result<Part, E> {
        Ok(Part::Whole(J::Null))
    }
}

/// A key, compared with the needed keys where it lies in the input: the index of the
/// match, or `None` for a key nobody reads.
struct Key<'a>(&'a Needed);

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, v: &str) -> Result<Option<usize>, E> {
        Ok(self.0.children.iter().position(|(k, _)| k == v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::Pointer;

    #[test]
    fn every_needed_pointer_finds_what_it_finds_in_the_full_value() {
        let text = r#"{"a":{"b":1,"c":[1,{"d":2}],"skip":{"x":[1,2,3]}},"s":"t\"x","n":null,
            "arr":[{"k":1},{"k":2}],"o":{"p":{"q":true}},"e\u00e9":5,"top":7}"#;
        let full: J = serde_json::from_str(text).unwrap();
        let pointers = [
            "/a/b",
            "/a/c/1/d",
            "/s",
            "/n",
            "/arr",
            "/o/p/q",
            "/eé",
            "/missing/x",
            "/top/x",
        ];
        let mut needed = Needed::default();
        let parsed: Vec<Pointer> = pointers
            .iter()
            .map(|p| Pointer::parse(p).unwrap())
            .collect();
        for p in &parsed {
            needed.add(&p.tokens);
        }
        let sparse = needed.parse(text).unwrap();
        for p in &parsed {
            let route = needed.route(&p.tokens);
            assert_eq!(route.find(&sparse), p.find(&full), "{}", p.text);
        }
        // What no pointer reads is not kept.
        match &sparse {
            Part::Object(slots) => assert_eq!(slots.len(), 8),
            other => panic!("{other:?}"),
        }
        // A payload whose shape differs from the pointers' finds nothing, as in full.
        let other = needed.parse(r#"{"a":[1,2],"o":5}"#).unwrap();
        for p in &parsed {
            let full: J = serde_json::from_str(r#"{"a":[1,2],"o":5}"#).unwrap();
            assert_eq!(
                needed.route(&p.tokens).find(&other),
                p.find(&full),
                "{}",
                p.text
            );
        }
        // Malformed input is refused as by a full parse.
        assert!(needed.parse(r#"{"a":{"b":1}"#).is_err());
        assert!(needed.parse(r#"{"zz":[1,}"#).is_err());
        assert!(needed.parse(r#"{"a":1} x"#).is_err());
    }
}

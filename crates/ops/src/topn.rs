//! A bounded label set for metrics: the first `N` distinct values seen get a label
//! of their own, every later one is counted as `other`, so a client-controlled
//! value (a destination domain) cannot grow the metric families without bound.
//!
//! Owns: the mapping from a value to its label index. The set is read-locked for a
//! lookup (no allocation once a value is known); it grows only until full.

use std::sync::RwLock;

/// The label of everything beyond the first `N` values.
pub const OTHER: &str = "other";

#[derive(Debug)]
pub struct TopN {
    capacity: usize,
    known: RwLock<Vec<String>>,
}

impl TopN {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            known: RwLock::new(Vec::with_capacity(capacity)),
        }
    }

    /// The label for `value` (compared ASCII case-insensitively): the value itself,
    /// lower-cased, while there is room or once it is known, else [`OTHER`].
    pub fn label(&self, value: &str) -> String {
        if let Ok(known) = self.known.read()
            && let Some(v) = known.iter().find(|k| k.eq_ignore_ascii_case(value))
        {
            return v.clone();
        }
        let Ok(mut known) = self.known.write() else {
            return OTHER.to_owned();
        };
        if let Some(v) = known.iter().find(|k| k.eq_ignore_ascii_case(value)) {
            return v.clone();
        }
        if known.len() >= self.capacity || value.eq_ignore_ascii_case(OTHER) {
            return OTHER.to_owned();
        }
        let v = value.to_ascii_lowercase();
        known.push(v.clone());
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_n_then_other() {
        let t = TopN::new(2);
        assert_eq!(t.label("a.example"), "a.example");
        assert_eq!(t.label("B.example"), "b.example");
        assert_eq!(t.label("c.example"), OTHER);
        assert_eq!(t.label("A.EXAMPLE"), "a.example");
        assert_eq!(t.label("b.example"), "b.example");
        let t = TopN::new(5);
        assert_eq!(t.label("other"), OTHER);
        let t = TopN::new(0);
        assert_eq!(t.label("x"), OTHER);
    }
}

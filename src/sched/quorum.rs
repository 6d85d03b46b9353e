//! Quorum validation: when do the outputs distinct workers reported for one task agree, and
//! which of them does the task keep.
//!
//! Pure functions over JSON values. Two outputs agree when their canonical JSON (object keys
//! sorted, no whitespace) is byte-equal; with a tolerance, numbers anywhere in them may differ by
//! at most that much (absolute), and everything else must still be equal: the same types, array
//! lengths, keys and strings. Agreement with a tolerance is not transitive, so a verdict compares
//! every candidate with each earlier one: the first candidate that enough others agree with
//! gives the task its output, in the order they arrived.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::job::Quorum;

/// The canonical text of a JSON value: object keys sorted (by their UTF-8 bytes), no
/// whitespace, strings and numbers as serde_json writes them.
pub fn canonical(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

// Recursion is bounded: serde_json refuses to parse nesting deeper than 128 levels, and every
// value here came through its parser.
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// SHA-256 of the canonical text, hex: how the store and the report name an output.
pub fn digest(value: &Value) -> String {
    Sha256::digest(canonical(value).as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether two outputs agree under `tolerance` (see the module documentation).
pub fn agree(a: &Value, b: &Value, tolerance: f64) -> bool {
    if tolerance <= 0.0 {
        return canonical(a) == canonical(b);
    }
    within(a, b, tolerance)
}

fn within(a: &Value, b: &Value, tolerance: f64) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => (x - y).abs() <= tolerance,
            _ => x == y,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| within(x, y, tolerance))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| within(v, w, tolerance)))
        }
        (x, y) => x == y,
    }
}

/// What the candidates of one task add up to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tally {
    /// `n` candidates agree: the task keeps the output of `agreed[0]`, the first of them to
    /// arrive; `dissent` are the indices of the others.
    Agreed {
        agreed: Vec<usize>,
        dissent: Vec<usize>,
    },
    /// No output has enough support yet; the best has `best` candidates behind it.
    Open { best: usize },
    /// So many candidates disagree that the task is given up (see [`max_candidates`]).
    Hopeless,
}

/// Candidates a task may collect before it is given up as giving no stable output: twice the
/// quorum and one more. A deterministic kernel on honest workers agrees at the first `n`; this
/// many outputs without `n` of them agreeing means the kernel is not deterministic (declare a
/// `tolerance`) or the pool is full of liars.
pub fn max_candidates(rule: &Quorum) -> usize {
    2 * rule.n as usize + 1
}

/// Tallies candidates (in arrival order) under `rule`. Quadratic in the candidates, of which a
/// task has at most [`max_candidates`].
pub fn tally(outputs: &[&Value], rule: &Quorum) -> Tally {
    let n = rule.n as usize;
    let mut best = 0;
    for (i, a) in outputs.iter().enumerate() {
        let agreed: Vec<usize> = (0..outputs.len())
            .filter(|&j| j == i || agree(a, outputs[j], rule.tolerance))
            .collect();
        if agreed.len() >= n {
            // Those that agree with the first of the group; the rest dissent. Ordered so that
            // the group's first arrival gives the output.
            let dissent = (0..outputs.len()).filter(|j| !agreed.contains(j)).collect();
            return Tally::Agreed { agreed, dissent };
        }
        best = best.max(agreed.len());
    }
    if outputs.len() >= max_candidates(rule) {
        Tally::Hopeless
    } else {
        Tally::Open { best }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(n: u32, tolerance: f64) -> Quorum {
        Quorum { n, tolerance }
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level_and_drops_whitespace() {
        let a: Value = serde_json::from_str(r#"{ "b": [1, {"z": 1, "a": 2}], "a": "x" }"#).unwrap();
        assert_eq!(canonical(&a), r#"{"a":"x","b":[1,{"a":2,"z":1}]}"#);
        let b: Value = serde_json::from_str(r#"{"a":"x","b":[1,{"z":1,"a":2}]}"#).unwrap();
        assert_eq!(digest(&a), digest(&b));
        assert_ne!(
            digest(&a),
            digest(&json!({"a": "y", "b": [1, {"a": 2, "z": 1}]}))
        );
    }

    #[test]
    fn without_a_tolerance_only_equal_canonical_json_agrees() {
        assert!(agree(
            &json!({"count": 5, "p": [2, 3]}),
            &json!({"p": [2, 3], "count": 5}),
            0.0
        ));
        assert!(!agree(&json!({"count": 5}), &json!({"count": 6}), 0.0));
        // 1 and 1.0 are different JSON text.
        assert!(!agree(&json!(1), &json!(1.0), 0.0));
        assert!(!agree(&json!([1, 2]), &json!([1, 2, 3]), 0.0));
    }

    #[test]
    fn a_tolerance_lets_numbers_differ_but_nothing_else() {
        let t = 0.01;
        assert!(agree(
            &json!({"x": 1.0, "v": [0.5]}),
            &json!({"x": 1.005, "v": [0.509]}),
            t
        ));
        assert!(agree(&json!(1), &json!(1.0), t));
        assert!(!agree(&json!({"x": 1.0}), &json!({"x": 1.02}), t));
        assert!(!agree(&json!({"x": 1.0}), &json!({"y": 1.0}), t));
        assert!(!agree(&json!({"x": 1.0}), &json!({"x": "1.0"}), t));
        assert!(!agree(&json!([1.0]), &json!([1.0, 1.0]), t));
        assert!(!agree(&json!({"x": 1.0}), &json!({"x": 1.0, "y": 2}), t));
    }

    #[test]
    fn the_first_output_with_enough_support_wins_and_the_others_dissent() {
        let (good, bad) = (json!({"count": 5}), json!({"count": 6}));
        assert_eq!(tally(&[&good], &rule(2, 0.0)), Tally::Open { best: 1 });
        assert_eq!(
            tally(&[&good, &bad], &rule(2, 0.0)),
            Tally::Open { best: 1 }
        );
        assert_eq!(
            tally(&[&bad, &good, &good], &rule(2, 0.0)),
            Tally::Agreed {
                agreed: vec![1, 2],
                dissent: vec![0]
            }
        );
        // Two liars agreeing with each other win a quorum of two: a quorum of three outvotes
        // them.
        assert_eq!(
            tally(&[&bad, &bad], &rule(2, 0.0)),
            Tally::Agreed {
                agreed: vec![0, 1],
                dissent: vec![]
            }
        );
        assert_eq!(
            tally(&[&bad, &bad, &good, &good], &rule(3, 0.0)),
            Tally::Open { best: 2 }
        );
    }

    #[test]
    fn a_task_whose_outputs_never_agree_is_given_up_at_twice_the_quorum_and_one() {
        let outs: Vec<Value> = (0..5).map(|i| json!(i)).collect();
        let refs: Vec<&Value> = outs.iter().collect();
        assert_eq!(tally(&refs[..4], &rule(2, 0.0)), Tally::Open { best: 1 });
        assert_eq!(tally(&refs, &rule(2, 0.0)), Tally::Hopeless);
        // With a tolerance they are close enough.
        assert!(matches!(tally(&refs, &rule(2, 1.0)), Tally::Agreed { .. }));
    }
}

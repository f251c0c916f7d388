//! Subjects: the node that must act, or that emitted, is always in the subject,
//! so an operator can watch one node with `nats sub 'migration.node2.>'`.

use serde::{Deserialize, Serialize};

/// The conversions every validated name shares (`as_str`, `Display`,
/// `FromStr`, `TryFrom<String>` for serde, `Into<String>`), written once so
/// that a node name and a workload name cannot drift apart. `$name` is a
/// newtype over `String` with `fn new(impl Into<String>) -> Result<Self, $error>`.
macro_rules! validated_name {
    ($name:ident, $error:ident) => {
        impl $name {
            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = $error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = $error;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(n: $name) -> String {
                n.0
            }
        }
    };
}
pub(crate) use validated_name;

/// Why a string cannot be a node name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeNameError {
    /// node name is empty
    #[error("node name is empty")]
    Empty,
    /// node name is longer than 64 bytes
    #[error("node name {0:?} is longer than 64 bytes")]
    TooLong(String),
    /// node name holds a character NATS subjects cannot carry
    #[error("node name {0:?} may only hold letters, digits, '-' and '_' (it becomes one NATS subject token)")]
    BadCharacter(String),
}

/// A validated node name.
///
/// It exists because a node name becomes one token of a NATS subject: a `.`,
/// `*`, `>` or space in it would silently change which subjects match, so it is
/// checked once at the edge and carried as this type afterwards.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeName(String);

impl NodeName {
    /// Checks `name` and wraps it.
    ///
    /// # Errors
    /// [`NodeNameError`] when the name is empty, longer than 64 bytes, or holds
    /// anything but ASCII letters, digits, `-` and `_`.
    pub fn new(name: impl Into<String>) -> Result<Self, NodeNameError> {
        let name = name.into();
        if name.is_empty() {
            return Err(NodeNameError::Empty);
        }
        if name.len() > 64 {
            return Err(NodeNameError::TooLong(name));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(NodeNameError::BadCharacter(name));
        }
        Ok(Self(name))
    }
}

validated_name!(NodeName, NodeNameError);

/// `telemetry.<node>`: where a node's samples go.
pub fn telemetry(node: &NodeName) -> String {
    format!("telemetry.{node}")
}

/// `node.<node>.<verb>`: a node's life-cycle (joined, left).
pub fn node_event(node: &NodeName, verb: &str) -> String {
    format!("node.{node}.{verb}")
}

/// Extracts the node token of any loadshift subject (`telemetry.N`,
/// `node.N.joined`, `migration.N.requested`, ...), so that a consumer can check
/// that a subject and the envelope's `node` agree.
pub fn node_of(subject: &str) -> Option<&str> {
    let mut parts = subject.split('.');
    let _family = parts.next()?;
    parts.next().filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names() {
        for ok in ["node1", "vm-17", "a_b", "X"] {
            assert_eq!(NodeName::new(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn rejects_names_that_would_change_subject_matching() {
        assert_eq!(NodeName::new(""), Err(NodeNameError::Empty));
        for bad in ["a.b", "*", ">", "a b", "nöde", "x\n"] {
            assert!(
                matches!(NodeName::new(bad), Err(NodeNameError::BadCharacter(_))),
                "{bad:?} accepted"
            );
        }
        assert!(matches!(
            NodeName::new("a".repeat(65)),
            Err(NodeNameError::TooLong(_))
        ));
    }

    #[test]
    fn subjects_carry_the_node() {
        let n = NodeName::new("node2").unwrap();
        assert_eq!(telemetry(&n), "telemetry.node2");
        assert_eq!(node_event(&n, "joined"), "node.node2.joined");
        assert_eq!(node_of("node.node2.joined"), Some("node2"));
        assert_eq!(node_of("telemetry.node2"), Some("node2"));
        assert_eq!(node_of("telemetry"), None);
    }

    #[test]
    fn deserializing_checks_the_name() {
        assert!(serde_json::from_str::<NodeName>("\"a.b\"").is_err());
        assert_eq!(
            serde_json::from_str::<NodeName>("\"n1\"").unwrap().as_str(),
            "n1"
        );
    }
}

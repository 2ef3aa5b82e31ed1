//! Identifiers: workflow, run, step, owner and human-request ids as distinct types.
//!
//! Ids are the only things that ever appear in plaintext at rest (store keys, queue payloads),
//! so they are kept small and validated: `[A-Za-z0-9_.-]`, 1..=128 characters.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            pub fn new(s: impl Into<String>) -> Self {
                Self(s.into())
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }
    };
}

id_type!(
    /// A workflow's id, as declared in its spec (`id:`).
    WorkflowId
);
id_type!(
    /// One run of a workflow; a ULID so runs sort by creation time.
    RunId
);
id_type!(
    /// A step's id within its workflow.
    StepId
);
id_type!(
    /// The user who owns a workflow; bound into the workflow's encryption key.
    OwnerId
);
id_type!(
    /// A request for a human decision; unique per run, step and attempt.
    RequestId
);

id_type!(
    /// A trigger's id within its workflow (`triggers[].id`).
    TriggerId
);
id_type!(
    /// One fire of a trigger; a ULID so a workflow's fire history sorts by time.
    FireId
);

impl FireId {
    /// A fresh, time-ordered fire id.
    pub fn generate() -> Self {
        Self(ulid::Ulid::generate().to_string())
    }
}

impl RunId {
    /// A fresh, time-ordered run id.
    pub fn generate() -> Self {
        Self(ulid::Ulid::generate().to_string())
    }
}

impl RequestId {
    /// The request id for a human pause at `step` of `run` (one open request per step at a time).
    pub fn for_step(run: &RunId, step: &StepId, seq: u32) -> Self {
        Self(format!("{run}.{step}.{seq}"))
    }
}

/// Whether `s` is acceptable as an id: non-empty, at most 128 characters of `[A-Za-z0-9_.-]`.
pub fn is_valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

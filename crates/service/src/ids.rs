//! The ids that name rows: a job, an upload, an API key's public fingerprint.
//!
//! Each is its own type so that a job id cannot be passed where an owner is expected (the store
//! takes many of both, side by side). They do not validate: an id in a request path is whatever
//! the client sent, and a lookup that finds nothing answers 404 — a malformed id is simply an id
//! that names nothing. They serialise, bind and read back as the plain text they hold.

use std::convert::Infallible;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type)]
        #[serde(transparent)]
        #[sqlx(transparent)]
        pub struct $name(String);

        impl $name {
            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // `pad`, not `write_str`: a table's `{:<20}` lines up.
                f.pad(&self.0)
            }
        }

        impl From<String> for $name {
            fn from(id: String) -> $name {
                $name(id)
            }
        }

        impl FromStr for $name {
            type Err = Infallible;

            fn from_str(id: &str) -> Result<$name, Infallible> {
                Ok($name(id.to_string()))
            }
        }

        impl From<&str> for $name {
            fn from(id: &str) -> $name {
                $name(id.to_string())
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

id_type!(
    /// A job: `job_` and 32 hex digits.
    JobId
);

id_type!(
    /// An uploaded file: `vid_` and 32 hex digits.
    UploadId
);

id_type!(
    /// An API key's public name, `kfp_` and the first 16 hex digits of the key's sha256: what
    /// jobs, uploads, the ledger and usage are owned by, and what admins address a key by.
    KeyFingerprint
);

impl JobId {
    /// A new, random job id.
    pub fn generate() -> JobId {
        JobId(format!("job_{}", uuid::Uuid::new_v4().simple()))
    }
}

impl UploadId {
    /// A new, random upload id.
    pub fn generate() -> UploadId {
        UploadId(format!("vid_{}", uuid::Uuid::new_v4().simple()))
    }
}

impl KeyFingerprint {
    /// The fingerprint of the key whose sha256 is `key_hash` (hex).
    pub fn of_hash(key_hash: &str) -> KeyFingerprint {
        KeyFingerprint(format!("kfp_{}", &key_hash[..16.min(key_hash.len())]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_their_text_on_the_wire() {
        let id = JobId::from("job_abc");
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"job_abc\"");
        assert_eq!(serde_json::from_str::<JobId>("\"job_abc\"").unwrap(), id);
        assert_eq!(id.to_string(), "job_abc");
    }

    #[test]
    fn generated_ids_have_their_prefix_and_differ() {
        let (a, b) = (JobId::generate(), JobId::generate());
        assert!(a.as_str().starts_with("job_") && a.as_str().len() == 36, "{a}");
        assert_ne!(a, b);
        assert!(UploadId::generate().as_str().starts_with("vid_"));
        assert_eq!(KeyFingerprint::of_hash(&"ab".repeat(32)), "kfp_abababababababab");
    }
}

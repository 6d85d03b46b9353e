//! Who may connect as a worker: the shared worker token, or one token per volunteer
//! (`token issue --name N`), stored as SHA-256 digests only, revocable one by one.
//!
//! A worker id is bound to the first volunteer token that says hello with it: from then on only
//! that token may use that id (its replicas, its measured history, its credit), and the shared
//! token never can. An id first seen with the shared token moves to a volunteer token the first
//! time one claims it, never back. A revoked token is refused at hello with its own message;
//! issuing the same name again gives that volunteer a new token and keeps their ids.
//!
//! The connection tasks read this (hello, bulk transfers); only the driver changes it, after
//! the store has the change.

use std::collections::HashMap;
use std::sync::RwLock;

use super::auth::token_matches;
use crate::proto::{WorkerId, sha256_hex};

/// How a worker proved itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// The pool's shared worker token.
    Shared,
    /// The token issued to this volunteer.
    Volunteer(String),
}

impl Auth {
    /// The volunteer's name, if any.
    pub fn volunteer(&self) -> Option<&str> {
        match self {
            Auth::Shared => None,
            Auth::Volunteer(n) => Some(n),
        }
    }
}

/// Why a token or a worker id is refused; the text is what the worker is told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("invalid worker token")]
    Invalid,
    #[error("worker token {0:?} was revoked by the operator")]
    Revoked(String),
    #[error("worker id {worker} belongs to another volunteer's token")]
    OthersWorker { worker: WorkerId },
}

/// A volunteer token as stored: its name, digest and dates.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TokenRecord {
    pub name: String,
    #[serde(skip)]
    pub sha256: String,
    pub created_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_ms: Option<u64>,
}

#[derive(Default)]
struct Inner {
    /// Digest -> (name, revoked).
    by_digest: HashMap<String, (String, bool)>,
    /// Name -> digest, for revocation.
    digest_of: HashMap<String, String>,
    /// Worker id -> the volunteer whose token it is bound to.
    bound: HashMap<WorkerId, String>,
}

/// The credentials a supervisor accepts from workers.
pub struct Credentials {
    shared: String,
    inner: RwLock<Inner>,
}

/// Whether `name` can name a volunteer token: 1-64 characters of letters, digits, `.`, `-`, `_`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// The digest a token is kept as.
pub fn digest(token: &str) -> String {
    sha256_hex(token.as_bytes())
}

impl Credentials {
    /// The shared token, the stored volunteer tokens, and the stored bindings of worker ids.
    pub fn new(
        shared: &str,
        tokens: &[TokenRecord],
        bindings: impl IntoIterator<Item = (WorkerId, String)>,
    ) -> Self {
        let mut inner = Inner::default();
        for t in tokens {
            inner.set(&t.name, &t.sha256, t.revoked_ms.is_some());
        }
        inner.bound = bindings.into_iter().collect();
        Self {
            shared: shared.to_owned(),
            inner: RwLock::new(inner),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Who a token belongs to. The shared token is compared in constant time; a volunteer
    /// token is looked up by its digest, which says nothing about any other token.
    pub fn check(&self, token: &str) -> Result<Auth, Refused> {
        if token_matches(token, &self.shared) {
            return Ok(Auth::Shared);
        }
        match self.read().by_digest.get(&digest(token)) {
            Some((name, false)) => Ok(Auth::Volunteer(name.clone())),
            Some((name, true)) => Err(Refused::Revoked(name.clone())),
            None => Err(Refused::Invalid),
        }
    }

    /// Whether `auth` may act as `worker`; `Ok(true)` when this would bind the id to a
    /// volunteer for the first time (the driver stores that, then calls [`Self::bind`]).
    pub fn may_use(&self, auth: &Auth, worker: &WorkerId) -> Result<bool, Refused> {
        let inner = self.read();
        match (auth, inner.bound.get(worker)) {
            (Auth::Shared, None) => Ok(false),
            (Auth::Volunteer(n), Some(b)) if n == b => Ok(false),
            (Auth::Volunteer(_), None) => Ok(true),
            (_, Some(_)) => Err(Refused::OthersWorker {
                worker: worker.clone(),
            }),
        }
    }

    pub fn bind(&self, worker: &WorkerId, volunteer: &str) {
        self.write()
            .bound
            .insert(worker.clone(), volunteer.to_owned());
    }

    /// A token (new, or a new one for a name seen before) becomes valid.
    pub fn issue(&self, name: &str, sha256: &str) {
        self.write().set(name, sha256, false);
    }

    /// Whether the named volunteer's token is issued and not revoked.
    pub fn is_valid(&self, name: &str) -> bool {
        let inner = self.read();
        inner
            .digest_of
            .get(name)
            .and_then(|d| inner.by_digest.get(d))
            .is_some_and(|(_, revoked)| !revoked)
    }

    /// The named token stops being valid. Whether it was valid.
    pub fn revoke(&self, name: &str) -> bool {
        let mut inner = self.write();
        let Some(d) = inner.digest_of.get(name).cloned() else {
            return false;
        };
        match inner.by_digest.get_mut(&d) {
            Some((_, revoked)) if !*revoked => {
                *revoked = true;
                true
            }
            _ => false,
        }
    }

    /// The worker ids bound to each volunteer.
    pub fn workers_of(&self, name: &str) -> Vec<WorkerId> {
        let mut ids: Vec<WorkerId> = self
            .read()
            .bound
            .iter()
            .filter(|(_, n)| n.as_str() == name)
            .map(|(w, _)| w.clone())
            .collect();
        ids.sort();
        ids
    }
}

impl Inner {
    fn set(&mut self, name: &str, sha256: &str, revoked: bool) {
        if let Some(old) = self.digest_of.insert(name.to_owned(), sha256.to_owned()) {
            self.by_digest.remove(&old);
        }
        self.by_digest
            .insert(sha256.to_owned(), (name.to_owned(), revoked));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, token: &str, revoked: bool) -> TokenRecord {
        TokenRecord {
            name: name.into(),
            sha256: digest(token),
            created_ms: 1,
            revoked_ms: revoked.then_some(2),
        }
    }

    #[test]
    fn each_token_says_who_it_is_and_a_revoked_one_says_so() {
        let c = Credentials::new(
            "shared-secret",
            &[
                record("alice", "tok-a", false),
                record("bob", "tok-b", true),
            ],
            [],
        );
        assert_eq!(c.check("shared-secret"), Ok(Auth::Shared));
        assert_eq!(c.check("tok-a"), Ok(Auth::Volunteer("alice".into())));
        assert_eq!(c.check("tok-b"), Err(Refused::Revoked("bob".into())));
        assert_eq!(c.check("nope"), Err(Refused::Invalid));
        assert!(c.is_valid("alice") && !c.is_valid("bob") && !c.is_valid("carol"));
        assert!(c.revoke("alice"));
        assert!(!c.revoke("alice"), "revoked twice");
        assert!(!c.is_valid("alice"));
        assert!(!c.revoke("carol"), "never issued");
        assert_eq!(c.check("tok-a"), Err(Refused::Revoked("alice".into())));
        // Issued again under the same name: the new token works, the old one is gone.
        c.issue("alice", &digest("tok-a2"));
        assert_eq!(c.check("tok-a2"), Ok(Auth::Volunteer("alice".into())));
        assert_eq!(c.check("tok-a"), Err(Refused::Invalid));
    }

    #[test]
    fn a_worker_id_is_bound_to_the_first_volunteer_token_that_uses_it() {
        let w = WorkerId::from("desk-1");
        let c = Credentials::new("s", &[record("alice", "a", false)], []);
        let alice = Auth::Volunteer("alice".into());
        let mallory = Auth::Volunteer("mallory".into());
        // Unbound: the shared token may use it; a volunteer's first use binds it.
        assert_eq!(c.may_use(&Auth::Shared, &w), Ok(false));
        assert_eq!(c.may_use(&alice, &w), Ok(true));
        c.bind(&w, "alice");
        assert_eq!(c.may_use(&alice, &w), Ok(false));
        let others = Err(Refused::OthersWorker { worker: w.clone() });
        assert_eq!(c.may_use(&mallory, &w), others);
        assert_eq!(c.may_use(&Auth::Shared, &w), others);
        assert_eq!(c.workers_of("alice"), vec![w.clone()]);
        assert!(c.workers_of("mallory").is_empty());
    }

    #[test]
    fn volunteer_names_are_plain_words() {
        for ok in ["alice", "lab-3.desk_2", &"x".repeat(64)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "a b", "../x", "é", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}

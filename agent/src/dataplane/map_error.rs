//! What a map write (or a map's opening) can fail with, typed: the RIB acts
//! on a full map (a change kept for a retry, counted), the others are
//! reported.

use std::path::PathBuf;

/// `ENOSPC`, `E2BIG`: the kernel's "this map is full" (an LPM trie, a hash).
const FULL_ERRNOS: [i32; 2] = [libc::ENOSPC, libc::E2BIG];
/// `ENOMEM`, `EAGAIN`, `EBUSY`: the kernel could not do it now.
const TRANSIENT_ERRNOS: [i32; 3] = [libc::ENOMEM, libc::EAGAIN, libc::EBUSY];

#[derive(Debug, thiserror::Error)]
pub enum MapError {
    /// A table at its size: no room for one more element.
    #[error("{map} is full ({capacity} entries)")]
    Full { map: &'static str, capacity: u32 },
    /// No free slot to publish a value into (all in use, or waiting out
    /// the grace period: too many changes within it).
    #[error("no free {what} slot for id {id}: {in_use} of {capacity} in use, {quarantined} waiting out the grace period (too many changes within it)")]
    NoFreeSlot { map: &'static str, what: &'static str, id: u32, in_use: usize, capacity: u32, quarantined: usize },
    /// An id the index has no word for.
    #[error("{what} id {id} is beyond the index ({ids} ids)")]
    BeyondIndex { map: &'static str, what: &'static str, id: u32, ids: u32 },
    /// The kernel refused an update or a removal of `key` in `map`.
    #[error("{what}")]
    Update {
        map: &'static str,
        key: String,
        /// What was being done, for the message.
        what: String,
        #[source]
        error: Box<aya::maps::MapError>,
    },
    /// Reading, opening or typing a map failed.
    #[error("{what}")]
    Access {
        map: String,
        what: String,
        #[source]
        error: Box<aya::maps::MapError>,
    },
    /// Mapping a map into the agent failed (`BPF_F_MMAPABLE`).
    #[error("{what}")]
    Os {
        map: &'static str,
        what: String,
        #[source]
        error: std::io::Error,
    },
    /// The object lacks a map this agent needs (or it is of another kind).
    #[error("map {map} missing from the object{detail}")]
    Missing { map: String, detail: &'static str },
    /// A pinned map (or a map of the object) of another layout than this
    /// agent's: it must not be adopted.
    #[error("{detail}")]
    Layout { path: PathBuf, detail: String },
    /// A pinned data plane without this agent's ABI stamp.
    #[error("{detail}")]
    Abi { dir: PathBuf, detail: String },
}

impl MapError {
    /// The kernel's errno, when the kernel refused.
    pub fn errno(&self) -> Option<i32> {
        match self {
            MapError::Update { error, .. } | MapError::Access { error, .. } => match error.as_ref() {
                aya::maps::MapError::SyscallError(e) => e.io_error.raw_os_error(),
                _ => None,
            },
            MapError::Os { error, .. } => error.raw_os_error(),
            _ => None,
        }
    }

    /// No room: in the agent's books or by the kernel's word.
    pub fn is_full(&self) -> bool {
        match self {
            MapError::Full { .. } | MapError::NoFreeSlot { .. } => true,
            MapError::Update { .. } => self.errno().is_some_and(|e| FULL_ERRNOS.contains(&e)),
            _ => false,
        }
    }

    /// Worth trying again later: no room now, or the kernel was short of memory.
    pub fn is_transient(&self) -> bool {
        self.is_full() || matches!(self, MapError::Update { .. }) && self.errno().is_some_and(|e| TRANSIENT_ERRNOS.contains(&e))
    }

    /// The map the error is about.
    pub fn map(&self) -> &str {
        match self {
            MapError::Full { map, .. }
            | MapError::NoFreeSlot { map, .. }
            | MapError::BeyondIndex { map, .. }
            | MapError::Update { map, .. }
            | MapError::Os { map, .. } => map,
            MapError::Access { map, .. } | MapError::Missing { map, .. } => map,
            MapError::Layout { .. } | MapError::Abi { .. } => "",
        }
    }

    /// The same error, its message prefixed with `context` (`context: message`).
    pub fn within(self, context: impl std::fmt::Display) -> MapError {
        match self {
            MapError::Update { map, key, what, error } => MapError::Update { map, key, what: format!("{context}: {what}"), error },
            MapError::Access { map, what, error } => MapError::Access { map, what: format!("{context}: {what}"), error },
            MapError::Os { map, what, error } => MapError::Os { map, what: format!("{context}: {what}"), error },
            other => other,
        }
    }
}

/// `result`'s aya error as an update of `key` in `map` that the kernel refused.
pub(crate) fn update<T>(
    result: Result<T, aya::maps::MapError>,
    map: &'static str,
    key: impl std::fmt::Display,
    what: impl FnOnce() -> String,
) -> Result<T, MapError> {
    result.map_err(|error| MapError::Update { map, key: key.to_string(), what: what(), error: Box::new(error) })
}

/// `result`'s aya error as a failed read, open or type check of `map`.
pub(crate) fn access<T>(
    result: Result<T, aya::maps::MapError>,
    map: impl Into<String>,
    what: impl FnOnce() -> String,
) -> Result<T, MapError> {
    result.map_err(|error| MapError::Access { map: map.into(), what: what(), error: Box::new(error) })
}

/// Whether `e` says the key was not there.
pub(crate) fn is_absent(e: &aya::maps::MapError) -> bool {
    match e {
        aya::maps::MapError::KeyNotFound => true,
        aya::maps::MapError::SyscallError(e) => e.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

/// A removal whose key was already gone is a removal done.
pub(crate) fn absent_is_fine(result: Result<(), aya::maps::MapError>) -> Result<(), aya::maps::MapError> {
    match result {
        Err(e) if is_absent(&e) => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(errno: i32) -> MapError {
        let io_error = std::io::Error::from_raw_os_error(errno);
        let error = Box::new(aya::maps::MapError::SyscallError(aya::sys::SyscallError { call: "bpf_map_update_elem", io_error }));
        MapError::Update { map: "ROUTES_V4", key: "10.0.0.0/8".into(), what: "writing route 10.0.0.0/8".into(), error }
    }

    #[test]
    fn the_kernels_full_map_is_full_and_its_other_refusals_are_not() {
        assert!(refused(libc::ENOSPC).is_full() && refused(libc::E2BIG).is_full());
        assert!(!refused(libc::ENOMEM).is_full() && refused(libc::ENOMEM).is_transient());
        assert!(!refused(libc::EINVAL).is_transient());
        assert_eq!((refused(libc::EPERM).errno(), refused(libc::EPERM).map()), (Some(libc::EPERM), "ROUTES_V4"));
        let e = refused(libc::EINVAL).within("publishing next hop 3");
        assert_eq!(e.to_string(), "publishing next hop 3: writing route 10.0.0.0/8");
        assert!(std::error::Error::source(&e).is_some(), "the kernel's error is the source");
        assert!(MapError::Full { map: "ROUTES_V6", capacity: 4 }.is_transient());
    }
}

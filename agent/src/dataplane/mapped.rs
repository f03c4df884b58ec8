//! Array maps mapped into the agent (`BPF_F_MMAPABLE`): the DIR-24 index
//! and the next-hop and group indexes are written with plain (atomic)
//! stores, no syscall each.

use crate::dataplane::map_error::{access, MapError};
use aya::{
    maps::{Map, MapData},
    Ebpf,
};
use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    path::Path,
};

/// An array map mapped into this process (`BPF_F_MMAPABLE`): its elements
/// are plain memory, written without a syscall each.
pub(crate) struct MappedArray<T> {
    base: *mut T,
    pub(crate) len: usize,
    _map: MapData,
}

// SAFETY: the mapping lives as long as the struct and is written only
// through `&mut self` or atomics.
unsafe impl<T> Send for MappedArray<T> {}

impl<T> MappedArray<T> {
    /// Maps `name`'s `len` elements of `T`, writable.
    pub(crate) fn take(ebpf: &mut Ebpf, name: &'static str, len: usize) -> Result<MappedArray<T>, MapError> {
        let map = match ebpf.take_map(name) {
            Some(Map::Array(data)) => data,
            _ => return Err(MapError::Missing { map: name.into(), detail: " or not an array" }),
        };
        Self::map(map, name, len, libc::PROT_READ | libc::PROT_WRITE)
    }

    /// Maps a pinned map's `len` elements of `T`, read-only.
    pub(crate) fn open_pinned(dir: &Path, name: &'static str, len: usize) -> Result<MappedArray<T>, MapError> {
        let path = dir.join(name);
        let map = access(MapData::from_pin(&path), name, || format!("opening pinned map {}", path.display()))?;
        Self::map(map, name, len, libc::PROT_READ)
    }

    /// Maps `len` elements of `T` (the map's value size must be a multiple
    /// of 8 and of `T`'s size: the kernel pads elements to 8).
    pub(crate) fn map(map: MapData, name: &'static str, len: usize, prot: libc::c_int) -> Result<MappedArray<T>, MapError> {
        let bytes = len * std::mem::size_of::<T>();
        let info = access(map.info(), name, || format!("reading {name}'s definition"))?;
        let have = info.value_size() as usize * info.max_entries() as usize;
        if have != bytes || info.value_size() % 8 != 0 {
            let detail =
                format!("{name} holds {have} bytes ({} B values), this agent maps {bytes}: a map of another layout", info.value_size());
            return Err(MapError::Layout { path: name.into(), detail });
        }
        // SAFETY: a shared mapping of the map's own pages, of its size.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), bytes, prot, libc::MAP_SHARED, map.fd().as_fd().as_raw_fd(), 0) };
        if p == libc::MAP_FAILED {
            let error = std::io::Error::last_os_error();
            return Err(MapError::Os { map: name, what: format!("mapping {name} (BPF_F_MMAPABLE)"), error });
        }
        Ok(MappedArray { base: p as *mut T, len, _map: map })
    }

    pub(crate) fn at(&self, i: usize) -> *mut T {
        assert!(i < self.len, "index {i} beyond a mapped array of {}", self.len);
        // SAFETY: in bounds of the live mapping.
        unsafe { self.base.add(i) }
    }
}

impl<T> Drop for MappedArray<T> {
    fn drop(&mut self) {
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.len * std::mem::size_of::<T>()) };
    }
}

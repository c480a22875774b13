//! Report snapshots (filled in below).
